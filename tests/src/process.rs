//! Child processes and ports for the black-box tests.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

/// A free port on 127.0.0.1 for a process the test starts (bound, then
/// released, so the child can bind it).
///
/// Ports come from below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), so no outgoing connection
/// of a parallel test can take the port between this call and the child's
/// bind: `bind(127.0.0.1:0)` hands out ephemeral ports, which `connect()`
/// also uses, and that race made tests fail with "Address already in use".
/// Each port is also reserved across test processes by an advisory lock
/// on a file under the temp dir, held until this process exits. Falls back
/// to `bind(0)` where the range leaves no room below it.
///
/// # Panics
/// When no port can be bound.
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    reserved_port().unwrap_or_else(|| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port()
    })
}

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A port below the ephemeral range, bindable now and locked for this
/// process; `None` when there is no such range or it is exhausted.
fn reserved_port() -> Option<u16> {
    use std::sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    };
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const SPAN: u32 = 12_000;
    let end = u32::from(ephemeral_start());
    let start = end.checked_sub(SPAN).filter(|s| *s >= 1024)?;
    let dir = std::env::temp_dir().join("tokenwarden-test-ports");
    std::fs::create_dir_all(&dir).ok()?;
    // Processes start at different offsets so they rarely contend.
    let offset = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(start + (offset + i) % SPAN).ok()?;
        let Ok(file) = std::fs::File::create(dir.join(port.to_string())) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // another live test process holds it
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        HELD.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(file);
        return Some(port);
    }
    None
}

/// The workspace binary `name` in the profile directory of the running test
/// (`target/debug/deps/<test>` → `target/debug/<name>`), for tests of a
/// package that does not build it: `cargo test --workspace` builds every
/// binary there.
///
/// # Panics
/// When it was not built, or the test's own path is unknown.
#[allow(clippy::expect_used)]
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let mut dir = exe.parent().expect("the test's directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: run the workspace tests (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// A child process, killed with SIGKILL when dropped.
#[derive(Debug, Default)]
pub struct Proc(pub Option<Child>);

impl Proc {
    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `within` for the exit (SIGKILL after that,
    /// and `None`).
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let c = self.0.as_ref()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        self.terminate_after_signal(within)
    }

    /// Wait up to `within` for the exit the caller asked for with a signal
    /// (SIGKILL after that, and `None`).
    pub fn terminate_after_signal(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut c = self.0.take()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    /// The ports are outside the range `connect()` takes source ports
    /// from, distinct within a process, and locked against other test
    /// processes (a second locker of the same file is refused).
    #[test]
    fn free_ports_avoid_the_ephemeral_range_and_are_reserved() {
        let eph = ephemeral_start();
        let ports: Vec<u16> = (0..64).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice");
        assert!(
            ports.iter().all(|p| *p < eph),
            "ports {ports:?} reach the ephemeral range starting at {eph}"
        );
        let dir = std::env::temp_dir().join("tokenwarden-test-ports");
        for p in &ports {
            let f = std::fs::File::open(dir.join(p.to_string())).expect("its lock file");
            assert!(f.try_lock().is_err(), "port {p} is not locked");
        }
    }
}
