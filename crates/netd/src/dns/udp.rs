//! The UDP side of a listener: one thread per gateway address, answering netd's names
//! inline (no hop to another thread) and queuing the rest for the forwarder.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::forward::{ForwardJob, ForwardQueue};
use super::query::{self, Outcome, Transport};
use super::records::Records;

/// A running UDP listener.
#[derive(Debug)]
pub struct UdpListener {
    socket: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpListener {
    pub fn start(
        socket: UdpSocket,
        records: Arc<ArcSwap<Records>>,
        forwarder: ForwardQueue,
    ) -> std::io::Result<UdpListener> {
        // A backstop for the wake-up in `stop`.
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        let server = match socket.local_addr()? {
            SocketAddr::V4(v4) => *v4.ip(),
            SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let socket = Arc::new(socket);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let socket = socket.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("dns-{server}"))
                .spawn(move || serve(&socket, server, &records, &forwarder, &stop))?
        };
        Ok(UdpListener {
            socket,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and closes the socket, so the address can be bound again at once.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting a UDP socket down wakes a blocked receive (it returns 0 bytes); the
        // call itself reports ENOTCONN, which is expected.
        let _ =
            nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Read);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    socket: &Arc<UdpSocket>,
    server: Ipv4Addr,
    records: &ArcSwap<Records>,
    forwarder: &ForwardQueue,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; usize::from(query::MAX_UDP_PAYLOAD)];
    while !stop.load(Ordering::Relaxed) {
        let (len, client) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!("dns listener {server}: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let IpAddr::V4(client_ip) = client.ip() else {
            continue;
        };
        let packet = &buf[..len];
        match query::handle(packet, server, client_ip, &records.load(), Transport::Udp) {
            Outcome::Answer(answer) => {
                if let Err(e) = socket.send_to(&answer, client) {
                    tracing::debug!("dns answer to {client}: {e}");
                }
            }
            Outcome::Forward {
                upstreams,
                client_max,
            } => {
                forwarder.submit(ForwardJob {
                    request: packet.to_vec(),
                    client,
                    reply: socket.clone(),
                    upstreams,
                    client_max,
                });
            }
            Outcome::Drop => {}
        }
    }
}
