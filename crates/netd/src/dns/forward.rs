//! Forwarding to upstream resolvers: requests go out as they came, under a fresh random id
//! on one of a few sockets with random ports, and answers are matched by socket, id, source
//! and question. Truncated answers are fetched again over TCP; a silent upstream is left
//! for the next one, and a request none answers gets SERVFAIL within `BUDGET`.
//!
//! The UDP side is owned by the DNS event loop's thread (`udp`), so it needs no lock; only
//! the rare TCP refetch goes to the async runtime.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::query::{self, Upstreams};
use super::records::Records;
use super::upstream::{self, HostResolvers};

/// A request gets its answer or SERVFAIL within this time (clients wait 5 s).
pub const BUDGET: Duration = Duration::from_secs(4);
/// No upstream gets less than this before the next is tried.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);
/// Sockets that upstream requests leave from.
pub const SOCKETS: usize = 4;
/// Requests waiting for an upstream, in all and per client: a client over its share waits
/// (its requests are dropped), the others are served.
const MAX_INFLIGHT: usize = 16_384;
const MAX_PER_CLIENT: u32 = 512;

/// Picks the resolvers for a request, leaving out netd's own listeners.
pub fn upstreams_for(
    upstreams: &Upstreams,
    host: &HostResolvers,
    records: &ArcSwap<Records>,
) -> Arc<[SocketAddr]> {
    match upstreams {
        Upstreams::Network(list) => list.clone(),
        Upstreams::Host => {
            let records = records.load();
            let own = |ip: Ipv4Addr| records.network_at(ip).is_some();
            Arc::from(upstream::without_own(&host.servers(), own))
        }
    }
}

#[derive(Debug)]
struct Pending {
    client: SocketAddr,
    client_id: u16,
    /// The listener the answer goes back through (weak: removing a network closes its
    /// socket at once, whatever is still in flight).
    reply: Weak<UdpSocket>,
    /// The request under netd's id.
    request: Vec<u8>,
    question_end: usize,
    upstreams: Arc<[SocketAddr]>,
    attempt: usize,
    attempt_deadline: Instant,
    deadline: Instant,
    client_max: u16,
    /// When it was first sent, for the forwarding latency.
    started: Instant,
}

impl Pending {
    fn attempt_time(&self) -> Duration {
        let n = u32::try_from(self.upstreams.len())
            .unwrap_or(u32::MAX)
            .max(1);
        (BUDGET / n).max(MIN_ATTEMPT)
    }

    /// Sends an upstream's answer to the client, under the client's id and within its
    /// size.
    fn deliver(&self, mut answer: Vec<u8>) {
        let Some(reply) = self.reply.upgrade() else {
            return;
        };
        answer[..2].copy_from_slice(&self.client_id.to_be_bytes());
        let answer = query::fit_answer(answer, self.client_max);
        if let Err(e) = reply.send_to(&answer, self.client) {
            tracing::debug!("answer to {}: {e}", self.client);
        }
    }

    fn fail(&self) {
        crate::metrics::get().dns.forward_failures.inc();
        let answer = query::server_failure(&self.request, self.client_max);
        if answer.len() >= 12 {
            self.deliver(answer);
        }
    }
}

/// The forwarder's state: upstream sockets and the requests waiting on them.
#[derive(Debug)]
pub struct Forwarder {
    sockets: Vec<UdpSocket>,
    /// Whether the sockets are IPv6 (dual-stack), so IPv4 upstreams need mapping.
    v6: bool,
    entries: HashMap<(usize, u16), Pending>,
    per_client: HashMap<IpAddr, u32>,
    rng: u64,
    runtime: tokio::runtime::Handle,
}

