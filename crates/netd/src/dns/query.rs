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

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use proptest::prelude::*;

    use super::*;
    use crate::dns::testing::{check, network, records, sandbox, CLIENT, SERVER_A, SERVER_B};
    use crate::state::State;

    fn request(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.queries
            .push(Query::query(Name::from_ascii(name).expect("name"), kind));
        m.to_vec().expect("encode")
    }

    fn answer_of(outcome: Outcome) -> Message {
        match outcome {
            Outcome::Answer(bytes) => Message::from_vec(&bytes).expect("parses"),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    /// The parsed answer to a question.
    fn ask(
        r: &Records,
        name: &str,
        kind: RecordType,
        (server, client): (Ipv4Addr, Ipv4Addr),
        transport: Transport,
    ) -> Message {
        answer_of(handle(&request(name, kind), server, client, r, transport))
    }

    fn a_records(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn names_are_scoped_to_the_asking_sandbox() {
        let r = records();
        let outcome = |name: &str, server| {
            handle(
                &request(name, RecordType::A),
                server,
                CLIENT,
                &r,
                Transport::Udp,
            )
        };
        let m = answer_of(outcome("web", SERVER_A));
        assert!(m.metadata.authoritative);
        assert_eq!(m.id, 0x4242);
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 1, 0, 3)]);
        let m = answer_of(outcome("WWW.netd.internal.", SERVER_A));
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 1, 0, 3)]);
        let m = answer_of(outcome("222222222222", SERVER_A));
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 1, 0, 3)]);
        // db is on b only: not the client's.
        let m = answer_of(outcome("db.netd.internal", SERVER_A));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = answer_of(outcome("db.netd.internal", SERVER_B));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // Unknown bare names go upstream.
        assert_eq!(
            outcome("db", SERVER_A),
            Outcome::Forward {
                upstreams: Upstreams::Host,
                client_max: 512
            }
        );
        // An unknown client asking b sees b only.
        let m = ask(
            &r,
            "db",
            RecordType::A,
            (SERVER_B, Ipv4Addr::new(192, 0, 2, 1)),
            Transport::Udp,
        );
        assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 2, 0, 4)]);
    }

    #[test]
    fn ptr_nodata_and_internal_networks() {
        let r = records();
        let m = ask(
            &r,
            "3.0.1.10.in-addr.arpa",
            RecordType::PTR,
            (SERVER_A, CLIENT),
            Transport::Udp,
        );
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            m.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("web.netd.internal.").expect("name")))
        );
        let m = ask(
            &r,
            "web",
            RecordType::AAAA,
            (SERVER_A, CLIENT),
            Transport::Udp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty() && m.metadata.authoritative);
        let lonely = Ipv4Addr::new(10, 3, 0, 2);
        let server_c = Ipv4Addr::new(10, 3, 0, 1);
        let m = ask(
            &r,
            "example.com",
            RecordType::A,
            (server_c, lonely),
            Transport::Udp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn big_answers_are_truncated_to_what_the_client_takes() {
        let mut state = State::default();
        let n = network("a", "10.1.0.0/16", false);
        state.networks.insert(n.id.clone(), n);
        for i in 0..100u32 {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 1, 0)) + i).to_string();
            let s = sandbox(
                &format!("{:02}", i % 100),
                &format!("s{i}"),
                &[("a", &ip, &["db"])],
            );
            state.sandboxes.insert(s.id.clone(), s);
        }
        let r = Records::from_state(&state);
        let udp = ask(&r, "db", RecordType::A, (SERVER_A, CLIENT), Transport::Udp);
        assert!(udp.metadata.truncation && udp.answers.is_empty());
        let tcp = ask(&r, "db", RecordType::A, (SERVER_A, CLIENT), Transport::Tcp);
        assert_eq!(tcp.answers.len(), 100);
        assert!(!tcp.metadata.truncation);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn fuzz_random_bytes(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
            check(&packet, &records());
        }

        #[test]
        fn fuzz_mutated_requests(
            name in prop::sample::select(vec![
                "web", "www.netd.internal", "db", "3.0.1.10.in-addr.arpa", "netd.internal",
                "example.com", "a.b.c.d.e.f.g",
            ]),
            kind in prop::sample::select(vec![
                RecordType::A, RecordType::AAAA, RecordType::PTR, RecordType::ANY,
                RecordType::MX, RecordType::TXT, RecordType::Unknown(65000),
            ]),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in any::<usize>(),
            extra in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut packet = request(name, kind);
            let len = packet.len();
            for (at, byte) in flips {
                packet[at % len] = byte;
            }
            if cut % 3 == 0 {
                packet.truncate(cut % (len + 1));
            }
            packet.extend_from_slice(&extra);
            check(&packet, &records());
        }
    }
}
