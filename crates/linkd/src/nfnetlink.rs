//! nfnetlink framing shared by nf_tables and ipset: messages with an `nfgenmsg` header and
//! attributes, built into byte buffers and walked in answers.

pub(crate) const NLM_F_REQUEST: u16 = 1;
pub(crate) const NLM_F_ACK: u16 = 4;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
/// Attribute flags: nested attributes, and payloads in network byte order.
pub(crate) const NLA_F_NESTED: u16 = 1 << 15;
pub(crate) const NLA_F_NET_BYTEORDER: u16 = 1 << 14;

pub(crate) fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + ((4 - len % 4) % 4), 0);
}

pub(crate) fn put_str(buf: &mut Vec<u8>, kind: u16, value: &str) {
    let mut bytes = value.as_bytes().to_vec();
    bytes.push(0);
    put_attr(buf, kind, &bytes);
}

/// One netlink message: header, nfgenmsg, attributes.
pub(crate) fn message(
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
    out
}

/// Walks the netlink messages in a datagram: (type, seq, whole message).
pub(crate) fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset + 16 > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[offset..offset + 4].try_into().ok()?) as usize;
        if len < 16 || offset + len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(buf[offset + 4..offset + 6].try_into().ok()?);
        let seq = u32::from_ne_bytes(buf[offset + 8..offset + 12].try_into().ok()?);
        let msg = &buf[offset..offset + len];
        offset += (len + 3) & !3;
        Some((kind, seq, msg))
    })
}

/// The errno of an NLMSG_ERROR message (0 for an acknowledgement).
pub(crate) fn error_code(msg: &[u8]) -> i32 {
    msg.get(16..20)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .unwrap_or(-libc::EIO)
}
