//! The status endpoint (`--status-addr`): `/healthz`, `/readyz`, `/metrics`, `/status`. A tiny
//! HTTP/1.1 responder (GET only, one request per connection) is all probes and `ginghamctl`
//! need, without a web framework in the agent.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::agent::Agent;

pub async fn serve(addr: SocketAddr, agent: Arc<Agent>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("status endpoint {addr}: {e}"))?;
    tracing::info!(%addr, "status endpoint listening");
    loop {
        let (mut conn, _) = listener.accept().await?;
        let agent = agent.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            while len < buf.len() {
                match conn.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = route(&agent, path).await;
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

async fn route(agent: &Agent, path: &str) -> (&'static str, &'static str, String) {
    match path {
        "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" => {
            if agent.ready().await {
                ("200 OK", "text/plain", "ready\n".into())
            } else {
                ("503 Service Unavailable", "text/plain", "not ready\n".into())
            }
        }
        "/metrics" => {
            agent.refresh_metrics().await;
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", agent.metrics.encode())
        }
        "/status" => ("200 OK", "application/json", format!("{:#}\n", agent.status().await)),
        _ => ("404 Not Found", "text/plain", "try /healthz, /readyz, /metrics or /status\n".into()),
    }
}

/// Serializes a value by its `Display` form (prefixes and addresses as `ip` prints them).
pub fn display<T: std::fmt::Display, S: serde::Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}
