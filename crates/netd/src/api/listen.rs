//! The API's sockets as a system service has them: bound here (mode 0660, owned by the
//! socket group) or handed over by systemd (socket activation); every request logged,
//! counted and (a change) published as an event, with who made it (SO_PEERCRED), what it
//! touched and how long it took; and systemd told when netd is ready.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::net::UnixListener;

use super::operations::{self, Objects, Operation};
use super::types::Event;
use crate::metrics::OperationLabels;

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

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Netd,
    Docker,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Netd => "netd",
            Api::Docker => "docker",
        }
    }

    fn operation(self, method: &Method, route: &str) -> Option<Operation> {
        match self {
            Api::Netd => operations::netd(method, route),
            Api::Docker => operations::docker(method, route),
        }
    }
}

/// The largest request body a change may carry (a policy file of many objects).
const MAX_BODY: usize = 16 << 20;

/// What the middleware needs of a request after it is answered.
struct Asked {
    method: Method,
    path: String,
    operation: Option<Operation>,
    params: Vec<(String, String)>,
    body: Option<serde_json::Value>,
    caller: Caller,
}

/// Observes each request: one log event (reads at DEBUG, changes at INFO) with the
/// operation, the objects it touched, its result and duration, and the caller's uid and
/// pid; the operation's metrics; and, for changes, an event for `netctl system events`.
pub async fn observe(State(api): State<Api>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let caller = parts
        .extensions
        .get::<ConnectInfo<Caller>>()
        .map(|c| c.0)
        .unwrap_or_default();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let operation = route
        .as_deref()
        .and_then(|route| api.operation(&parts.method, route));
    let params = match RawPathParams::from_request_parts(&mut parts, &()).await {
        Ok(raw) => raw
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let changes = operations::changes(&parts.method);
    let mut asked = Asked {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        operation,
        params,
        body: None,
        caller,
    };
    let response = if changes {
        // Buffered, to read the names it carries; handlers parse it as before.
        let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let response = too_large(&e);
                finish(api, &asked, &response, None, started);
                return response;
            }
        };
        asked.body = serde_json::from_slice(&bytes).ok();
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    } else {
        next.run(Request::from_parts(parts, body)).await
    };
    if !changes {
        finish(api, &asked, &response, None, started);
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let answer = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let response = Response::from_parts(parts, Body::from(bytes));
    finish(api, &asked, &response, answer.as_ref(), started);
    response
}

fn too_large(e: &axum::Error) -> Response {
    let message = format!("the request body: {e} (at most {MAX_BODY} bytes)");
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(super::types::ErrorMessage { message }),
    )
        .into_response()
}

/// Logs, counts and publishes one answered request.
fn finish(
    api: Api,
    asked: &Asked,
    response: &Response,
    answer: Option<&serde_json::Value>,
    started: Instant,
) {
    let took = started.elapsed();
    let status = response.status();
    let result = if status.is_server_error() {
        "failed"
    } else if status.is_client_error() {
        "rejected"
    } else {
        "ok"
    };
    let operation = asked.operation.unwrap_or(Operation {
        name: "unknown",
        object: "unknown",
        action: "unknown",
    });
    crate::metrics::get().operation(
        OperationLabels {
            api: api.name(),
            operation: operation.name,
            result,
        },
        took,
    );
    let objects = Objects::of(&operation, &asked.params, asked.body.as_ref(), answer);
    let duration_ms = took.as_secs_f64() * 1000.0;
    let status = status.as_u16();
    let (method, path) = (&asked.method, asked.path.as_str());
    let uid = asked.caller.uid.map_or(-1, i64::from);
    let pid = asked.caller.pid.map_or(-1, i64::from);
    let (network, sandbox, policy, node, container) = (
        objects.network.as_deref(),
        objects.sandbox.as_deref(),
        objects.policy.as_deref(),
        objects.node.as_deref(),
        objects.container.as_deref(),
    );
    // Reads, and paths that are no operation (which change nothing), are no events.
    if !operations::changes(method) || asked.operation.is_none() {
        tracing::debug!(
            operation = operation.name, %method, path, status, result, duration_ms, uid, pid,
            network, sandbox, policy, node, container, "request"
        );
        return;
    }
    tracing::info!(
        operation = operation.name, %method, path, status, result, duration_ms, uid, pid,
        network, sandbox, policy, node, container, "request"
    );
    let error = (result != "ok")
        .then(|| answer.and_then(|a| a.get("message")?.as_str().map(str::to_string)))
        .flatten();
    let now = std::time::SystemTime::now();
    crate::events::publish(Event {
        time: humantime::format_rfc3339_millis(now).to_string(),
        time_nano: crate::events::nanos(now),
        object: operation.object.to_string(),
        action: operation.action.to_string(),
        operation: operation.name.to_string(),
        api: api.name().to_string(),
        result: result.to_string(),
        status: Some(status),
        duration_ms: Some(duration_ms),
        uid: asked.caller.uid,
        pid: asked.caller.pid,
        objects,
        error,
    });
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
