//! Forwarding to upstream resolvers: requests go out as they came, under a fresh random id
//! on one of a few sockets with random ports, and answers are matched by socket, id, source
//! and question. Truncated answers are fetched again over TCP; silent upstreams are left
//! for the next one, and a request none answers gets SERVFAIL within `BUDGET`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::query::{self, Upstreams};
use super::records::Records;
use super::upstream::{self, HostResolvers};

/// A request gets its answer or SERVFAIL within this time (clients wait 5 s).
pub const BUDGET: Duration = Duration::from_secs(4);
/// No upstream gets less than this before the next is tried.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);
/// Sockets that upstream requests leave from.
const SOCKETS: usize = 4;
/// Requests waiting for an upstream, in all and per client: a client over its share waits
/// (its requests are dropped), the others are served.
const MAX_INFLIGHT: usize = 16_384;
const MAX_PER_CLIENT: u32 = 512;
/// Requests queued between the listeners and the forwarder.
const QUEUE: usize = 8_192;

/// A request for the upstream resolvers.
#[derive(Debug)]
pub struct ForwardJob {
    pub request: Vec<u8>,
    pub client: SocketAddr,
    /// The listener socket the answer goes back through.
    pub reply: Arc<StdUdpSocket>,
    pub upstreams: Upstreams,
    pub client_max: u16,
}

/// Hands requests to the forwarder from any thread, without waiting.
#[derive(Debug, Clone)]
pub struct ForwardQueue {
    tx: mpsc::Sender<ForwardJob>,
}

impl ForwardQueue {
    /// Queues a request; a full queue drops it (the client asks again).
    pub fn submit(&self, job: ForwardJob) -> bool {
        self.tx.try_send(job).is_ok()
    }
}

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
    reply: Arc<StdUdpSocket>,
    /// The request under netd's id.
    request: Vec<u8>,
    question_end: usize,
    upstreams: Arc<[SocketAddr]>,
    attempt: usize,
    attempt_deadline: Instant,
    deadline: Instant,
    client_max: u16,
}

impl Pending {
    fn attempt_time(&self) -> Duration {
        let n = u32::try_from(self.upstreams.len())
            .unwrap_or(u32::MAX)
            .max(1);
        (BUDGET / n).max(MIN_ATTEMPT)
    }
}

#[derive(Debug, Default)]
struct Inflight {
    entries: HashMap<(usize, u16), Pending>,
    per_client: HashMap<IpAddr, u32>,
    rng: u64,
}

impl Inflight {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: ids need to be unpredictable to off-path guessers only as far as
        // 16 bits and a random port allow; the seed comes from the kernel.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
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
}

#[derive(Debug)]
struct Forwarder {
    sockets: Vec<Arc<UdpSocket>>,
    inflight: Mutex<Inflight>,
    host: Arc<HostResolvers>,
    records: Arc<ArcSwap<Records>>,
}

/// Starts the forwarder on the current runtime; returns the queue listeners feed.
pub fn start(
    host: Arc<HostResolvers>,
    records: Arc<ArcSwap<Records>>,
) -> std::io::Result<ForwardQueue> {
    let mut sockets = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS {
        let std_socket =
            StdUdpSocket::bind("[::]:0").or_else(|_| StdUdpSocket::bind("0.0.0.0:0"))?;
        std_socket.set_nonblocking(true)?;
        sockets.push(Arc::new(UdpSocket::from_std(std_socket)?));
    }
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    let forwarder = Arc::new(Forwarder {
        sockets,
        inflight: Mutex::new(Inflight {
            rng: u64::from_ne_bytes(seed) | 1,
            ..Default::default()
        }),
        host,
        records,
    });
    for index in 0..SOCKETS {
        tokio::spawn(forwarder.clone().read_answers(index));
    }
    tokio::spawn(forwarder.clone().expire());
    let (tx, mut rx) = mpsc::channel::<ForwardJob>(QUEUE);
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            forwarder.send(job);
        }
    });
    Ok(ForwardQueue { tx })
}

