//! Thin helpers over rtnetlink: our route protocol, lookups by name, and running netlink work
//! inside another network namespace (a pod's).

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

/// Our route protocol number: every route Gingham installs carries it, and Gingham removes only
/// routes that do (name it with `echo "80 gingham" > /etc/iproute2/rt_protos.d/gingham.conf`).
pub const RTPROT_GINGHAM: u8 = 80;

pub type NlResult<T> = Result<T, rtnetlink::Error>;

/// A fresh netlink connection in the current thread's namespace, driven on the current runtime.
pub fn connect() -> std::io::Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

pub async fn link_by_name(handle: &Handle, name: &str) -> NlResult<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        // The kernel answers a lookup of a missing name with ENODEV.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn link_mac(link: &LinkMessage) -> Option<Vec<u8>> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.clone()),
        _ => None,
    })
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Whether an rtnetlink error is "it already exists" / "it is already gone".
pub fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// Runs `f` with a netlink handle inside the namespace at `path`, on a thread of its own (a
/// namespace belongs to a thread; the agent's runtime threads must stay in the node's).
pub async fn in_netns<T, F, Fut>(path: &Path, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let file = File::open(path).map_err(|e| anyhow::anyhow!("open network namespace {}: {e}", path.display()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            // SAFETY: setns on this thread only; the fd is valid for the call.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                anyhow::bail!("setns: {}", std::io::Error::last_os_error());
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let handle = connect()?;
                f(handle).await
            })
        })();
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| anyhow::anyhow!("namespace worker thread died"))?
}

pub fn write_sysctl(path: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(Path::new("/proc/sys").join(path), value)
}

pub fn host_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// The interface's index by name without netlink (an ioctl, no RTNL lock); `None` if absent.
pub fn index_of(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}
