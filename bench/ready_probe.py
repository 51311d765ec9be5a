#!/usr/bin/env python3
"""Time to ready: from spawn to the first HTTP 200 of a readiness URL (stdlib).

For each trial: take the time, spawn the command (pinned to CPU with sched_setaffinity in
the child before exec, so no `taskset` exec is counted), poll the URL every POLL_MS with a
fresh connection (a refused connection retries after the pause; an accepted one waits for
the answer), record the elapsed time at the first 200, then SIGTERM the child (SIGKILL after
5 s) and reap it. The first trial pays cold page-cache costs; the report gives min/p50/max.

usage: ready_probe.py TRIALS CPU URL POLL_MS LOGFILE -- CMD [ARGS...]  -> JSON on stdout
"""
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from httpmini import loopback_target  # noqa: E402


def status_of(host, port, path):
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                       % (path, host, port)).encode())
            head = b""
            while b"\r\n" not in head:
                d = s.recv(4096)
                if not d:
                    return None
                head += d
            return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


def main():
    sep = sys.argv.index("--")
    trials, cpu, url, poll_ms, logfile = sys.argv[1:sep]
    cmd = sys.argv[sep + 1:]
    trials, cpu, poll = int(trials), int(cpu), float(poll_ms) / 1000.0
    host, port, path = loopback_target(url)
    times, failures, polls = [], 0, []
    with open(logfile, "ab") as log:
        for _ in range(trials):
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
            n, ready = 0, None
            while time.perf_counter() - t0 < 10.0 and p.poll() is None:
                n += 1
                if status_of(host, port, path) == 200:
                    ready = time.perf_counter() - t0
                    break
                time.sleep(poll)
            if ready is None:
                failures += 1
            else:
                times.append(ready * 1000.0)
                polls.append(n)
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            time.sleep(0.05)
    s = sorted(times)
    print(json.dumps({
        "trials": trials, "failures": failures, "poll_ms": float(poll_ms),
        "ms": [round(t, 2) for t in times],
        "min_ms": round(s[0], 2) if s else None,
        "p50_ms": round(s[(len(s) - 1) // 2], 2) if s else None,
        "max_ms": round(s[-1], 2) if s else None,
        "polls_p50": sorted(polls)[(len(polls) - 1) // 2] if polls else None,
    }))


if __name__ == "__main__":
    main()
