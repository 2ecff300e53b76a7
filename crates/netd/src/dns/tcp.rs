//! The TCP side of a listener: length-prefixed requests on each connection, answered in
//! order; forwarded ones go upstream over TCP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::forward;
use super::query::{self, Outcome, Transport};
use super::records::Records;
use super::upstream::HostResolvers;

/// Connections served at once per listener; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 256;
/// A connection with no request for this long is closed (RFC 7766 suggests seconds).
const IDLE: Duration = Duration::from_secs(10);

/// Serves a listening socket until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    server: Ipv4Addr,
    records: Arc<ArcSwap<Records>>,
    host: Arc<HostResolvers>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, client) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!("dns tcp {server}: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let records = records.clone();
        let host = host.clone();
        tokio::spawn(async move {
            connection(stream, client, server, &records, &host).await;
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    client: SocketAddr,
    server: Ipv4Addr,
    records: &ArcSwap<Records>,
    host: &HostResolvers,
) {
    let IpAddr::V4(client_ip) = client.ip() else {
        return;
    };
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(IDLE, stream.read_exact(&mut request)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let outcome = query::handle(&request, server, client_ip, &records.load(), Transport::Tcp);
        let metrics = &crate::metrics::get().dns;
        let answer = match outcome {
            Outcome::Answer(answer) => {
                metrics.count_answer(&answer);
                answer
            }
            Outcome::Forward { upstreams, .. } => {
                metrics.forwarded.inc();
                let upstreams = forward::upstreams_for(&upstreams, host, records);
                let started = std::time::Instant::now();
                match forward::forward_tcp(&request, &upstreams).await {
                    Some(answer) => {
                        metrics
                            .forward_seconds
                            .observe(started.elapsed().as_secs_f64());
                        answer
                    }
                    None => {
                        metrics.forward_failures.inc();
                        query::server_failure(&request, u16::MAX)
                    }
                }
            }
            Outcome::Drop => continue,
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(answer.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&answer);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
