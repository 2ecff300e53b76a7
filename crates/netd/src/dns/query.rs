//! Answers one DNS request: netd's own names authoritatively, everything else marked for
//! forwarding. Pure: bytes and a records snapshot in, bytes or a decision out.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::records::{NetworkRecords, Records, SEARCH_DOMAIN, TTL};

/// The largest UDP answer netd sends, whatever a client offers (and what it advertises).
pub const MAX_UDP_PAYLOAD: u16 = 4096;

/// How a request arrived, which bounds the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Where a forwarded request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstreams {
    /// The host's resolvers (its resolv.conf).
    Host,
    /// The network's own (`--opt dns-upstream`).
    Network(Arc<[SocketAddr]>),
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Send the request, as it came, to an upstream resolver; its answer goes back to the
    /// client cut to `client_max` bytes.
    Forward {
        upstreams: Upstreams,
        client_max: u16,
    },
    /// Not worth an answer: a response, or too short to carry an id.
    Drop,
}

/// Handles a request from `client` that arrived at `server` (a network's gateway).
pub fn handle(
    packet: &[u8],
    server: Ipv4Addr,
    client: Ipv4Addr,
    records: &Records,
    transport: Transport,
) -> Outcome {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    let request = match Message::from_vec(packet) {
        Ok(message) => message,
        Err(_) => return Outcome::Answer(header_only(packet, ResponseCode::FormErr)),
    };
    let client_max = match transport {
        Transport::Udp => request.max_payload().min(MAX_UDP_PAYLOAD),
        Transport::Tcp => u16::MAX,
    };
    let answer = |rcode, answers, authoritative| {
        Outcome::Answer(respond(&request, rcode, answers, authoritative, client_max))
    };
    if request.op_code != OpCode::Query {
        return answer(ResponseCode::NotImp, Vec::new(), false);
    }
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return answer(ResponseCode::BADVERS, Vec::new(), false);
    }
    let [query] = request.queries.as_slice() else {
        return answer(ResponseCode::FormErr, Vec::new(), false);
    };
    if query.query_class() == DNSClass::IN {
        let name = query.name().to_ascii().to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        let scope = records.scope(server, client);
        match lookup(name, query.query_type(), &scope) {
            Lookup::Found(rdata) => {
                let answers = rdata
                    .into_iter()
                    .map(|r| Record::from_rdata(query.name().clone(), TTL, r))
                    .collect();
                return answer(ResponseCode::NoError, answers, true);
            }
            Lookup::NoSuchName => return answer(ResponseCode::NXDomain, Vec::new(), true),
            Lookup::NotOurs => {}
        }
    }
    match records.network_at(server) {
        None => answer(ResponseCode::Refused, Vec::new(), false),
        // Internal networks keep their queries to themselves.
        Some(network) if network.internal => answer(ResponseCode::ServFail, Vec::new(), false),
        Some(network) => Outcome::Forward {
            upstreams: match &network.upstreams {
                Some(list) => Upstreams::Network(list.clone()),
                None => Upstreams::Host,
            },
            client_max,
        },
    }
}

enum Lookup {
    /// A name of netd's: these records (none: the name exists, without this type).
    Found(Vec<RData>),
    /// Under netd's domain, and not a name it has.
    NoSuchName,
    /// For the upstream resolvers.
    NotOurs,
}

/// Looks a lower-case name without its trailing dot up in the networks a client may see.
fn lookup(name: &str, kind: RecordType, scope: &[&NetworkRecords]) -> Lookup {
    let (bare, ours) = match name.strip_suffix(SEARCH_DOMAIN) {
        Some("") => return Lookup::Found(Vec::new()),
        Some(rest) if rest.ends_with('.') => (&rest[..rest.len() - 1], true),
        _ => (name, false),
    };
    if kind == RecordType::PTR {
        if let Some(ip) = reverse_address(name) {
            return match scope.iter().find_map(|n| n.name_of(ip)) {
                Some(fqdn) => Lookup::Found(vec![RData::PTR(PTR(fqdn.clone()))]),
                None => Lookup::NotOurs,
            };
        }
    }
    match scope.iter().find_map(|n| n.addresses(bare)) {
        Some(addresses) => Lookup::Found(match kind {
            RecordType::A | RecordType::ANY => {
                addresses.iter().map(|ip| RData::A(A(*ip))).collect()
            }
            _ => Vec::new(),
        }),
        None if ours => Lookup::NoSuchName,
        None => Lookup::NotOurs,
    }
}

/// `4.3.2.1.in-addr.arpa` -> 1.2.3.4.
fn reverse_address(name: &str) -> Option<Ipv4Addr> {
    let digits = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = digits.split('.');
    for octet in octets.iter_mut().rev() {
        *octet = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

fn respond(
    request: &Message,
    rcode: ResponseCode,
    answers: Vec<Record>,
    authoritative: bool,
    client_max: u16,
) -> Vec<u8> {
    let mut response = Message::new(request.id, MessageType::Response, request.op_code);
    response.metadata.authoritative = authoritative;
    response.metadata.recursion_desired = request.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.checking_disabled = request.checking_disabled;
    response.metadata.response_code = rcode;
    response.queries = request.queries.clone();
    response.answers = answers;
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        response.edns = Some(edns);
    }
    encode_within(&response, client_max)
}

/// Encodes a message; one that does not fit goes as its header and question with TC set,
/// telling the client to ask again over TCP.
fn encode_within(message: &Message, max: u16) -> Vec<u8> {
    match message.to_vec() {
        Ok(bytes) if bytes.len() <= usize::from(max) => bytes,
        Ok(_) => message
            .truncate()
            .to_vec()
            .unwrap_or_else(|_| error_for(message.id, ResponseCode::ServFail)),
        Err(_) => error_for(message.id, ResponseCode::ServFail),
    }
}

/// Cuts an upstream's answer to what the client accepts (see `encode_within`).
pub fn fit_answer(answer: Vec<u8>, client_max: u16) -> Vec<u8> {
    if answer.len() <= usize::from(client_max) {
        return answer;
    }
    match Message::from_vec(&answer) {
        Ok(message) => encode_within(&message, client_max),
        Err(_) => header_only(&answer, ResponseCode::ServFail),
    }
}

/// SERVFAIL for a request no upstream answered.
pub fn server_failure(request: &[u8], client_max: u16) -> Vec<u8> {
    match Message::from_vec(request) {
        Ok(message) => respond(
            &message,
            ResponseCode::ServFail,
            Vec::new(),
            false,
            client_max,
        ),
        Err(_) => header_only(request, ResponseCode::ServFail),
    }
}

/// An answer with no question, for requests that cannot be parsed.
fn header_only(packet: &[u8], rcode: ResponseCode) -> Vec<u8> {
    match packet {
        [high, low, ..] => error_for(u16::from_be_bytes([*high, *low]), rcode),
        _ => Vec::new(),
    }
}

fn error_for(id: u16, rcode: ResponseCode) -> Vec<u8> {
    let mut message = Message::error_msg(id, OpCode::Query, rcode);
    message.metadata.recursion_available = true;
    // Encoding a bare header cannot fail; an empty answer is dropped by the caller.
    message.to_vec().unwrap_or_default()
}

/// The offset where the question section ends, to match an upstream's answer to the
/// request: `None` if the request has no well-formed single question.
pub fn question_end(packet: &[u8]) -> Option<usize> {
    if packet.len() < 12 || u16::from_be_bytes([packet[4], packet[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        at += 1 + len;
    }
    let end = at + 4;
    (end <= packet.len()).then_some(end)
}
