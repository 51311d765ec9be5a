"""A throwaway PostgreSQL server on 127.0.0.1 for the Python tests, as the
Rust harness (tests/src/postgres.rs) makes one: Debian's initdb and postgres
(package postgresql-15) in a temporary directory, run as the `postgres` user
when the tests run as root (the server refuses root), trust auth on loopback.
"""

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

USER = "tokenwarden"


def server_bin_dir() -> Optional[Path]:
    """The newest /usr/lib/postgresql/*/bin with initdb and postgres (or $TOKENWARDEN_PG_BIN)."""
    def has_server(d: Path) -> bool:
        return (d / "postgres").exists() and (d / "initdb").exists()

    if os.environ.get("TOKENWARDEN_PG_BIN"):
        d = Path(os.environ["TOKENWARDEN_PG_BIN"])
        return d if has_server(d) else None
    root = Path("/usr/lib/postgresql")
    found = sorted(d / "bin" for d in root.iterdir() if has_server(d / "bin")) if root.is_dir() else []
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres(bin_dir: Path) -> Iterator[str]:
    """Start a server; yield its URL (database `postgres`, user `tokenwarden`); stop it."""
    tmp = Path(tempfile.mkdtemp(prefix="tokenwarden-pg-"))
    demote = None
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)

        def demote() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    env = dict(os.environ, LC_ALL="C")
    data, sock, log_path = tmp / "data", tmp / "sock", tmp / "postgres.log"
    proc = None
    try:
        subprocess.run([str(bin_dir / "initdb"), "--no-locale", "-E", "UTF8", "-A", "trust", "-U", USER,
                        "-D", str(data)], cwd=tmp, env=env, preexec_fn=demote, check=True,
                       capture_output=True, timeout=120)
        sock.mkdir()
        if demote is not None:
            os.chown(sock, pw.pw_uid, pw.pw_gid)
        port = _free_port()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={sock}", "-c", "fsync=off", "-c", "max_connections=40",
                 "-c", "shared_buffers=16MB"],
                cwd=tmp, env=env, preexec_fn=demote, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=log)
        deadline = time.monotonic() + 60
        while "ready to accept connections" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("postgres did not start:\n" + log_path.read_text()[-4000:])
            time.sleep(0.05)
        yield f"postgres://{USER}@127.0.0.1:{port}/postgres"
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(2)  # SIGINT: fast shutdown (no shared memory left behind)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
