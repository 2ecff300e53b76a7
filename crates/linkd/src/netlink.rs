//! A small synchronous rtnetlink client over `netlink-sys`, with messages built by
//! `netlink-packet-route`.
//!
//! Synchronous on purpose: a netlink socket is bound to the network namespace it was
//! opened in, and namespace switches are per thread, so callers open one socket per
//! namespace on a thread they own and talk to the kernel without an async runtime. The
//! same code serves the daemon (on its engine thread) and the short-lived CNI plugins.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{LinkdError, Result};

const RECV_BUF: usize = 64 * 1024;
/// Requests per `send`: the kernel queues one acknowledgement per request on the socket
/// before it is read, and more than a few hundred overflow its receive buffer (ENOBUFS),
/// losing acknowledgements (a cluster network's overlay with a thousand peers is three
/// thousand requests).
const MAX_PER_SEND: usize = 128;
/// How long an answer may take before the operation fails instead of waiting for ever.
const RECV_TIMEOUT: libc::timeval = libc::timeval {
    tv_sec: 30,
    tv_usec: 0,
};

/// An rtnetlink socket in one network namespace.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    recv: Vec<u8>,
    send: Vec<u8>,
}

/// One request of a batch, with a description used in error messages.
#[derive(Debug)]
pub struct Request {
    pub what: String,
    pub message: RouteNetlinkMessage,
    pub flags: u16,
}

