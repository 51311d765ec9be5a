#!/usr/bin/env python3
"""The timing client of bench/semantic_cache.sh (standard library only).

    python3 bench/semantic_cache.py --urls direct=URL,off=URL,... --embedder URL \
        --rounds 5 --n 200 --n-semantic 60 --out DIR

One request in flight over one keep-alive connection per path (the latency of a lone request).
Per round, every path in turn (interleaved, so a round's paths are seconds apart); per path
and round p50/p99 of the wall time of request + full response. Paths and their bodies:

  direct, off, exact-hit   the same one-question chat completion every time
  sem-hit                  "How can I reset my password?" every time, after one
                           "How do I reset my password?" filled the index (cosine 0.9917):
                           an exact miss, an embedding call, the lookup, a semantic hit
  sem-miss                 a new question every time ("Ticket N: ..."), never seen before: an
                           exact miss, an embedding call, the lookup over every entry so far
                           (the index grows by one per request), the upstream call, the store
  embedder                 POST /v1/embeddings of the sem-miss texts to the embedder directly

Every response's `x-tokenwarden-cache` (and the similarity header) is checked against what the
path must be; a wrong one stops the run. Writes rounds.tsv and prints the summary.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.parse

SYSTEM = "You are the help-desk assistant of an online shop. Answer in two sentences."
FILL = "How do I reset my password?"
PARAPHRASE = "How can I reset my password?"
TOPICS = [
    "my parcel has not arrived yet",
    "the invoice shows the wrong address",
    "I was charged twice for one order",
    "the discount code is rejected at checkout",
    "the app logs me out after a minute",
]


def chat(text: str) -> bytes:
    return json.dumps({
        "model": "gpt-4o-mini", "max_tokens": 300, "temperature": 0,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
    }).encode()


class Client:
    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        if u.hostname not in ("127.0.0.1", "localhost"):
            raise SystemExit("refusing non-loopback target %r" % url)
        self.host, self.port, self.path = u.hostname, u.port, u.path
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def post(self, body: bytes) -> tuple[float, int, dict]:
        t0 = time.perf_counter()
        self.conn.request("POST", self.path, body, {
            "Content-Type": "application/json", "Authorization": "Bearer sk-app-placeholder"})
        r = self.conn.getresponse()
        r.read()
        dt = time.perf_counter() - t0
        return dt, r.status, {k.lower(): v for k, v in r.getheaders()}


class Path:
    """A path: its client, how to make its i-th body, and what its answer must say."""

    def __init__(self, name: str, url: str):
        self.name, self.client, self.i = name, Client(url), 0

    def body(self) -> bytes:
        self.i += 1
        if self.name == "sem-hit":
            return chat(PARAPHRASE)
        if self.name == "sem-miss":
            return chat("Ticket %d: %s, what should I do?" % (100000 + self.i, TOPICS[self.i % 5]))
        if self.name == "embedder":
            text = "Ticket %d: %s, what should I do?" % (900000 + self.i, TOPICS[self.i % 5])
            return json.dumps({"model": "all-minilm-l6-v2", "input": text}).encode()
        return chat(FILL)

    def check(self, status: int, h: dict) -> None:
        cache, sim = h.get("x-tokenwarden-cache"), h.get("x-tokenwarden-cache-similarity")
        want = {"direct": (None, False), "embedder": (None, False), "off": (None, False),
                "exact-hit": ("hit", False), "sem-hit": ("hit", True),
                "sem-miss": ("miss", False)}[self.name]
        if status != 200 or cache != want[0] or (sim is not None) != want[1]:
            raise SystemExit("%s: want 200, x-tokenwarden-cache %s, similarity %s; got %d %s %s"
                             % (self.name, want[0], want[1], status, cache, sim))

    def run(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            dt, status, h = self.client.post(self.body())
            self.check(status, h)
            out.append(dt)
        return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", required=True, help="name=url,... (direct, off, exact-hit, sem-hit, sem-miss)")
    ap.add_argument("--embedder", required=True, help="the embedder's /v1/embeddings URL")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=200, help="requests per round: direct, off, exact-hit")
    ap.add_argument("--n-semantic", type=int, default=60, help="requests per round: sem-*, embedder")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    urls = dict(kv.split("=", 1) for kv in a.urls.split(","))
    paths = [Path(k, urls[k]) for k in ("direct", "off", "exact-hit", "sem-hit", "sem-miss")]
    paths.append(Path("embedder", a.embedder))
    # fill: the exact entry and the index entry the hits are answered from
    for p in paths:
        if p.name == "exact-hit":
            p.client.post(chat(FILL))
        if p.name == "sem-hit":
            _, status, h = p.client.post(chat(FILL))
            if status != 200 or h.get("x-tokenwarden-cache") != "miss":
                raise SystemExit("sem-hit fill: %d %s" % (status, h.get("x-tokenwarden-cache")))
    for p in paths:
        p.run(a.warmup)
    rows = []
    for r in range(1, a.rounds + 1):
        for p in paths:
            n = a.n if p.name in ("direct", "off", "exact-hit") else a.n_semantic
            xs = p.run(n)
            rows.append((r, p.name, len(xs), pct(xs, 50) * 1e6, pct(xs, 99) * 1e6))
        print("[semantic-bench] round %d done" % r, file=sys.stderr)
    with open(a.out + "/rounds.tsv", "w") as f:
        f.write("round\tpath\tok\tp50_us\tp99_us\n")
        for row in rows:
            f.write("%d\t%s\t%d\t%.1f\t%.1f\n" % row)
    summarize(rows, a.rounds)


def summarize(rows, rounds: int) -> None:
    by = {(r, p): (p50, p99) for r, p, _, p50, p99 in rows}
    added = ["off", "exact-hit", "sem-hit", "sem-miss"]
    print("\nper round: p50 over direct (µs) of each path, the embedder's own p50, and ratios")
    head = ["round", "direct p50"] + ["+%s" % p for p in added] + [
        "embedder p50", "sem-hit/off", "sem-miss-embedder"]
    print("  " + "  ".join("%12s" % h for h in head))
    cols: dict[str, list[float]] = {h: [] for h in head[1:]}
    for r in range(1, rounds + 1):
        d = by[(r, "direct")][0]
        add = {p: by[(r, p)][0] - d for p in added}
        emb = by[(r, "embedder")][0]
        vals = [d] + [add[p] for p in added] + [emb, add["sem-hit"] / add["off"],
                                                add["sem-miss"] - emb]
        for h, v in zip(head[1:], vals):
            cols[h].append(v)
        print("  " + "  ".join("%12s" % x for x in [r] + ["%.1f" % v for v in vals]))
    print("  " + "  ".join("%12s" % x for x in ["median"] + [
        "%.1f" % statistics.median(cols[h]) for h in head[1:]]))
    print("\np99 over direct p99 (µs), median over rounds:")
    for p in added + ["embedder"]:
        v = statistics.median(by[(r, p)][1] - (0 if p == "embedder" else by[(r, "direct")][1])
                              for r in range(1, rounds + 1))
        print("  %-10s %10.1f%s" % (p, v, "  (absolute)" if p == "embedder" else ""))


if __name__ == "__main__":
    main()
