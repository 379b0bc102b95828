//! AS_PATH and AS4_PATH (RFC 4271 4.3, RFC 5065 confederations, RFC 6793 4-octet ASNs).
//!
//! ```text
//! +--------------+---------------+-------------------------------+
//! | Segment type | Segment count | count x AS (2 or 4 octets)    |
//! +--------------+---------------+-------------------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::open::AS_TRANS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentType {
    Set,
    Sequence,
    ConfedSequence,
    ConfedSet,
}

impl SegmentType {
    fn to_u8(self) -> u8 {
        match self {
            SegmentType::Set => 1,
            SegmentType::Sequence => 2,
            SegmentType::ConfedSequence => 3,
            SegmentType::ConfedSet => 4,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => SegmentType::Set,
            2 => SegmentType::Sequence,
            3 => SegmentType::ConfedSequence,
            4 => SegmentType::ConfedSet,
            _ => return None,
        })
    }
    pub fn is_confed(self) -> bool {
        matches!(self, SegmentType::ConfedSequence | SegmentType::ConfedSet)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Segment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    pub segments: Vec<Segment>,
}

impl AsPath {
    pub fn sequence(asns: impl IntoIterator<Item = u32>) -> AsPath {
        let asns: Vec<u32> = asns.into_iter().collect();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath { segments: vec![Segment { kind: SegmentType::Sequence, asns }] }
    }

    /// Path length for best-path selection: a SET counts one, confederation segments none
    /// (RFC 4271 9.1.2.2, RFC 5065 5.3).
    pub fn length(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                _ => 0,
            })
            .sum()
    }

    /// The neighbouring AS a route came from: the first AS of a leading SEQUENCE.
    pub fn first_asn(&self) -> Option<u32> {
        let first = self.segments.first()?;
        (first.kind == SegmentType::Sequence).then(|| first.asns.first().copied())?
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    fn needs_four_octets(&self) -> bool {
        self.segments.iter().any(|s| s.asns.iter().any(|&a| a > 0xffff))
    }

    pub(crate) fn decode(mut buf: Bytes, four_octet: bool) -> Result<AsPath, &'static str> {
        let width = if four_octet { 4 } else { 2 };
        let mut segments = Vec::new();
        while buf.has_remaining() {
            if buf.remaining() < 2 {
                return Err("truncated AS_PATH segment header");
            }
            let kind = SegmentType::from_u8(buf.get_u8()).ok_or("unknown AS_PATH segment type")?;
            let count = usize::from(buf.get_u8());
            // RFC 7606 section 7.2: a zero-length segment is malformed.
            if count == 0 {
                return Err("AS_PATH segment with no AS numbers");
            }
            if buf.remaining() < count * width {
                return Err("AS_PATH segment overruns the attribute");
            }
            let asns = (0..count).map(|_| if four_octet { buf.get_u32() } else { u32::from(buf.get_u16()) }).collect();
            segments.push(Segment { kind, asns });
        }
        Ok(AsPath { segments })
    }

    /// Encodes with 4-octet or 2-octet ASNs; 2-octet encoding writes AS_TRANS for ASNs that
    /// do not fit (the caller then adds AS4_PATH). Segments longer than 255 are split.
    pub(crate) fn encode(&self, buf: &mut BytesMut, four_octet: bool) {
        for seg in &self.segments {
            for chunk in seg.asns.chunks(255) {
                buf.put_u8(seg.kind.to_u8());
                buf.put_u8(chunk.len() as u8);
                for &asn in chunk {
                    if four_octet {
                        buf.put_u32(asn);
                    } else {
                        buf.put_u16(u16::try_from(asn).unwrap_or(AS_TRANS));
                    }
                }
            }
        }
    }

    /// The AS4_PATH a 2-octet session needs alongside this AS_PATH, if any (RFC 6793 4.2.2:
    /// only when some AS does not fit, and without confederation segments).
    pub(crate) fn as4_path(&self) -> Option<AsPath> {
        if !self.needs_four_octets() {
            return None;
        }
        Some(AsPath { segments: self.segments.iter().filter(|s| !s.kind.is_confed()).cloned().collect() })
    }

    /// RFC 6793 section 4.2.3: rebuild the real path from a 2-octet AS_PATH and an AS4_PATH.
    /// When AS_PATH is shorter than AS4_PATH, AS4_PATH is ignored.
    pub(crate) fn merge_as4(self, as4: AsPath) -> AsPath {
        let (len, len4) = (self.length(), as4.length());
        if len < len4 {
            return self;
        }
        let mut keep = len - len4;
        let mut segments = Vec::new();
        for seg in self.segments {
            if seg.kind.is_confed() {
                segments.push(seg);
                continue;
            }
            if keep == 0 {
                break;
            }
            match seg.kind {
                SegmentType::Set => {
                    keep -= 1;
                    segments.push(seg);
                }
                _ => {
                    let take = keep.min(seg.asns.len());
                    keep -= take;
                    segments.push(Segment { kind: seg.kind, asns: seg.asns[..take].to_vec() });
                }
            }
        }
        segments.extend(as4.segments);
        AsPath { segments }
    }
}

impl std::fmt::Display for AsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for seg in &self.segments {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let list = seg.asns.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
            match seg.kind {
                SegmentType::Sequence => f.write_str(&list)?,
                SegmentType::Set => write!(f, "{{{list}}}")?,
                SegmentType::ConfedSequence => write!(f, "({list})")?,
                SegmentType::ConfedSet => write!(f, "[{list}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_leading_two_octet_ases_and_appends_as4_path() {
        // A 2-octet path "65001 23456 23456" whose AS4_PATH says "4200000001 4200000002".
        let path = AsPath::sequence([65001, 23456, 23456]);
        let as4 = AsPath::sequence([4_200_000_001, 4_200_000_002]);
        let merged = path.merge_as4(as4);
        assert_eq!(merged.to_string(), "65001 4200000001 4200000002");
    }

    #[test]
    fn merge_ignores_an_as4_path_longer_than_the_as_path() {
        let path = AsPath::sequence([23456]);
        let merged = path.clone().merge_as4(AsPath::sequence([1, 2]));
        assert_eq!(merged, path);
    }

    #[test]
    fn length_counts_set_as_one_and_confed_as_none() {
        let p = AsPath {
            segments: vec![
                Segment { kind: SegmentType::ConfedSequence, asns: vec![1, 2] },
                Segment { kind: SegmentType::Sequence, asns: vec![3, 4] },
                Segment { kind: SegmentType::Set, asns: vec![5, 6, 7] },
            ],
        };
        assert_eq!(p.length(), 3);
        assert_eq!(p.first_asn(), None);
    }
}
