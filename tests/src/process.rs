//! Child processes and ports for the black-box tests.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

/// A free port on 127.0.0.1 (bound, then released).
///
/// # Panics
/// When no port can be bound.
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
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
