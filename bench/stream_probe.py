#!/usr/bin/env python3
"""Time to first event of streaming chat completions, one stream after another (stdlib).

Sends WARMUP + N streaming POST /v1/chat/completions over one keep-alive connection
(reconnecting after an error) and times, from just before the request is written:
  first_event  - the first SSE `data:` event (the TTFT an app's SDK sees: the role chunk)
  first_token  - the first event with non-empty delta.content
  done         - `data: [DONE]`
A buffering proxy shows first_event close to done. The client's own cost is the same on
every path, so differences between paths are what the proxy adds.

PROBE_GAP_MS (env, default 0): idle time before each request, to see what a proxy pays when
it wakes up cold (the paced upstream leaves it idle between chunks and streams).

usage: stream_probe.py URL N WARMUP [HEADER:VALUE ...]   -> one JSON object on stdout
"""
import json
import math
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from httpmini import (ResponseParser, SseSplitter, has_content,  # noqa: E402
                      loopback_target, request_bytes, stream_body)


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100.0 * len(xs)) - 1))]


def one(sock, req):
    """-> (first_event_s, first_token_s, done_s, events, status) or raises OSError/ValueError."""
    parser, sse = ResponseParser(), SseSplitter()
    first = tok = done = None
    events = 0
    t0 = time.perf_counter()
    sock.sendall(req)
    while not parser.done:
        data = sock.recv(262144)
        now = time.perf_counter()
        if not data:
            if parser.eof():
                break
            raise OSError("connection closed mid-response")
        for payload in sse.feed(parser.feed(data)):
            events += 1
            if first is None:
                first = now - t0
            if payload == b"[DONE]":
                done = now - t0
            elif tok is None and has_content(payload):
                tok = now - t0
    return first, tok, done, events, parser.status


def main():
    url, n, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    headers = [tuple(h.split(":", 1)) for h in sys.argv[4:]]
    host, port, path = loopback_target(url)
    req = request_bytes(host, port, path, stream_body(), headers)
    deadline = time.monotonic() + float(os.environ.get("PROBE_MAX_SECONDS", "600"))
    gap = float(os.environ.get("PROBE_GAP_MS", "0")) / 1000.0
    fe, ft, dn, evs, errors, reasons = [], [], [], [], 0, {}
    sock = None
    for i in range(warm + n):
        if time.monotonic() > deadline:
            reasons["probe time limit"] = reasons.get("probe time limit", 0) + 1
            break
        if gap:
            time.sleep(gap)
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first, tok, done, events, status = one(sock, req)
            if status != 200 or done is None:
                why = "status %s" % status if status != 200 else "no [DONE]"
                raise ValueError(why)
            if i >= warm:
                fe.append(first * 1e6)
                if tok is not None:
                    ft.append(tok * 1e6)
                dn.append(done * 1e6)
                evs.append(events)
        except (OSError, ValueError) as e:
            if i >= warm:
                errors += 1
                reasons[str(e)[:80]] = reasons.get(str(e)[:80], 0) + 1
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    out = {"n": len(fe), "errors": errors, "error_reasons": reasons,
           "events_per_stream": pct(evs, 50)}
    for name, xs in (("first_event", fe), ("first_token", ft), ("done", dn)):
        for p in (50, 90, 99):
            v = pct(xs, p)
            out["%s_p%d_us" % (name, p)] = None if v is None else round(v)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
