//! The CNI socket: one request per connection, served concurrently; mode 0600 so only root
//! (the runtime) can ask for pod networking.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use gingham_cni::{code, CniError, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use crate::cni_service::CniService;

pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by a previous agent would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| anyhow::anyhow!("CNI socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, agent: Arc<CniService>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { continue };
        let agent = agent.clone();
        tokio::spawn(async move {
            let mut body = Vec::new();
            if conn.read_to_end(&mut body).await.is_err() {
                return;
            }
            let reply = match serde_json::from_slice::<Request>(&body) {
                Ok(req) => agent.handle(req).await,
                Err(e) => {
                    Reply::Err(CniError::new(code::DECODE_FAILURE, "gingham-agent could not read the plugin's request", e.to_string()))
                }
            };
            let _ = conn.write_all(&serde_json::to_vec(&reply).expect("a reply serialises")).await;
            let _ = conn.shutdown().await;
        });
    }
}