impl Request {
    pub fn new(what: impl Into<String>, message: RouteNetlinkMessage, flags: u16) -> Self {
        Request {
            what: what.into(),
            message,
            flags,
        }
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(LinkdError::Socket)?;
        socket.bind_auto().map_err(LinkdError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(LinkdError::Socket)?;
        // Both are optimisations (filtered dumps, error strings); old kernels lack them.
        let _ = socket.set_netlink_get_strict_chk(true);
        let _ = socket.set_ext_ack(true);
        {
            use std::os::fd::AsRawFd;
            // SAFETY: setsockopt on a socket we own, with a pointer to a timeval that
            // lives through the call and its size.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::from_ref(&RECV_TIMEOUT).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(LinkdError::Socket(io::Error::last_os_error()));
            }
        }
        Ok(Netlink {
            socket,
            seq: 0,
            recv: Vec::with_capacity(RECV_BUF),
            send: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    pub fn execute(&mut self, what: &str, message: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.batch(vec![Request::new(what, message, flags)])
    }

    /// Sends several requests in one `send` and collects every acknowledgement. The kernel
    /// processes them in order; the first failure is returned (later requests that depend
    /// on it fail too and are not reported separately).
    pub fn batch(&mut self, requests: Vec<Request>) -> Result<()> {
        let mut first_error = None;
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let chunk: Vec<Request> = requests.by_ref().take(MAX_PER_SEND).collect();
            // A refused request does not stop later chunks (the kernel goes on after a
            // failed request within one send, too); a socket that fails stops all.
            if let Err(refused) = self.send_batch(chunk)? {
                first_error.get_or_insert(refused);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// One `send` of at most [`MAX_PER_SEND`] requests, and their acknowledgements: the
    /// socket's failure outside, the first refused request inside.
    fn send_batch(&mut self, requests: Vec<Request>) -> Result<Result<()>> {
        if requests.is_empty() {
            return Ok(Ok(()));
        }
        self.send.clear();
        let first_seq = self.seq.wrapping_add(1);
        let mut whats = Vec::with_capacity(requests.len());
        for request in requests {
            self.seq = self.seq.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | request.flags;
            header.sequence_number = self.seq;
            let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(request.message));
            msg.finalize();
            let start = self.send.len();
            self.send.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut self.send[start..]);
            whats.push(request.what);
        }
        self.socket
            .send(&self.send, 0)
            .map_err(|e| kernel_error("netlink send", e))?;

        let mut pending = whats.len();
        let mut first_error: Option<LinkdError> = None;
        while pending > 0 {
            self.receive()?;
            let mut offset = 0;
            while offset < self.recv.len() {
                let (len, seq, payload) = parse_one(&self.recv[offset..])?;
                offset += len;
                let index = seq.wrapping_sub(first_seq) as usize;
                if index >= whats.len() {
                    continue; // a stale answer to an earlier, abandoned request
                }
                if let NetlinkPayload::Error(err) = payload {
                    pending -= 1;
                    if let Some(code) = err.code {
                        if first_error.is_none() {
                            let errno = -code.get();
                            first_error = Some(kernel_error(
                                &whats[index],
                                io::Error::from_raw_os_error(errno),
                            ));
                        }
                    }
                }
            }
        }
        Ok(match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        })
    }

    /// Runs a dump request and returns every message of the answer.
    pub fn dump(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
        msg.finalize();
        self.send.clear();
        self.send.resize(msg.buffer_len(), 0);
        msg.serialize(&mut self.send);
        self.socket
            .send(&self.send, 0)
            .map_err(|e| kernel_error(what, e))?;

        let mut out = Vec::new();
        loop {
            self.receive()?;
            let mut offset = 0;
            while offset < self.recv.len() {
                let (len, got_seq, payload) = parse_one(&self.recv[offset..])?;
                offset += len;
                if got_seq != seq {
                    continue;
                }
                match payload {
                    // A dump the kernel refused ends with its error in the DONE message.
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Err(kernel_error(
                            what,
                            io::Error::from_raw_os_error(done.code.abs()),
                        ));
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(err) => {
                        if let Some(code) = err.code {
                            return Err(kernel_error(
                                what,
                                io::Error::from_raw_os_error(-code.get()),
                            ));
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// Sends a GET (not a dump) and returns the answer messages; the kernel's
    /// acknowledgement ends the answer.
    pub fn request_answers(
        &mut self,
        what: &str,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
        msg.finalize();
        self.send.clear();
        self.send.resize(msg.buffer_len(), 0);
        msg.serialize(&mut self.send);
        self.socket
            .send(&self.send, 0)
            .map_err(|e| kernel_error(what, e))?;
        let mut out = Vec::new();
        loop {
            self.receive()?;
            let mut offset = 0;
            while offset < self.recv.len() {
                let (len, got_seq, payload) = parse_one(&self.recv[offset..])?;
                offset += len;
                if got_seq != seq {
                    continue;
                }
                match payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            Some(code) => Err(kernel_error(
                                what,
                                io::Error::from_raw_os_error(-code.get()),
                            )),
                            None => Ok(out),
                        };
                    }
                    // A dump the kernel refused ends with its error in the DONE message.
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Err(kernel_error(
                            what,
                            io::Error::from_raw_os_error(done.code.abs()),
                        ));
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
        }
    }

    fn receive(&mut self) -> Result<()> {
        self.recv.clear();
        if self.recv.capacity() < RECV_BUF {
            self.recv.reserve(RECV_BUF);
        }
        loop {
            match self.socket.recv(&mut self.recv, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(kernel_error("netlink receive", e)),
            }
        }
    }
}

fn parse_one(buf: &[u8]) -> Result<(usize, u32, NetlinkPayload<RouteNetlinkMessage>)> {
    if buf.len() < 16 {
        return Err(LinkdError::Decode("short netlink header".into()));
    }
    let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < 16 || len > buf.len() {
        return Err(LinkdError::Decode(format!(
            "bad netlink message length {len}"
        )));
    }
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len])
        .map_err(LinkdError::DecodeMessage)?;
    let aligned = (len + 3) & !3;
    let seq = msg.header.sequence_number;
    Ok((aligned.min(buf.len()), seq, msg.payload))
}

pub(crate) fn kernel_error(op: &str, source: io::Error) -> LinkdError {
    LinkdError::Kernel {
        op: op.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkAttribute;

    /// The kernel's answer to RTM_GETLINK for index 1 (`lo`), captured in a test namespace.
    const GETLINK_LO: &[u8] = include_bytes!("../tests/fixtures/rtnl-getlink-lo.bin");

    #[test]
    fn a_captured_answer_parses() {
        let (len, seq, payload) = parse_one(GETLINK_LO).expect("parses");
        assert_eq!((len, seq), (GETLINK_LO.len(), 1));
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = payload else {
            panic!("not a link: {payload:?}");
        };
        assert_eq!(link.header.index, 1);
        assert!(link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::IfName(n) if n == "lo")));
    }

    #[test]
    fn short_or_mis_sized_messages_are_errors() {
        assert!(matches!(
            parse_one(&GETLINK_LO[..10]),
            Err(LinkdError::Decode(_))
        ));
        let mut long = GETLINK_LO.to_vec();
        long[0..4].copy_from_slice(&(GETLINK_LO.len() as u32 + 4).to_ne_bytes());
        assert!(matches!(parse_one(&long), Err(LinkdError::Decode(_))));
        let mut tiny = GETLINK_LO.to_vec();
        tiny[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(parse_one(&tiny), Err(LinkdError::Decode(_))));
    }
}
