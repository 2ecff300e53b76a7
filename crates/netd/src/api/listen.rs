//! The API's sockets as a system service has them: bound here (mode 0660, owned by the
//! socket group) or handed over by systemd (socket activation); every request logged with
//! who made it (SO_PEERCRED) and how long it took; and systemd told when netd is ready.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use tokio::net::UnixListener;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Who is at the other end of an API connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        Caller {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        }
    }
}

/// Logs each request: method, path, answer, duration, and the caller's uid and pid.
/// Reads at DEBUG, changes at INFO.
pub async fn log_request(request: Request, next: Next) -> Response {
    let caller = request
        .extensions()
        .get::<ConnectInfo<Caller>>()
        .map(|c| c.0)
        .unwrap_or_default();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let uid = caller.uid.map_or(-1, i64::from);
    let pid = caller.pid.map_or(-1, i64::from);
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        tracing::debug!(%method, path, status, duration_ms, uid, pid, "request");
    } else {
        tracing::info!(%method, path, status, duration_ms, uid, pid, "request");
    }
    response
}

/// Binds a socket (mode 0660, group `gid` when given), replacing a stale socket file
/// left by a crash; a socket a running netd answers on is refused.
pub fn bind(path: &Path, gid: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running netd", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let owned = std::os::unix::fs::chown(path, None, gid)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)));
    if let Err(e) = owned {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// The socket systemd passed (`netd.socket`), if netd was started by socket activation:
/// `LISTEN_PID` is this process and `LISTEN_FDS` at least 1. The variables are removed so
/// that children do not take them as theirs. Taken before any thread starts; made a
/// tokio listener with `UnixListener::from_std` on the runtime.
pub fn activated() -> std::io::Result<Option<std::os::unix::net::UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let ours = pid
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = fds.and_then(|n| n.parse::<i32>().ok()).unwrap_or(0);
    if !ours || count < 1 {
        return Ok(None);
    }
    // SAFETY: single-threaded at this point (called before the runtime starts).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    // SAFETY: systemd passed this descriptor to us, open, and nothing else owns it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FDS_START) };
    listener.set_nonblocking(true)?;
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(std::io::Error::from)?;
    Ok(Some(listener))
}

/// Tells systemd (`Type=notify`) that netd is ready: `READY=1` to `$NOTIFY_SOCKET`. Does
/// nothing when netd was not started by systemd.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let bytes = path.as_bytes();
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(Path::new(&path))?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(b"READY=1\nSTATUS=listening\n", &address)?;
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!("cannot tell systemd that netd is ready: {e}");
    }
}