/// The address to send to from `socket`: IPv4 upstreams as mapped addresses on an IPv6
/// socket.
fn destination(socket: &UdpSocket, to: SocketAddr) -> SocketAddr {
    match (socket.local_addr(), to) {
        (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => to,
    }
}

impl Forwarder {
    fn send(&self, job: ForwardJob) {
        let upstreams = upstreams_for(&job.upstreams, &self.host, &self.records);
        let question_end = query::question_end(&job.request);
        let (Some(first), Some(question_end)) = (upstreams.first().copied(), question_end) else {
            let answer = query::server_failure(&job.request, job.client_max);
            let _ = job.reply.send_to(&answer, job.client);
            return;
        };
        let client_id = u16::from_be_bytes([job.request[0], job.request[1]]);
        let now = Instant::now();
        let (index, request) = {
            let Ok(mut inflight) = self.inflight.lock() else {
                return;
            };
            if inflight.entries.len() >= MAX_INFLIGHT {
                return;
            }
            let count = inflight.per_client.entry(job.client.ip()).or_insert(0);
            if *count >= MAX_PER_CLIENT {
                return;
            }
            *count += 1;
            let mut key = (0, 0);
            for _ in 0..16 {
                let r = inflight.next_random();
                key = ((r >> 16) as usize % SOCKETS, r as u16);
                if !inflight.entries.contains_key(&key) {
                    break;
                }
            }
            if inflight.entries.contains_key(&key) {
                inflight.remove(key);
                return;
            }
            let mut request = job.request;
            request[..2].copy_from_slice(&key.1.to_be_bytes());
            let mut pending = Pending {
                client: job.client,
                client_id,
                reply: job.reply,
                request: request.clone(),
                question_end,
                upstreams,
                attempt: 0,
                attempt_deadline: now,
                deadline: now + BUDGET,
                client_max: job.client_max,
            };
            pending.attempt_deadline = now + pending.attempt_time();
            inflight.entries.insert(key, pending);
            (key.0, request)
        };
        let socket = &self.sockets[index];
        let _ = socket.try_send_to(&request, destination(socket, first));
    }

    async fn read_answers(self: Arc<Self>, index: usize) {
        let socket = self.sockets[index].clone();
        let mut buf = vec![0u8; 65_535];
        loop {
            let (len, from) = match socket.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) => {
                    // ICMP errors surface here on some kernels; nothing to do but go on.
                    tracing::debug!("upstream socket: {e}");
                    continue;
                }
            };
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            let answer = &buf[..len];
            if len < 12 || answer[2] & 0x80 == 0 {
                continue;
            }
            let id = u16::from_be_bytes([answer[0], answer[1]]);
            let pending = {
                let Ok(mut inflight) = self.inflight.lock() else {
                    continue;
                };
                let matches = inflight.entries.get(&(index, id)).is_some_and(|p| {
                    p.upstreams.contains(&from)
                        && answer.get(12..p.question_end) == p.request.get(12..p.question_end)
                });
                if !matches {
                    continue;
                }
                inflight.remove((index, id))
            };
            let Some(pending) = pending else { continue };
            let answer = answer.to_vec();
            if answer[2] & 0x02 != 0 {
                tokio::spawn(refetch_over_tcp(pending, from, answer));
            } else {
                deliver(&pending, answer);
            }
        }
    }

    /// Moves requests whose upstream is silent to the next one, and fails those out of
    /// upstreams or time.
    async fn expire(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut resend = Vec::new();
            let mut failed = Vec::new();
            {
                let Ok(mut inflight) = self.inflight.lock() else {
                    continue;
                };
                let expired: Vec<(usize, u16)> = inflight
                    .entries
                    .iter()
                    .filter(|(_, p)| p.attempt_deadline <= now)
                    .map(|(k, _)| *k)
                    .collect();
                for key in expired {
                    let retry = inflight.entries.get_mut(&key).and_then(|p| {
                        if p.attempt + 1 < p.upstreams.len() && now < p.deadline {
                            p.attempt += 1;
                            p.attempt_deadline = (now + p.attempt_time()).min(p.deadline);
                            Some((p.request.clone(), p.upstreams[p.attempt]))
                        } else {
                            None
                        }
                    });
                    match retry {
                        Some((request, to)) => resend.push((key.0, request, to)),
                        None => failed.extend(inflight.remove(key)),
                    }
                }
            }
            for (index, request, to) in resend {
                let socket = &self.sockets[index];
                let _ = socket.try_send_to(&request, destination(socket, to));
            }
            for pending in failed {
                let mut answer = query::server_failure(&pending.request, pending.client_max);
                if answer.len() >= 2 {
                    answer[..2].copy_from_slice(&pending.client_id.to_be_bytes());
                    let _ = pending.reply.send_to(&answer, pending.client);
                }
            }
        }
    }
}

/// Sends an upstream's answer to the client, under the client's id and within its size.
fn deliver(pending: &Pending, mut answer: Vec<u8>) {
    answer[..2].copy_from_slice(&pending.client_id.to_be_bytes());
    let answer = query::fit_answer(answer, pending.client_max);
    if let Err(e) = pending.reply.send_to(&answer, pending.client) {
        tracing::debug!("answer to {}: {e}", pending.client);
    }
}

/// A truncated UDP answer: asks the same upstream over TCP, and sends the truncated one if
/// that fails (the client can still ask over TCP itself).
async fn refetch_over_tcp(pending: Pending, upstream: SocketAddr, truncated: Vec<u8>) {
    let left = pending.deadline.saturating_duration_since(Instant::now());
    match tcp_exchange(&pending.request, upstream, left).await {
        Some(full) if full.len() >= 12 && full[..2] == pending.request[..2] => {
            deliver(&pending, full)
        }
        _ => deliver(&pending, truncated),
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
