//! NOTIFICATION (RFC 4271 4.5) and the shutdown communication of RFC 8203 / RFC 9003.
//!
//! ```text
//! +-------+---------+------------------+
//! | Code  | Subcode | Data (variable)  |
//! +-------+---------+------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{DecodeError, ErrorCode};

/// RFC 9003 raised the shutdown communication limit from 128 to 255 octets.
pub const MAX_SHUTDOWN_COMMUNICATION: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Bytes,
}

impl Notification {
    /// A Cease with a human-readable reason (RFC 9003), for Administrative Shutdown or Reset.
    /// The text is cut at a character boundary to fit the one-octet length.
    pub fn cease_with_communication(code: ErrorCode, text: &str) -> Notification {
        let mut end = text.len().min(MAX_SHUTDOWN_COMMUNICATION);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = BytesMut::with_capacity(end + 1);
        data.put_u8(end as u8);
        data.put_slice(&text.as_bytes()[..end]);
        code.notification(data.freeze())
    }

    /// The shutdown communication, when this is an Administrative Shutdown/Reset carrying a
    /// well-formed one. Malformed text is not an error (RFC 9003 section 3: log and ignore).
    pub fn shutdown_communication(&self) -> Option<&str> {
        if self.code != 6 || !(self.subcode == 2 || self.subcode == 4) {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        std::str::from_utf8(text).ok()
    }

    /// The named error, when the pair is one we know.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_pair(self.code, self.subcode)
    }

    pub(crate) fn decode(mut body: Bytes) -> Result<Notification, DecodeError> {
        if body.len() < 2 {
            return Err(DecodeError::new(ErrorCode::BadMessageLength, "NOTIFICATION shorter than 21 octets"));
        }
        let code = body.get_u8();
        let subcode = body.get_u8();
        Ok(Notification { code, subcode, data: body })
    }

    pub(crate) fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u8(self.code);
        buf.put_u8(self.subcode);
        buf.put_slice(&self.data);
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.error_code() {
            Some(c) => write!(f, "{c:?} ({}/{})", self.code, self.subcode)?,
            None => write!(f, "code {}/{}", self.code, self.subcode)?,
        }
        if let Some(text) = self.shutdown_communication() {
            write!(f, ": \"{text}\"")?;
        }
        Ok(())
    }
}

impl ErrorCode {
    /// A NOTIFICATION carrying this code and `data`.
    pub fn notification(self, data: impl Into<Bytes>) -> Notification {
        let (code, subcode) = self.code_subcode();
        Notification { code, subcode, data: data.into() }
    }
}

impl DecodeError {
    /// The NOTIFICATION to send before closing.
    pub fn notification(&self) -> Notification {
        self.code.notification(self.data.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_communication_round_trips_and_truncates_on_char_boundary() {
        let n = Notification::cease_with_communication(ErrorCode::AdministrativeShutdown, "maintenance");
        assert_eq!((n.code, n.subcode), (6, 2));
        assert_eq!(n.shutdown_communication(), Some("maintenance"));

        let long = "é".repeat(200); // 400 octets, 2 per char
        let n = Notification::cease_with_communication(ErrorCode::AdministrativeReset, &long);
        let text = n.shutdown_communication().expect("valid utf-8 after truncation");
        assert_eq!(text.len(), 254);
    }

    #[test]
    fn every_named_code_maps_back() {
        for code in ErrorCode::ALL {
            assert_eq!(code.notification(Bytes::new()).error_code(), Some(*code));
        }
        assert_eq!(ErrorCode::ALL.len(), 36);
        assert_eq!(Notification { code: 6, subcode: 10, data: Bytes::new() }.error_code(), Some(ErrorCode::BfdDown));
        assert_eq!(Notification { code: 6, subcode: 11, data: Bytes::new() }.error_code(), None);
    }
}
