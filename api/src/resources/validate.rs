//! Field-level checks shared by the kinds. Every error names the field (a JSON path such as
//! `spec.blockSize`) and the reason, so `ginghamctl apply` can point at the line to fix.

use std::str::FromStr;

use ipnetwork::IpNetwork;
use thiserror::Error;

use crate::selector::Selector;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError { field: field.into(), reason: reason.into() }
    }

    /// serde names the offending field only in its message; keep that message whole.
    pub fn from_serde(e: serde_json::Error) -> Self {
        ValidationError::new("(document)", e.to_string())
    }
}

pub type Check = Result<(), ValidationError>;

/// A CIDR whose host bits are zero (`198.19.0.0/16`, not `198.19.1.2/16`).
pub fn cidr(field: &str, text: &str) -> Result<IpNetwork, ValidationError> {
    let net = IpNetwork::from_str(text).map_err(|e| ValidationError::new(field, format!("{text:?} is not a CIDR: {e}")))?;
    if net.network() != net.ip() {
        return Err(ValidationError::new(field, format!("{text:?} has host bits set; did you mean {}/{}?", net.network(), net.prefix())));
    }
    Ok(net)
}

/// An address or a CIDR whose address is the one that counts (`198.18.0.11/24` names the node's
/// address and its subnet, as Calico's node `bgp.ipv4Address` does).
pub fn address_with_prefix(field: &str, text: &str) -> Result<IpNetwork, ValidationError> {
    IpNetwork::from_str(text).map_err(|e| ValidationError::new(field, format!("{text:?} is not an address or address/prefix: {e}")))
}

pub fn as_number(field: &str, asn: u32) -> Check {
    match asn {
        0 => Err(ValidationError::new(field, "AS 0 is reserved (RFC 7607)")),
        23456 => Err(ValidationError::new(field, "AS 23456 is AS_TRANS (RFC 6793), not a usable AS")),
        _ => Ok(()),
    }
}

pub fn selector(field: &str, text: &str) -> Result<Selector, ValidationError> {
    Selector::from_str(text).map_err(|e| ValidationError::new(field, e.to_string()))
}

/// A Kubernetes object name (RFC 1123 subdomain), which every backend can store.
pub fn object_name(field: &str, name: &str) -> Check {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(field, format!("{name:?} is not a valid name (lower-case letters, digits, '-' and '.', at most 253)")))
    }
}

/// A label (`[prefix/]name` = `value`) as the Kubernetes API server accepts it: name and value
/// at most 63 characters of letters, digits, `-`, `_` and `.`, starting and ending with a letter
/// or digit (the value may be empty); the prefix a DNS subdomain.
pub fn label(field: &str, key: &str, value: &str) -> Check {
    fn segment(s: &str) -> bool {
        s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
    }
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        object_name(&format!("{field}[{key:?}]"), p)
            .map_err(|_| ValidationError::new(format!("{field}[{key:?}]"), format!("prefix {p:?} is not a DNS subdomain")))?;
    }
    if name.is_empty() || !segment(name) {
        return Err(ValidationError::new(
            format!("{field}[{key:?}]"),
            "a label name is 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ));
    }
    if !segment(value) {
        return Err(ValidationError::new(
            format!("{field}[{key:?}]"),
            format!("value {value:?}: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
        ));
    }
    Ok(())
}

/// A Go-style duration as Calico writes them: `120s`, `2m`, `1m30s`, `500ms`.
pub fn duration(field: &str, text: &str) -> Result<std::time::Duration, ValidationError> {
    parse_duration(text).ok_or_else(|| ValidationError::new(field, format!("{text:?} is not a duration like 120s, 2m or 1m30s")))
}

pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    // A value too large for a Duration is not a duration (and must not panic: the agent reads
    // these from the datastore, where anything may have been written).
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// A Linux interface name (`dev_valid_name`): 1-15 octets, not `.` or `..`, no `/`, `:`,
/// `%` or whitespace.
pub fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c == '%' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `resource_decode` fuzz target: a BGPPeer's `maxRestartTime` of 10^74 s
    /// panicked in `Duration::from_secs_f64` (in ginghamctl, and in an agent reading it).
    #[test]
    fn durations_too_large_for_a_duration_are_refused_not_panicked_on() {
        let huge = format!("1{}s", "0".repeat(74));
        assert_eq!(parse_duration(&huge), None);
        assert!(duration("spec.maxRestartTime", &huge).unwrap_err().reason.contains("not a duration"));
        assert_eq!(parse_duration("1.5s"), Some(std::time::Duration::from_millis(1500)));
    }

    #[test]
    fn cidrs_with_host_bits_are_refused_with_a_hint() {
        assert!(cidr("spec.cidr", "198.19.0.0/16").is_ok());
        let e = cidr("spec.cidr", "198.19.1.2/16").unwrap_err();
        assert_eq!(e.field, "spec.cidr");
        assert!(e.reason.contains("198.19.0.0/16"), "{e}");
        assert!(cidr("spec.cidr", "nonsense").unwrap_err().reason.contains("not a CIDR"));
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("120s"), Some(std::time::Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Some(std::time::Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(std::time::Duration::from_millis(500)));
        assert_eq!(parse_duration("2x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn names_follow_rfc_1123() {
        assert!(object_name("metadata.name", "node-1.example").is_ok());
        assert!(object_name("metadata.name", "Node_1").is_err());
        assert!(object_name("metadata.name", "-x").is_err());
    }
}
