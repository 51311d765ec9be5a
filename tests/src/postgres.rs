//! A real PostgreSQL server for the tests: `initdb` in a temporary
//! directory, then `postgres` on a free 127.0.0.1 port with its own socket
//! directory, owned by the test (so it can `kill -9` it and start it again
//! on the same data directory, which then runs crash recovery).
//!
//! The server binaries come from Debian's `postgresql-15` package
//! (`/usr/lib/postgresql/<version>/bin`; `TOKENWARDEN_PG_BIN` names another
//! directory). Without them [`Postgres::start`] returns `None` and says
//! why, so the test can skip, unless `TOKENWARDEN_REQUIRE_SERVICES=1` (CI),
//! then it panics. `initdb` and `postgres` refuse to run as root: as root
//! they run as the `postgres` user, which then owns the directory.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::process::{Proc, free_port};

/// The database user the tests connect as (trust authentication).
pub const USER: &str = "tokenwarden";

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    proc: Proc,
}

/// Whether CI demands the services (`TOKENWARDEN_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("TOKENWARDEN_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The directory holding `initdb` and `postgres`, if any.
pub fn server_bin_dir() -> Option<PathBuf> {
    let has_server = |b: &PathBuf| b.join("postgres").exists() && b.join("initdb").exists();
    if let Some(d) = std::env::var_os("TOKENWARDEN_PG_BIN") {
        return Some(PathBuf::from(d)).filter(has_server);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(has_server)
        .collect();
    found.sort();
    found.pop()
}

#[allow(clippy::expect_used, clippy::panic)]
impl Postgres {
    /// initdb and start a server; `None` (after printing why) when the
    /// binaries are missing and services are not required.
    ///
    /// # Panics
    /// When the binaries are missing and `TOKENWARDEN_REQUIRE_SERVICES=1`,
    /// or when the server cannot be set up.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = server_bin_dir() else {
            let why = "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin; \
                       Debian package postgresql-15, or set TOKENWARDEN_PG_BIN)";
            assert!(
                !services_required(),
                "{why}, and TOKENWARDEN_REQUIRE_SERVICES=1"
            );
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let owner = if is_root() {
            let ids = postgres_ids().expect("a `postgres` user to run the server as root");
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("chown the temporary directory to postgres");
            Some(ids)
        } else {
            None
        };
        let mut pg = Postgres {
            dir,
            bin,
            port: free_port(),
            owner,
            proc: Proc::default(),
        };
        let out = pg
            .command("initdb")
            .args(["--no-locale", "-E", "UTF8", "-A", "trust", "-U", USER, "-D"])
            .arg(pg.data())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sock = pg.dir.path().join("sock");
        std::fs::create_dir_all(&sock).expect("the socket directory");
        if let Some((uid, gid)) = pg.owner {
            std::os::unix::fs::chown(&sock, Some(uid), Some(gid)).expect("chown sock");
        }
        pg.run();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of the server binaries, as the right user.
    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        c.env("LC_ALL", "C").current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// Start `postgres` and wait until it accepts connections (retried
    /// while the backends of a killed server still hold its shared memory).
    fn run(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log())
                .expect("the server log");
            let from = log.metadata().map_or(0, |m| m.len());
            let child = self
                .command("postgres")
                .arg("-D")
                .arg(self.data())
                .args(["-p", &self.port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!(
                    "unix_socket_directories={}",
                    self.dir.path().join("sock").display()
                ))
                .args(["-c", "fsync=off", "-c", "max_connections=40"])
                .args(["-c", "shared_buffers=16MB"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn postgres");
            self.proc = Proc(Some(child));
            if self.wait_ready(from, deadline) {
                return;
            }
            self.proc.kill9();
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_ready(&mut self, from: u64, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            let log = std::fs::read(self.log()).unwrap_or_default();
            let new = log
                .get(usize::try_from(from).unwrap_or(0)..)
                .unwrap_or_default();
            if String::from_utf8_lossy(new).contains("ready to accept connections") {
                return true;
            }
            if let Some(c) = self.proc.0.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `postgres` as [`USER`].
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The same with a password in it (trust authentication ignores it):
    /// for tests that check it is never printed.
    pub fn url_with_password(&self, password: &str) -> String {
        format!(
            "postgres://{USER}:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// `kill -9` the postmaster (its backends notice and exit).
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Start again on the same data directory (crash recovery if killed).
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.run();
    }

    /// The data directory (for tests that look at it).
    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }
}

impl Drop for Postgres {
    /// A fast shutdown (SIGINT: clients disconnected, shared memory
    /// released), SIGKILL after 10 s. (A `kill -9`ed server leaves its
    /// small System V segment behind until a restart on the same data
    /// directory reuses it; the restart in [`Postgres::restart`] does.)
    fn drop(&mut self) {
        if let Some(c) = self.proc.0.as_ref() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
        }
        let _ = self.proc.terminate_after_signal(Duration::from_secs(10));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}
