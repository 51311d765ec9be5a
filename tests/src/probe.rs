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