impl Forwarder {
    pub fn new(runtime: tokio::runtime::Handle) -> std::io::Result<Forwarder> {
        let mut sockets = Vec::with_capacity(SOCKETS);
        let mut v6 = true;
        for _ in 0..SOCKETS {
            let socket = match UdpSocket::bind("[::]:0") {
                Ok(socket) => socket,
                Err(_) => {
                    v6 = false;
                    UdpSocket::bind("0.0.0.0:0")?
                }
            };
            socket.set_nonblocking(true)?;
            sockets.push(socket);
        }
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Forwarder {
            sockets,
            v6,
            entries: HashMap::new(),
            per_client: HashMap::new(),
            rng: u64::from_ne_bytes(seed) | 1,
            runtime,
        })
    }

    pub fn sockets(&self) -> &[UdpSocket] {
        &self.sockets
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*, seeded by the kernel: an off-path guesser faces 16 bits of id and
        // the choice of socket (random ports).
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn send_to(&self, index: usize, request: &[u8], to: SocketAddr) {
        let to = match (self.v6, to) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => to,
        };
        // A full socket buffer loses the request; the attempt times out and moves on.
        let _ = self.sockets[index].send_to(request, to);
    }

    fn remove(&mut self, key: (usize, u16)) -> Option<Pending> {
        let pending = self.entries.remove(&key)?;
        let ip = pending.client.ip();
        if let Some(count) = self.per_client.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&ip);
            }
        }
        Some(pending)
    }

    /// Sends a client's request to the first upstream.
    pub fn start(
        &mut self,
        request: &[u8],
        client: SocketAddr,
        reply: &Arc<UdpSocket>,
        upstreams: Arc<[SocketAddr]>,
        client_max: u16,
    ) {
        let pending_for = |request: Vec<u8>, question_end, upstreams| Pending {
            client,
            client_id: u16::from_be_bytes([request[0], request[1]]),
            reply: Arc::downgrade(reply),
            request,
            question_end,
            upstreams,
            attempt: 0,
            attempt_deadline: Instant::now(),
            deadline: Instant::now() + BUDGET,
            client_max,
            started: Instant::now(),
        };
        let (Some(first), Some(question_end)) =
            (upstreams.first().copied(), query::question_end(request))
        else {
            pending_for(request.to_vec(), 0, upstreams).fail();
            return;
        };
        if self.entries.len() >= MAX_INFLIGHT {
            return;
        }
        let count = self.per_client.entry(client.ip()).or_insert(0);
        if *count >= MAX_PER_CLIENT {
            return;
        }
        *count += 1;
        let mut key = None;
        for _ in 0..16 {
            let r = self.next_random();
            let candidate = ((r >> 16) as usize % SOCKETS, r as u16);
            if !self.entries.contains_key(&candidate) {
                key = Some(candidate);
                break;
            }
        }
        let Some(key) = key else {
            if let Some(count) = self.per_client.get_mut(&client.ip()) {
                *count -= 1;
            }
            return;
        };
        let mut pending = pending_for(request.to_vec(), question_end, upstreams);
        pending.request[..2].copy_from_slice(&key.1.to_be_bytes());
        pending.attempt_deadline = Instant::now() + pending.attempt_time();
        self.send_to(key.0, &pending.request, first);
        self.entries.insert(key, pending);
    }

    /// An answer arrived on upstream socket `index`.
    pub fn answer(&mut self, index: usize, answer: &[u8], from: SocketAddr) {
        if answer.len() < 12 || answer[2] & 0x80 == 0 {
            return;
        }
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let key = (index, u16::from_be_bytes([answer[0], answer[1]]));
        let matches = self.entries.get(&key).is_some_and(|p| {
            p.upstreams.contains(&from)
                && answer.get(12..p.question_end) == p.request.get(12..p.question_end)
        });
        if !matches {
            return;
        }
        let Some(pending) = self.remove(key) else {
            return;
        };
        crate::metrics::get()
            .dns
            .forward_seconds
            .observe(pending.started.elapsed().as_secs_f64());
        if answer[2] & 0x02 != 0 {
            self.runtime
                .spawn(refetch_over_tcp(pending, from, answer.to_vec()));
        } else {
            pending.deliver(answer.to_vec());
        }
    }

    /// Moves requests whose upstream is silent to the next one, and fails those out of
    /// upstreams or time.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<(usize, u16)> = self
            .entries
            .iter()
            .filter(|(_, p)| p.attempt_deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let retry = self.entries.get_mut(&key).and_then(|p| {
                if p.attempt + 1 < p.upstreams.len() && now < p.deadline {
                    p.attempt += 1;
                    p.attempt_deadline = (now + p.attempt_time()).min(p.deadline);
                    Some(p.upstreams[p.attempt])
                } else {
                    None
                }
            });
            match retry {
                Some(to) => {
                    if let Some(p) = self.entries.get(&key) {
                        self.send_to(key.0, &p.request, to);
                    }
                }
                None => {
                    if let Some(pending) = self.remove(key) {
                        pending.fail();
                    }
                }
            }
        }
    }

    /// Forgets requests whose listener is gone.
    pub fn forget_closed(&mut self) {
        let closed: Vec<(usize, u16)> = self
            .entries
            .iter()
            .filter(|(_, p)| p.reply.strong_count() == 0)
            .map(|(k, _)| *k)
            .collect();
        for key in closed {
            self.remove(key);
        }
    }
}

/// A truncated UDP answer: asks the same upstream over TCP, and sends the truncated one if
/// that fails (the client can still ask over TCP itself).
async fn refetch_over_tcp(pending: Pending, upstream: SocketAddr, truncated: Vec<u8>) {
    let left = pending.deadline.saturating_duration_since(Instant::now());
    match tcp_exchange(&pending.request, upstream, left).await {
        Some(full) if full.len() >= 12 && full[..2] == pending.request[..2] => {
            pending.deliver(full)
        }
        _ => pending.deliver(truncated),
    }
}

/// One request and answer over a new TCP connection.
async fn tcp_exchange(request: &[u8], upstream: SocketAddr, limit: Duration) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await.ok()?;
        let len = u16::try_from(request.len()).ok()?;
        let mut out = Vec::with_capacity(request.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(request);
        stream.write_all(&out).await.ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await.ok()?;
        Some(answer)
    };
    tokio::time::timeout(limit, exchange).await.ok().flatten()
}

/// Forwards a request that came over TCP: each upstream in turn, over TCP, within
/// `BUDGET`. `None` when none answered.
pub async fn forward_tcp(request: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + BUDGET;
    let n = u32::try_from(upstreams.len()).unwrap_or(u32::MAX).max(1);
    for upstream in upstreams {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let attempt = (BUDGET / n).max(MIN_ATTEMPT).min(left);
        if let Some(answer) = tcp_exchange(request, *upstream, attempt).await {
            return Some(answer);
        }
    }
    None
}
