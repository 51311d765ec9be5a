//! Plain HTTP/1.1 probes of a process's admin port (std only, no runtime):
//! one GET, waiting for a 200, waiting for a port to listen.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// `GET path` over plain HTTP/1.1 with a read timeout of `timeout`:
/// (status, body); `None` when nothing answers.
pub fn http_get_within(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf.get(9..12)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// [`http_get_within`] with a 5 s read timeout.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_within(addr, path, Duration::from_secs(5))
}

/// Wait until `GET path` answers 200, within `secs`.
///
/// # Panics
/// When it does not.
pub fn wait_http(addr: SocketAddr, path: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some((200, _)) = http_get_within(addr, path, Duration::from_millis(500)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr}{path} never returned 200 within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until something accepts connections on 127.0.0.1:`port`, within `secs`.
///
/// # Panics
/// When nothing does.
pub fn wait_listening(port: u16, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {secs} s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` with `headers` over `io`, one end of an in-memory connection
/// whose other end a server under test serves (so its peer address can be
/// anything): (status, headers, body).
///
/// # Panics
/// When the exchange fails or the body is not UTF-8.
#[allow(clippy::expect_used)]
pub async fn get_over<IO>(
    io: IO,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt as _;
    let mut req = http::Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a request");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .expect("an HTTP/1 handshake");
    tokio::spawn(conn);
    let resp = send.send_request(req).await.expect("a response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("a body").to_bytes();
    (
        status,
        headers,
        String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
    )
}
