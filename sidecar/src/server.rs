//! Listeners: the app port (HTTP/1.1 and h2c) and the admin port.
//!
//! A connection must earn its keep: its protocol must be known (the first
//! bytes: the h2 preface or anything else, HTTP/1.1) and, over HTTP/1.1,
//! each request's head must arrive within the header timeout, which also
//! closes a keep-alive connection idle that long. h2c connections are
//! pinged and closed when the peer stops answering. A request body that
//! does not finish in time is refused by the proxy (see
//! [`crate::state::Options::body_timeout`]).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::{TcpListener, TcpStream};

use crate::body::ProxyBody;

/// The HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a connection may take to say anything, and each HTTP/1.1
/// request head to arrive (and a keep-alive connection may sit idle).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Header (and first bytes, and keep-alive idle) timeout.
    pub header_timeout: Duration,
}

/// Serve `handler` on `listener` until the process ends: one task per
/// connection, `TCP_NODELAY`, HTTP/1.1 with keep-alive or h2c (prior
/// knowledge), chosen per connection from its first bytes. The handler
/// is told the peer's address.
pub async fn serve<F, Fut>(listener: TcpListener, limits: Limits, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut h1 = auto::Builder::new(TokioExecutor::new()).http1_only();
    h1.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    h2.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builders = Arc::new((h1, h2));
    loop {
        let (stream, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builders = builders.clone();
        tokio::spawn(async move {
            let Some(h2) = sniff(&stream, limits.header_timeout).await else {
                // Silent, or closed, within the header timeout.
                return;
            };
            let svc = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler(req, peer).await) }
            });
            let builder = if h2 { &builders.1 } else { &builders.0 };
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Whether the connection speaks h2c (its first bytes are the h2
/// preface); `None` when it closes or stays silent past `deadline`.
async fn sniff(stream: &TcpStream, deadline: Duration) -> Option<bool> {
    let look = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != PREFACE[..n] {
                return Some(false);
            }
            if n == PREFACE.len() {
                return Some(true);
            }
            // Part of the preface so far: peek again once more arrived.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(deadline, look).await.ok().flatten()
}
