//! netd's embedded DNS server: one listener (UDP and TCP, port 53) on the gateway of each
//! DNS-enabled network, answering sandbox names, aliases and short ids, and forwarding the
//! rest to the host's (or the network's) resolvers.
//!
//! The engine publishes a new `Records` snapshot after every change; listeners read the
//! current one per request, so names appear and go without restarting any socket.

mod forward;
pub mod query;
pub mod records;
mod tcp;
#[doc(hidden)]
pub mod testing;
mod udp;
pub mod upstream;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

pub use records::{Records, RecordsBuilder, SEARCH_DOMAIN};

use crate::error::{NetdError, Result};

/// The DNS port, on every gateway.
pub const PORT: u16 = 53;

#[derive(Debug)]
struct Listener {
    tcp: tokio::task::JoinHandle<()>,
}

/// The DNS server: its runtime, the current records and the running listeners.
#[derive(Debug)]
pub struct DnsService {
    runtime: tokio::runtime::Runtime,
    records: Arc<ArcSwap<Records>>,
    host: Arc<upstream::HostResolvers>,
    udp: udp::UdpServer,
    listeners: HashMap<Ipv4Addr, Listener>,
}

impl DnsService {
    /// Starts the forwarder and the watch on the host's resolv.conf; no listener yet.
    pub fn start(resolv_conf: PathBuf) -> Result<DnsService> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netd-dns")
            .enable_all()
            .build()
            .map_err(|e| NetdError::io("cannot start the DNS runtime", e))?;
        let records = Arc::new(ArcSwap::from_pointee(Records::default()));
        let host = Arc::new(upstream::HostResolvers::new(resolv_conf));
        let udp = udp::UdpServer::start(records.clone(), host.clone(), runtime.handle().clone())
            .map_err(|e| NetdError::io("cannot start the DNS server", e))?;
        let watched = host.clone();
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                watched.refresh();
            }
        });
        Ok(DnsService {
            runtime,
            records,
            host,
            udp,
            listeners: HashMap::new(),
        })
    }

    /// Swaps in new records, then starts and stops listeners to match them. Returns what
    /// could not be done (a gateway's port 53 taken by another program), to be retried at
    /// the next publish.
    pub fn publish(&mut self, records: Records) -> Vec<String> {
        let wanted: Vec<Ipv4Addr> = records.listeners().map(|n| n.gateway).collect();
        self.records.store(Arc::new(records));
        let gone: Vec<Ipv4Addr> = self
            .listeners
            .keys()
            .filter(|ip| !wanted.contains(ip))
            .copied()
            .collect();
        for ip in gone {
            if let Some(listener) = self.listeners.remove(&ip) {
                self.stop(ip, listener);
            }
        }
        let mut problems = Vec::new();
        for ip in wanted {
            if self.listeners.contains_key(&ip) {
                continue;
            }
            match self.listen(ip) {
                Ok(listener) => {
                    self.listeners.insert(ip, listener);
                }
                Err(e) => problems.push(format!("DNS on {ip}:{PORT}: {e}")),
            }
        }
        problems
    }

    fn listen(&self, ip: Ipv4Addr) -> std::io::Result<Listener> {
        let address = SocketAddrV4::new(ip, PORT);
        let udp_socket = UdpSocket::from(bind(address, SockType::Datagram)?);
        let tcp_socket = TcpListener::from(bind(address, SockType::Stream)?);
        tcp_socket.set_nonblocking(true)?;
        let tcp_listener = {
            let _guard = self.runtime.enter();
            tokio::net::TcpListener::from_std(tcp_socket)?
        };
        self.udp.add(ip, udp_socket)?;
        let tcp = self.runtime.spawn(tcp::serve(
            tcp_listener,
            ip,
            self.records.clone(),
            self.host.clone(),
        ));
        tracing::info!("DNS listening on {ip}:{PORT}");
        Ok(Listener { tcp })
    }

    fn stop(&self, ip: Ipv4Addr, listener: Listener) {
        self.udp.remove(ip);
        listener.tcp.abort();
        // Waits for the task to drop its socket, so the address is free on return.
        let _ = self.runtime.block_on(listener.tcp);
    }
}

/// A socket bound to `address`, even before the address is on an interface (a bridge being
/// repaired).
fn bind(address: SocketAddrV4, kind: SockType) -> std::io::Result<OwnedFd> {
    let fd = socket::socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    if kind == SockType::Stream {
        // Connections in TIME_WAIT must not keep a re-created network from listening. Not
        // for UDP, where it would let two servers share the port.
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(address),
    )?;
    if kind == SockType::Stream {
        socket::listen(
            &fd,
            socket::Backlog::new(128).map_err(std::io::Error::from)?,
        )?;
    }
    Ok(fd)
}
