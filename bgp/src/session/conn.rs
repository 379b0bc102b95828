//! One TCP connection: a reader task that frames bytes into messages and a writer task that
//! flushes batches. Both report to the peer task over its event channel; neither decodes,
//! because only the peer task knows the negotiated codec.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::fsm::ConnId;
use crate::wire::{split_frame, DecodeError, Frame};

/// What a connection's tasks report to the peer task.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    Frames(ConnId, Vec<Frame>),
    /// The byte stream cannot be framed; the error names the NOTIFICATION.
    BadHeader(ConnId, DecodeError),
    Closed(ConnId),
    SendStalled(ConnId),
}

/// The peer task's grip on one connection. Dropping it lets the writer flush what is queued,
/// then closes the socket.
pub(crate) struct ConnHandle {
    writer: mpsc::UnboundedSender<Bytes>,
    reader: JoinHandle<()>,
}

impl ConnHandle {
    pub(crate) fn spawn(id: ConnId, stream: TcpStream, events: mpsc::Sender<ConnEvent>, send_hold: Duration) -> ConnHandle {
        let (rd, wr) = stream.into_split();
        // Unbounded on purpose: the peer task must never block on a slow peer (that would
        // stall its timers). A peer that stops reading is cut off by the send hold timer,
        // which bounds what can pile up here.
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(id, rd, events.clone()));
        tokio::spawn(write_loop(id, wr, rx, events, send_hold));
        ConnHandle { writer: tx, reader }
    }

    /// Queues bytes for the writer. A closed writer has already reported why.
    pub(crate) fn send(&self, bytes: Bytes) {
        if self.writer.send(bytes).is_err() {
            tracing::debug!("write queued on a connection whose writer has exited");
        }
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        // Reading stops at once; the writer drains its queue (a final NOTIFICATION) and shuts
        // the socket when it sees the channel close.
        self.reader.abort();
    }
}

/// Read buffer sizes: an idle session (keepalives) touches only the small one; a read that
/// fills most of it switches to the large one for table transfers, and a small read with
/// nothing left over switches back, giving the large buffer up (a reflector with hundreds of
/// sessions would otherwise keep one per session for good). 32 KiB reads take a table at
/// wire speed; larger ones only add to the peak while many sessions send at once.
const SMALL_READ: usize = 8 * 1024;
const LARGE_READ: usize = 32 * 1024;

async fn read_loop(id: ConnId, mut rd: OwnedReadHalf, events: mpsc::Sender<ConnEvent>) {
    let mut chunk = SMALL_READ;
    let mut buf = BytesMut::with_capacity(chunk);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(chunk);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                // The peer task may be gone already; nothing left to tell then.
                let _gone = events.send(ConnEvent::Closed(id)).await;
                return;
            }
            Ok(n) if n >= SMALL_READ / 2 => chunk = LARGE_READ,
            Ok(_) => chunk = SMALL_READ,
        }
        let mut frames = Vec::new();
        loop {
            match split_frame(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    if !frames.is_empty() && events.send(ConnEvent::Frames(id, frames)).await.is_err() {
                        return;
                    }
                    let _gone = events.send(ConnEvent::BadHeader(id, e)).await;
                    return;
                }
            }
        }
        if chunk == SMALL_READ && buf.is_empty() && buf.capacity() > 2 * SMALL_READ {
            buf = BytesMut::with_capacity(SMALL_READ);
        }
        // A bounded channel: when the peer task falls behind, we stop reading and TCP
        // pushes back on the sender.
        if !frames.is_empty() && events.send(ConnEvent::Frames(id, frames)).await.is_err() {
            return;
        }
    }
}

/// The largest write buffer a session keeps between bursts.
const KEPT_BATCH: usize = 16 * 1024;

async fn write_loop(
    id: ConnId,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    events: mpsc::Sender<ConnEvent>,
    send_hold: Duration,
) {
    let mut batch = BytesMut::new();
    while let Some(first) = rx.recv().await {
        batch.extend_from_slice(&first);
        // Coalesce whatever else is queued so thousands of UPDATEs cost a few syscalls.
        while batch.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(send_hold, wr.write_all(&batch)).await {
            // A burst (a table to send) grows the batch to its limit; kept, that would be a
            // quarter megabyte per session for good, on a reflector with hundreds of them.
            Ok(Ok(())) if batch.capacity() > KEPT_BATCH => batch = BytesMut::new(),
            Ok(Ok(())) => batch.clear(),
            Ok(Err(_)) => {
                let _gone = events.send(ConnEvent::Closed(id)).await;
                return;
            }
            Err(_) => {
                let _gone = events.send(ConnEvent::SendStalled(id)).await;
                return;
            }
        }
    }
    // The peer task dropped us: everything queued is written; close our side.
    let _closing = wr.shutdown().await;
}
