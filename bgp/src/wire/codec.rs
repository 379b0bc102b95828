//! What the session negotiated that changes how bytes are read and written.

/// Decode/encode context, built from the *negotiated* capabilities of a session, never from
/// one side's OPEN alone. Before the OPEN exchange the default (2-octet ASNs, iBGP) applies,
/// which is also all an OPEN needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCodec {
    /// Both sides sent the 4-octet AS capability (RFC 6793).
    pub four_octet_as: bool,
    /// The peer is in another AS: LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST are discarded
    /// (RFC 7606 7.5, 7.9, 7.10).
    pub ebgp: bool,
}

impl SessionCodec {
    pub fn new(four_octet_as: bool, ebgp: bool) -> SessionCodec {
        SessionCodec { four_octet_as, ebgp }
    }
}
