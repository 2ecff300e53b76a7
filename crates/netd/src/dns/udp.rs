//! The UDP side of every listener, and the upstream sockets, in one event loop on one
//! thread (epoll): a request for netd's names is answered where it is read, a forwarded
//! one goes upstream from the same thread, and under load the loop drains sockets without
//! sleeping, so no packet costs a thread switch.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::forward::{self, Forwarder};
use super::query::{self, Outcome, Transport};
use super::records::Records;
use super::upstream::HostResolvers;

/// epoll tokens: the wake-up eventfd, then the upstream sockets, then listeners (by
/// address, above 2^32).
const WAKE: u64 = 0;
const LISTENER: u64 = 1 << 32;
/// Packets read from one socket before the others get a turn.
const BATCH: usize = 64;
/// How often silent upstreams are checked for.
const TICK: Duration = Duration::from_millis(50);

enum Control {
    Add(Ipv4Addr, UdpSocket, mpsc::Sender<std::io::Result<()>>),
    Remove(Ipv4Addr, mpsc::Sender<()>),
    Stop,
}

/// The handle to the event loop's thread.
#[derive(Debug)]
pub struct UdpServer {
    control: mpsc::Sender<Control>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    pub fn start(
        records: Arc<ArcSwap<Records>>,
        host: Arc<HostResolvers>,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<UdpServer> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        let forwarder = Forwarder::new(runtime)?;
        for (index, socket) in forwarder.sockets().iter().enumerate() {
            epoll.add(
                socket.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, 1 + index as u64),
            )?;
        }
        let (control, control_rx) = mpsc::channel();
        let mut event_loop = EventLoop {
            epoll,
            wake: wake.clone(),
            control: control_rx,
            listeners: HashMap::new(),
            forwarder,
            records,
            host,
        };
        let thread = std::thread::Builder::new()
            .name("netd-dns-udp".into())
            .spawn(move || event_loop.run())?;
        Ok(UdpServer {
            control,
            wake,
            thread: Some(thread),
        })
    }

    fn send(&self, control: Control) -> bool {
        self.control.send(control).is_ok() && self.wake.write(1).is_ok()
    }

    /// Starts serving a bound socket.
    pub fn add(&self, ip: Ipv4Addr, socket: UdpSocket) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Control::Add(ip, socket, tx)) {
            return Err(std::io::Error::other("the DNS thread has stopped"));
        }
        rx.recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the DNS thread has stopped")))
    }

    /// Stops serving an address; its socket is closed when this returns.
    pub fn remove(&self, ip: Ipv4Addr) {
        let (tx, rx) = mpsc::channel();
        if self.send(Control::Remove(ip, tx)) {
            let _ = rx.recv();
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.send(Control::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct EventLoop {
    epoll: Epoll,
    wake: Arc<EventFd>,
    control: mpsc::Receiver<Control>,
    listeners: HashMap<u64, (Ipv4Addr, Arc<UdpSocket>)>,
    forwarder: Forwarder,
    records: Arc<ArcSwap<Records>>,
    host: Arc<HostResolvers>,
}

impl EventLoop {
    fn run(&mut self) {
        let mut events = vec![EpollEvent::empty(); 64];
        let mut buf = vec![0u8; 65_535];
        let mut last_tick = Instant::now();
        loop {
            let ready = match self.epoll.wait(&mut events, EpollTimeout::from(50u16)) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    tracing::error!("DNS event loop: {e}");
                    std::thread::sleep(TICK);
                    0
                }
            };
            for event in &events[..ready] {
                match event.data() {
                    WAKE => {
                        let _ = self.wake.read();
                        if !self.handle_control() {
                            return;
                        }
                    }
                    token if token < LISTENER => {
                        self.read_upstream((token - 1) as usize, &mut buf);
                    }
                    token => self.read_listener(token, &mut buf),
                }
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= TICK {
                last_tick = now;
                self.forwarder.expire(now);
            }
        }
    }

    /// Applies queued changes; false when told to stop.
    fn handle_control(&mut self) -> bool {
        while let Ok(control) = self.control.try_recv() {
            match control {
                Control::Add(ip, socket, done) => {
                    let token = LISTENER | u64::from(u32::from(ip));
                    let added = socket.set_nonblocking(true).and_then(|()| {
                        self.epoll
                            .add(socket.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
                            .map_err(std::io::Error::from)
                    });
                    if added.is_ok() {
                        self.listeners.insert(token, (ip, Arc::new(socket)));
                    }
                    let _ = done.send(added);
                }
                Control::Remove(ip, done) => {
                    let token = LISTENER | u64::from(u32::from(ip));
                    if let Some((_, socket)) = self.listeners.remove(&token) {
                        let _ = self.epoll.delete(socket.as_fd());
                        drop(socket);
                        self.forwarder.forget_closed();
                    }
                    let _ = done.send(());
                }
                Control::Stop => return false,
            }
        }
        true
    }

    fn read_upstream(&mut self, index: usize, buf: &mut [u8]) {
        for _ in 0..BATCH {
            let Some(socket) = self.forwarder.sockets().get(index) else {
                return;
            };
            match socket.recv_from(buf) {
                Ok((len, from)) => self.forwarder.answer(index, &buf[..len], from),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP errors from upstreams surface here; the timeout handles them.
                Err(_) => continue,
            }
        }
    }

    fn read_listener(&mut self, token: u64, buf: &mut [u8]) {
        let Some((server, socket)) = self.listeners.get(&token) else {
            return;
        };
        let (server, socket) = (*server, socket.clone());
        for _ in 0..BATCH {
            let (len, client) = match socket.recv_from(buf) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("DNS listener {server}: {e}");
                    return;
                }
            };
            let IpAddr::V4(client_ip) = client.ip() else {
                continue;
            };
            let request = &buf[..len.min(usize::from(query::MAX_UDP_PAYLOAD))];
            let records = self.records.load();
            match query::handle(request, server, client_ip, &records, Transport::Udp) {
                Outcome::Answer(answer) => {
                    crate::metrics::get().dns.count_answer(&answer);
                    if let Err(e) = socket.send_to(&answer, client) {
                        tracing::debug!("DNS answer to {client}: {e}");
                    }
                }
                Outcome::Forward {
                    upstreams,
                    client_max,
                } => {
                    crate::metrics::get().dns.forwarded.inc();
                    let upstreams = forward::upstreams_for(&upstreams, &self.host, &self.records);
                    self.forwarder
                        .start(request, client, &socket, upstreams, client_max);
                }
                Outcome::Drop => {}
            }
        }
    }
}
