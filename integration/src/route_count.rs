//! Counts the routes of one protocol through one IPv4 gateway in the calling thread's
//! namespace, straight from a netlink dump: a tenth of the time of decoding each route (the
//! failover benchmark polls it, so its cost is the benchmark's resolution).

use std::net::Ipv4Addr;

use anyhow::Result;

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
/// `struct rtmsg` after the 16-octet netlink header; the protocol is its sixth octet.
const RTMSG: usize = 12;
const HEADER: usize = 16;

/// Our own socket, closed on drop.
struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: a descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

/// Routes of `protocol` in the main and other tables that have `gateway` among their next hops.
pub fn routes_via(protocol: u8, gateway: Ipv4Addr) -> Result<usize> {
    // SAFETY: plain socket calls on a descriptor this function owns.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    anyhow::ensure!(fd >= 0, "netlink socket: {}", std::io::Error::last_os_error());
    let socket = Socket(fd);
    let mut request = Vec::with_capacity(HEADER + RTMSG);
    request.extend_from_slice(&((HEADER + RTMSG) as u32).to_ne_bytes());
    request.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    request.extend_from_slice(&(0x1u16 | 0x300).to_ne_bytes()); // NLM_F_REQUEST | NLM_F_DUMP
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.push(libc::AF_INET as u8);
    request.resize(HEADER + RTMSG, 0);
    // SAFETY: the buffer outlives the call.
    let sent = unsafe { libc::send(socket.0, request.as_ptr().cast(), request.len(), 0) };
    anyhow::ensure!(sent == request.len() as isize, "netlink send: {}", std::io::Error::last_os_error());
    let want = gateway.octets();
    let mut count = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::recv(socket.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        anyhow::ensure!(n >= 0, "netlink recv: {}", std::io::Error::last_os_error());
        let mut at = 0;
        let data = &buf[..n as usize];
        while at + HEADER <= data.len() {
            let len = u32::from_ne_bytes(data[at..at + 4].try_into()?) as usize;
            let kind = u16::from_ne_bytes(data[at + 4..at + 6].try_into()?);
            if len < HEADER || at + len > data.len() {
                break;
            }
            match kind {
                NLMSG_DONE => return Ok(count),
                NLMSG_ERROR => anyhow::bail!("the route dump failed"),
                RTM_NEWROUTE
                    if len >= HEADER + RTMSG
                        && data[at + HEADER + 5] == protocol
                        && has_gateway(&data[at + HEADER + RTMSG..at + len], &want) =>
                {
                    count += 1;
                }
                _ => {}
            }
            at += len.next_multiple_of(4);
        }
    }
}

/// Whether route attributes name `gateway`, alone or in a multipath list.
fn has_gateway(attrs: &[u8], gateway: &[u8; 4]) -> bool {
    let mut at = 0;
    while at + 4 <= attrs.len() {
        let len = usize::from(u16::from_ne_bytes([attrs[at], attrs[at + 1]]));
        let kind = u16::from_ne_bytes([attrs[at + 2], attrs[at + 3]]);
        if len < 4 || at + len > attrs.len() {
            return false;
        }
        let value = &attrs[at + 4..at + len];
        match kind {
            RTA_GATEWAY if value == gateway => return true,
            RTA_MULTIPATH => {
                // struct rtnexthop (8 octets: len, flags, hops, ifindex), then its attributes.
                let mut hop = 0;
                while hop + 8 <= value.len() {
                    let hop_len = usize::from(u16::from_ne_bytes([value[hop], value[hop + 1]]));
                    if hop_len < 8 || hop + hop_len > value.len() {
                        break;
                    }
                    if has_gateway(&value[hop + 8..hop + hop_len], gateway) {
                        return true;
                    }
                    hop += hop_len.next_multiple_of(4);
                }
            }
            _ => {}
        }
        at += len.next_multiple_of(4);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn gateways_are_found_alone_and_in_multipath_lists() {
        let gw = [198, 18, 0, 13];
        assert!(has_gateway(&attr(RTA_GATEWAY, &gw), &gw));
        assert!(!has_gateway(&attr(RTA_GATEWAY, &[198, 18, 0, 12]), &gw));
        let hop = |g: [u8; 4]| {
            let inner = attr(RTA_GATEWAY, &g);
            let mut h = ((8 + inner.len()) as u16).to_ne_bytes().to_vec();
            h.extend_from_slice(&[0, 0, 3, 0, 0, 0]);
            h.extend_from_slice(&inner);
            h
        };
        let both = [hop([198, 18, 0, 12]), hop(gw)].concat();
        assert!(has_gateway(&attr(RTA_MULTIPATH, &both), &gw));
        assert!(!has_gateway(&attr(RTA_MULTIPATH, &hop([198, 18, 0, 12])), &gw));
        assert!(!has_gateway(&[8, 0, 5, 0, 198], &gw), "truncated");
    }
}
