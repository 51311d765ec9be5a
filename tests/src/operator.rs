//! The real operator binary as a child process: its ports, its command
//! line (built from the flags the tests share), restart on the same ports
//! and state, and waiting until it listens or is ready.

use std::{
    ffi::OsString,
    fs::OpenOptions,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{
    probe::{wait_http, wait_listening},
    process::{Proc, free_port, workspace_bin},
};

/// Where the operator's stderr goes.
#[derive(Debug, Clone)]
pub enum Stderr {
    /// The test's own stderr.
    Inherit,
    /// Discarded.
    Null,
    /// Appended to this file (kept across restarts).
    Append(PathBuf),
}

/// An operator process (not started until [`Operator::spawn`]).
pub struct Operator {
    /// The binary.
    pub bin: PathBuf,
    /// The gRPC control port (127.0.0.1).
    pub grpc: u16,
    /// The admin port (127.0.0.1).
    pub admin: u16,
    /// The flags.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(OsString, OsString)>,
    /// `RUST_LOG` (default `warn`).
    pub rust_log: String,
    /// Where stderr goes (default: inherited).
    pub stderr: Stderr,
    /// The running process.
    pub proc: Proc,
}

impl Operator {
    /// The workspace's operator binary, on two free ports, no flags yet.
    pub fn new() -> Operator {
        Self::with_bin(workspace_bin("tokenwarden-operator"))
    }

    /// `bin`, on two free ports, no flags yet.
    pub fn with_bin(bin: PathBuf) -> Operator {
        Operator {
            bin,
            grpc: free_port(),
            admin: free_port(),
            args: Vec::new(),
            env: Vec::new(),
            rust_log: "warn".into(),
            stderr: Stderr::Inherit,
            proc: Proc(None),
        }
    }

    /// Local mode in `dir` as the tests lay it out: objects in
    /// `dir/objects`, the shared secret in `dir/secret`, state in `state`;
    /// listening on its ports; statuses every 200 ms.
    pub fn local(dir: &Path, state: &Path) -> Operator {
        let mut op = Self::new();
        op.arg("--local-dir")
            .arg(dir.join("objects"))
            .arg("--shared-secret-file")
            .arg(dir.join("secret"))
            .arg("--state-dir")
            .arg(state)
            .listen()
            .args(["--status-interval-ms", "200"]);
        op
    }

    /// Add one flag or value.
    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut Operator {
        self.args.push(a.into());
        self
    }

    /// Add flags and values.
    pub fn args<I, S>(&mut self, args: I) -> &mut Operator
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--grpc-listen` and `--admin-listen` on its ports.
    pub fn listen(&mut self) -> &mut Operator {
        let (grpc, admin) = (self.grpc, self.admin);
        self.args([
            "--grpc-listen".to_string(),
            format!("127.0.0.1:{grpc}"),
            "--admin-listen".to_string(),
            format!("127.0.0.1:{admin}"),
        ])
    }

    /// Set an environment variable.
    pub fn env(&mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> &mut Operator {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The command line, ready to run.
    ///
    /// # Panics
    /// When the stderr file cannot be opened.
    #[allow(clippy::expect_used)]
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null());
        match &self.stderr {
            Stderr::Inherit => cmd.stderr(Stdio::inherit()),
            Stderr::Null => cmd.stderr(Stdio::null()),
            Stderr::Append(p) => cmd.stderr(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("the operator's log file"),
            ),
        };
        cmd
    }

    /// Start it (again, on the same ports and flags).
    ///
    /// # Panics
    /// When it cannot be started.
    #[allow(clippy::expect_used)]
    pub fn spawn(&mut self) -> &mut Operator {
        let child = self.command().spawn().expect("the operator starts");
        self.proc = Proc(Some(child));
        self
    }

    /// Wait (20 s) until the admin port accepts connections.
    pub fn wait_listening(&self) {
        wait_listening(self.admin, 20);
    }

    /// Wait (20 s) until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        wait_http(self.admin_addr(), "/readyz", 20);
    }

    /// `http://127.0.0.1:GRPC`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}
