//! The admin listener (`admin`): plain HTTP/1.1 on its own address and thread, one request per
//! connection. `GET /metrics` (Prometheus text 0.0.4), `GET /healthz` (200 while the process
//! runs) and `GET /readyz` (200 when every route has a usable backend and the gateway is not
//! shutting down; else 503 with the reason). Never on the public port unless `admin` names its address.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncWriteExt, FutureExt};
use smol::LocalExecutor;

use crate::handshake::{self, Head, Request};
use crate::net::Stream;
use crate::reactor::{self, Listener, Timer};

/// Admin connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// Time for an admin request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin endpoints report, taken when a request arrives.
pub struct Status {
    /// Every backend of the config in force: (route, backend, usable for new connections).
    pub backends: Vec<(String, String, bool)>,
    /// A graceful shutdown is under way.
    pub shutting_down: bool,
}

/// Reads the gateway's state for a request.
pub type StatusFn = Arc<dyn Fn() -> Status + Send + Sync>;

/// Binds `host:port` and serves the admin endpoints on a `kairos-admin` thread; returns the
/// bound address.
pub fn start(host: &str, port: u16, status: StatusFn) -> io::Result<SocketAddr> {
    let shown = format!("{host}:{port}");
    let named =
        |e: io::Error| io::Error::new(e.kind(), format!("admin: cannot listen on {shown}: {e}"));
    let listener = TcpListener::bind((host, port)).map_err(named)?;
    listener.set_nonblocking(true).map_err(named)?;
    let addr = listener.local_addr().map_err(named)?;
    let listener = Arc::new(listener);
    std::thread::Builder::new()
        .name("kairos-admin".into())
        .spawn(move || {
            let ex = Rc::new(LocalExecutor::new());
            reactor::block_on(ex.run(serve(listener, status, ex.clone())));
        })?;
    Ok(addr)
}

async fn serve(listener: Arc<TcpListener>, status: StatusFn, ex: Rc<LocalExecutor<'static>>) {
    let listener = match Listener::new(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("admin: cannot register the listener: {e}");
            return;
        }
    };
    let open = Rc::new(Cell::new(0usize));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("admin: accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.get() >= MAX_CONNECTIONS {
            log::debug!("admin {peer}: closed: {MAX_CONNECTIONS} admin connections already open");
            continue;
        }
        let Ok(stream) = Stream::accepted(tcp) else {
            continue;
        };
        open.set(open.get() + 1);
        let (open, status) = (open.clone(), status.clone());
        ex.spawn(async move {
            answer(stream, peer, &status).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// Reads one request and answers it.
async fn answer(mut stream: Stream, peer: SocketAddr, status: &StatusFn) {
    let read = handshake::read_request(&mut stream, 8192)
        .or(async {
            Timer::after(REQUEST_TIMEOUT).await;
            Err(crate::error::Error::HandshakeTimeout(REQUEST_TIMEOUT))
        })
        .await;
    let request = match read {
        Ok((r, _)) => r,
        Err(e) => {
            log::debug!("admin {peer}: {e}");
            if e.status().is_some() {
                let bad = Reply::text(400, "bad request\n");
                respond(&mut stream, &bad).await;
            }
            return;
        }
    };
    let reply = reply(&request, || status());
    log::debug!(
        "admin {peer}: {} {} -> {}",
        request.method,
        request.target,
        reply.code
    );
    respond(&mut stream, &reply).await;
}

/// An admin answer.
pub struct Reply {
    code: u16,
    kind: &'static str,
    body: String,
    /// A HEAD request: the head only.
    head_only: bool,
}

impl Reply {
    fn text(code: u16, body: &str) -> Reply {
        Reply {
            code,
            kind: "text/plain; charset=utf-8",
            body: body.to_string(),
            head_only: false,
        }
    }
}

/// Whether `request` is for the admin endpoints when they share the public listener: a plain
/// (not upgrade) request for one of their paths.
pub fn is_admin_request(request: &Request) -> bool {
    let path = crate::route::split_target(&request.target).0;
    let upgrade = request
        .header("Upgrade")
        .is_some_and(|u| u.to_ascii_lowercase().contains("websocket"));
    !upgrade && ["/metrics", "/healthz", "/readyz"].contains(&path)
}

/// The answer to an admin request; `status` is asked only when the endpoint needs it.
pub fn reply(request: &Request, status: impl FnOnce() -> Status) -> Reply {
    let head_only = request.method == "HEAD";
    if request.method != "GET" && !head_only {
        return Reply::text(405, "use GET\n");
    }
    let path = crate::route::split_target(&request.target).0;
    let mut reply = match path {
        "/metrics" => {
            let s = status();
            Reply {
                code: 200,
                kind: "text/plain; version=0.0.4; charset=utf-8",
                body: crate::metrics::render(env!("CARGO_PKG_VERSION"), &s.backends),
                head_only: false,
            }
        }
        "/healthz" => Reply::text(200, "ok\n"),
        "/readyz" => readiness(&status()),
        _ => Reply::text(
            404,
            "not found: the admin endpoints are /metrics, /healthz and /readyz\n",
        ),
    };
    reply.head_only = head_only;
    reply
}

/// `/readyz`: 200 when every route has a usable backend and no shutdown is under way.
fn readiness(s: &Status) -> Reply {
    if s.shutting_down {
        return Reply::text(503, "not ready: shutting down\n");
    }
    let mut down: Vec<&str> = Vec::new();
    for (route, _, _) in &s.backends {
        let usable = s.backends.iter().any(|(r, _, up)| r == route && *up);
        if !usable && !down.contains(&route.as_str()) {
            down.push(route);
        }
    }
    if down.is_empty() {
        Reply::text(200, "ready\n")
    } else {
        Reply::text(
            503,
            &format!(
                "not ready: no usable backend (down or circuit open) for route {}\n",
                down.join(", ")
            ),
        )
    }
}

/// Writes `reply` and closes the connection gracefully.
pub async fn respond(stream: &mut Stream, reply: &Reply) {
    let reason = crate::error::reason_phrase(reply.code);
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reply.code,
        reply.kind,
        reply.body.len()
    );
    let sent = async {
        stream.write_all(head.as_bytes()).await?;
        if !reply.head_only {
            stream.write_all(reply.body.as_bytes()).await?;
        }
        stream.flush().await
    };
    if sent.await.is_ok() {
        stream.shutdown_write();
        handshake::drain(stream, Duration::from_millis(500), 64 * 1024).await;
    }
}
