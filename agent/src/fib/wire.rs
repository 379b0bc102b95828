//! Netlink framing by hand, for the messages rtnetlink's types do not cover (nexthop objects)
//! and for reading a dump without decoding every route: the messages in a buffer, and the
//! attributes in a message.

/// `struct nlmsghdr`.
pub const HEADER: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_REPLACE: u16 = 0x100;

/// The messages in a buffer read from a netlink socket: type, sequence number, payload. Ends at
/// the first message that does not fit.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = buf.get(at..at + HEADER)?;
        let len = u32_at(header, 0)? as usize;
        if len < HEADER || at + len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([header[4], header[5]]);
        let sequence = u32_at(header, 8)?;
        let payload = &buf[at + HEADER..at + len];
        at += len.next_multiple_of(4);
        Some((kind, sequence, payload))
    })
}

/// The attributes in `buf` (after a message's fixed header): type (without the nested and
/// byte-order flags), value. Ends at the first attribute that does not fit.
pub fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = buf.get(at..at + 4)?;
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & 0x3fff;
        if len < 4 || at + len > buf.len() {
            return None;
        }
        let value = &buf[at + 4..at + len];
        at += len.next_multiple_of(4);
        Some((kind, value))
    })
}

/// Appends a netlink header (its length filled in by [`finish`]); returns where it starts.
pub fn push_header(buf: &mut Vec<u8>, kind: u16, flags: u16, sequence: u32) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&sequence.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    start
}

/// Sets the length of the message that starts at `start` to the end of `buf`.
pub fn finish(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// Adds `flags` to those of the message at the start of `message`.
pub fn add_flags(message: &mut [u8], flags: u16) {
    let had = u16::from_ne_bytes([message[6], message[7]]);
    message[6..8].copy_from_slice(&(had | flags).to_ne_bytes());
}

/// The native-endian `u32` at `at`.
pub fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_stops_at_what_does_not_fit() {
        let mut buf = Vec::new();
        for (kind, seq, payload) in [(24u16, 1u32, &[1u8, 2, 3][..]), (3, 2, &[][..])] {
            buf.extend_from_slice(&((HEADER + payload.len()) as u32).to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(&[0, 0]);
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&[0; 4]);
            buf.extend_from_slice(payload);
            buf.resize(buf.len().next_multiple_of(4), 0);
        }
        let got: Vec<_> = messages(&buf).collect();
        assert_eq!(got, [(24, 1, &[1u8, 2, 3][..]), (3, 2, &[][..])]);
        assert_eq!(messages(&buf[..HEADER + 2]).count(), 0, "a message longer than the buffer");
        let mut header = Vec::new();
        push_header(&mut header, 24, NLM_F_REQUEST | NLM_F_CREATE, 9);
        add_flags(&mut header, NLM_F_ACK);
        assert_eq!(u16::from_ne_bytes([header[6], header[7]]), NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
        assert_eq!(u32_at(&header, 8), Some(9), "the sequence number untouched");

        let attrs = [8u8, 0, 0x81, 0x80, 1, 0, 0, 0, 200, 0, 2, 0];
        assert_eq!(
            attributes(&attrs).collect::<Vec<_>>(),
            [(0x81 & 0x3fff, &[1u8, 0, 0, 0][..])],
            "flags cleared; the second runs past the end"
        );
    }
}
