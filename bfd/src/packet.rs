//! BFD control packets (RFC 5880 section 4.1), mandatory section only:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! ```
//!
//! [`ControlPacket::decode`] applies the checks of section 6.8.6 that need no session (version,
//! lengths, detect multiplier, multipoint, discriminators); the session applies the rest.
//! Authentication (the A bit) is not supported: such packets are refused, as the RFC requires
//! of a session without authentication.

use bytes::{Buf, BufMut, BytesMut};
use thiserror::Error;

pub const VERSION: u8 = 1;
/// The mandatory section; a packet without authentication is exactly this long.
pub const LEN: usize = 24;

/// Session states as they appear on the wire (section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

/// Why the session last left Up (section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// A value RFC 5880 does not define (kept, never sent by us).
    Other(u8),
}

/// RFC 5880 4.1's names, as FRR and BIRD print them.
impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Diagnostic::None => "no diagnostic",
            Diagnostic::ControlDetectionTimeExpired => "control detection time expired",
            Diagnostic::EchoFunctionFailed => "echo function failed",
            Diagnostic::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diagnostic::ForwardingPlaneReset => "forwarding plane reset",
            Diagnostic::PathDown => "path down",
            Diagnostic::ConcatenatedPathDown => "concatenated path down",
            Diagnostic::AdministrativelyDown => "administratively down",
            Diagnostic::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diagnostic::Other(c) => return write!(f, "diagnostic {c}"),
        };
        f.write_str(name)
    }
}

impl Diagnostic {
    pub fn code(self) -> u8 {
        match self {
            Diagnostic::None => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledSessionDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Other(c) => c,
        }
    }

    pub fn from_code(c: u8) -> Diagnostic {
        match c {
            0 => Diagnostic::None,
            1 => Diagnostic::ControlDetectionTimeExpired,
            2 => Diagnostic::EchoFunctionFailed,
            3 => Diagnostic::NeighborSignaledSessionDown,
            4 => Diagnostic::ForwardingPlaneReset,
            5 => Diagnostic::PathDown,
            6 => Diagnostic::ConcatenatedPathDown,
            7 => Diagnostic::AdministrativelyDown,
            8 => Diagnostic::ReverseConcatenatedPathDown,
            c => Diagnostic::Other(c),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ControlPacket {
    pub diag: Diagnostic,
    pub state: State,
    pub poll: bool,
    pub fin: bool,
    /// Control Plane Independent (RFC 5882 4.3.1): our forwarding does not share fate with
    /// the control plane, which lets graceful restart keep routes across an agent restart.
    pub cpi: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    /// Microseconds, as on the wire.
    pub desired_min_tx: u32,
    pub required_min_rx: u32,
    pub required_min_echo_rx: u32,
}

#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("shorter than 24 octets")]
    Short,
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("length field {field} does not fit the {received} octets received")]
    Length { field: u8, received: usize },
    #[error("authentication is not supported")]
    Authentication,
    #[error("detect multiplier 0")]
    DetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator 0")]
    MyDiscriminator,
    #[error("your discriminator 0 in state {0:?}")]
    YourDiscriminator(State),
}

impl ControlPacket {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(VERSION << 5 | (self.diag.code() & 0x1f));
        let flags = (self.state as u8) << 6
            | u8::from(self.poll) << 5
            | u8::from(self.fin) << 4
            | u8::from(self.cpi) << 3
            | u8::from(self.demand) << 1;
        out.put_u8(flags);
        out.put_u8(self.detect_mult);
        out.put_u8(LEN as u8);
        out.put_u32(self.my_disc);
        out.put_u32(self.your_disc);
        out.put_u32(self.desired_min_tx);
        out.put_u32(self.required_min_rx);
        out.put_u32(self.required_min_echo_rx);
    }

    /// Decodes one packet (a whole UDP payload) with the session-independent checks of 6.8.6.
    pub fn decode(mut buf: &[u8]) -> Result<ControlPacket, PacketError> {
        let received = buf.len();
        if received < LEN {
            return Err(PacketError::Short);
        }
        let first = buf.get_u8();
        if first >> 5 != VERSION {
            return Err(PacketError::Version(first >> 5));
        }
        let flags = buf.get_u8();
        let detect_mult = buf.get_u8();
        let length = buf.get_u8();
        if usize::from(length) < LEN || usize::from(length) > received {
            return Err(PacketError::Length { field: length, received });
        }
        if flags & 0x04 != 0 {
            return Err(PacketError::Authentication);
        }
        if detect_mult == 0 {
            return Err(PacketError::DetectMult);
        }
        if flags & 0x01 != 0 {
            return Err(PacketError::Multipoint);
        }
        let p = ControlPacket {
            diag: Diagnostic::from_code(first & 0x1f),
            state: State::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            fin: flags & 0x10 != 0,
            cpi: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult,
            my_disc: buf.get_u32(),
            your_disc: buf.get_u32(),
            desired_min_tx: buf.get_u32(),
            required_min_rx: buf.get_u32(),
            required_min_echo_rx: buf.get_u32(),
        };
        if p.my_disc == 0 {
            return Err(PacketError::MyDiscriminator);
        }
        if p.your_disc == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(PacketError::YourDiscriminator(p.state));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built by hand from section 4.1's layout: diag 0, Up, C bit, mult 3, discriminators 1 and
    /// 2, 300 ms both ways, no echo (what FRR's bfdd sends with its defaults).
    const FRR_UP: [u8; 24] = [0x20, 0xc8, 0x03, 0x18, 0, 0, 0, 1, 0, 0, 0, 2, 0x00, 0x04, 0x93, 0xe0, 0x00, 0x04, 0x93, 0xe0, 0, 0, 0, 0];

    #[test]
    fn decodes_and_reencodes_a_packet_byte_for_byte() {
        let p = ControlPacket::decode(&FRR_UP).unwrap();
        assert_eq!((p.state, p.cpi, p.detect_mult, p.my_disc, p.your_disc), (State::Up, true, 3, 1, 2));
        assert_eq!((p.desired_min_tx, p.required_min_rx), (300_000, 300_000));
        let mut out = BytesMut::new();
        p.encode(&mut out);
        assert_eq!(&out[..], &FRR_UP[..]);
    }

    #[test]
    fn each_session_independent_check_refuses_its_packet() {
        let with = |i: usize, v: u8| {
            let mut b = FRR_UP;
            b[i] = v;
            ControlPacket::decode(&b)
        };
        assert_eq!(ControlPacket::decode(&FRR_UP[..23]), Err(PacketError::Short));
        assert_eq!(with(0, 0x40), Err(PacketError::Version(2)));
        assert_eq!(with(3, 23), Err(PacketError::Length { field: 23, received: 24 }));
        assert_eq!(with(3, 25), Err(PacketError::Length { field: 25, received: 24 }));
        assert_eq!(with(1, 0xcc), Err(PacketError::Authentication));
        assert_eq!(with(2, 0), Err(PacketError::DetectMult));
        assert_eq!(with(1, 0xc9), Err(PacketError::Multipoint));
        assert_eq!(with(7, 0), Err(PacketError::MyDiscriminator));
        assert_eq!(with(11, 0), Err(PacketError::YourDiscriminator(State::Up)));
        // Down with your discriminator 0 is how every session starts.
        let mut down = FRR_UP;
        down[1] = 0x40;
        down[11] = 0;
        assert_eq!(ControlPacket::decode(&down).unwrap().state, State::Down);
    }
}
