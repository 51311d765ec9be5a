//! A real Redis server for the tests: Debian's `redis-server` (package
//! `redis-server`; `TOKENWARDEN_REDIS_SERVER` names another binary) on a
//! free 127.0.0.1 port, in the foreground as a child of the test, with no
//! persistence (`--save '' --appendonly no`), so the test can stop it, hang
//! it (SIGSTOP), and start it again on the same port.
//!
//! Without the binary [`Redis::start`] returns `None` and says why, so the
//! test can skip, unless `TOKENWARDEN_REQUIRE_SERVICES=1` (CI), then it
//! panics.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    postgres::services_required,
    process::{Proc, free_port},
};

/// How a test wants its server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass` (the `default` user's password).
    pub password: Option<String>,
    /// `maxmemory`, e.g. `2mb`, with `maxmemory-policy` [`Self::policy`].
    pub maxmemory: Option<String>,
    /// `maxmemory-policy` (default `noeviction`, Redis's own default).
    pub policy: Option<String>,
    /// TLS only: no plain port, `--tls-port` with this certificate.
    pub tls: Option<RedisTls>,
}

/// The server's TLS certificate (e.g. from [`crate::tls::TestCa`]).
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// The server's certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// The CA that signed it, PEM (for `redis-cli`; clients are not asked
    /// for certificates).
    pub ca_pem: String,
}

/// A running Redis server.
#[derive(Debug)]
pub struct Redis {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    opts: RedisOptions,
    proc: Proc,
    stopped: bool,
}

/// The `redis-server` binary, if installed.
pub fn server_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("TOKENWARDEN_REDIS_SERVER") {
        return Some(PathBuf::from(b)).filter(|p| p.exists());
    }
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[allow(clippy::expect_used, clippy::panic)]
impl Redis {
    /// Start a server; `None` (after printing why) when `redis-server` is
    /// missing and services are not required.
    ///
    /// # Panics
    /// When the binary is missing and `TOKENWARDEN_REQUIRE_SERVICES=1`, or
    /// the server does not answer within 10 s.
    pub fn start(opts: RedisOptions) -> Option<Redis> {
        let Some(bin) = server_bin() else {
            let why = "redis-server not found (/usr/bin/redis-server; Debian package \
                       redis-server, or set TOKENWARDEN_REDIS_SERVER)";
            assert!(
                !services_required(),
                "{why}, and TOKENWARDEN_REQUIRE_SERVICES=1"
            );
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let mut r = Redis {
            bin,
            dir: tempfile::tempdir().expect("a temporary directory"),
            port: free_port(),
            opts,
            proc: Proc::default(),
            stopped: false,
        };
        r.run();
        Some(r)
    }

    fn run(&mut self) {
        let mut c = Command::new(&self.bin);
        if let Some(t) = &self.opts.tls {
            let d = self.dir.path();
            for (name, pem) in [
                ("server.crt", &t.cert_pem),
                ("server.key", &t.key_pem),
                ("ca.crt", &t.ca_pem),
            ] {
                std::fs::write(d.join(name), pem).expect("write a TLS file");
            }
            c.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(d.join("server.crt"))
                .arg("--tls-key-file")
                .arg(d.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            c.args(["--port", &self.port.to_string()]);
        }
        c.args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        if let Some(p) = &self.opts.password {
            c.args(["--requirepass", p]);
        }
        if let Some(m) = &self.opts.maxmemory {
            c.args(["--maxmemory", m]).args([
                "--maxmemory-policy",
                self.opts.policy.as_deref().unwrap_or("noeviction"),
            ]);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.proc = Proc(Some(child));
        self.stopped = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["PING"]).is_some_and(|o| o.contains("PONG")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!(
            "redis-server on port {} did not answer: {}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
        );
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`, or `rediss://…` with TLS (never with
    /// the password).
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// Run `redis-cli` (authenticated) and return its stdout; `None` when
    /// it could not run or failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let mut c = Command::new(self.bin.with_file_name("redis-cli"));
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.opts.tls.is_some() {
            c.arg("--tls")
                .arg("--cacert")
                .arg(self.dir.path().join("ca.crt"));
        }
        if let Some(p) = &self.opts.password {
            c.env("REDISCLI_AUTH", p);
        }
        let out = c.args(args).stdin(Stdio::null()).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stop the server (SIGKILL: what a crashed or evicted pod looks like).
    pub fn stop(&mut self) {
        self.cont();
        self.proc.kill9();
    }

    /// Start it again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Hang it: SIGSTOP (connections stay open, nothing answers).
    pub fn pause(&mut self) {
        self.signal("-STOP");
        self.stopped = true;
    }

    /// Resume after [`Redis::pause`].
    pub fn cont(&mut self) {
        if self.stopped {
            self.signal("-CONT");
            self.stopped = false;
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.proc.0 {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // A stopped process does not die of SIGKILL until continued.
        self.cont();
    }
}
