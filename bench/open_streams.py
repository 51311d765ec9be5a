#!/usr/bin/env python3
"""Hold N streaming chat completions open at once and check every one ends cleanly (stdlib).

Opens N connections (in batches, so the ramp takes well under a stream's length), sends a
paced streaming request on each (`x-bench-mock: paced`, CHUNKS chunks INTERVAL_MS apart:
the stream lasts CHUNKS*INTERVAL_MS), and reads each to `data: [DONE]` and the end of the
chunked body. A stream is clean when it got status 200, exactly CHUNKS+4 `data:` events
(role, CHUNKS tokens, finish, usage, [DONE]) and a complete body. Also reports how many were
open at the same time (first event seen, [DONE] not yet).

usage: open_streams.py URL N CHUNKS INTERVAL_MS [TIME_LIMIT_S]  -> one JSON object on stdout
"""
import asyncio
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from httpmini import ResponseParser, SseSplitter, loopback_target, request_bytes, stream_body  # noqa: E402

BATCH = 100
BATCH_GAP_S = 0.03


class State:
    def __init__(self):
        self.open = 0
        self.max_open = 0
        self.t_max_open = None
        self.results = {}


async def one(st, host, port, req, expect, t0):
    parser, sse = ResponseParser(), SseSplitter()
    events, first, done = 0, False, False
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(req)
        await writer.drain()
        while not parser.done:
            data = await reader.read(65536)
            if not data:
                if parser.eof():
                    break
                raise ConnectionError("closed mid-stream")
            for payload in sse.feed(parser.feed(data)):
                events += 1
                if not first:
                    first = True
                    st.open += 1
                    if st.open > st.max_open:
                        st.max_open, st.t_max_open = st.open, time.monotonic() - t0
                if payload == b"[DONE]":
                    done = True
                    st.open -= 1
        if parser.status != 200:
            return "status %s" % parser.status
        if not done:
            return "no [DONE]"
        if events != expect:
            return "%d events, expected %d" % (events, expect)
        return "ok"
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        if first and not done:
            st.open -= 1
        return (type(e).__name__ + ": " + str(e))[:80]
    finally:
        if writer is not None:
            writer.close()


async def main():
    url, n, chunks, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    limit = float(sys.argv[5]) if len(sys.argv) > 5 else 120.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    host, port, path = loopback_target(url)
    req = request_bytes(host, port, path, stream_body(),
                        [("x-bench-mock", "paced"), ("x-bench-chunks", str(chunks)),
                         ("x-bench-interval-ms", str(interval))])
    st = State()
    t0 = time.monotonic()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(one(st, host, port, req, chunks + 4, t0)))
        if (i + 1) % BATCH == 0:
            await asyncio.sleep(BATCH_GAP_S)
    ramp = time.monotonic() - t0
    done, pending = await asyncio.wait(tasks, timeout=max(1.0, limit - ramp))
    for t in pending:
        t.cancel()
    reasons = {}
    ok = 0
    for t in tasks:
        r = t.result() if t in done else "time limit"
        if r == "ok":
            ok += 1
        else:
            reasons[r] = reasons.get(r, 0) + 1
    print(json.dumps({
        "n": n, "ok": ok, "errors": n - ok, "error_reasons": reasons,
        "max_open": st.max_open,
        "all_open_at_s": round(st.t_max_open, 3) if st.t_max_open is not None else None,
        "ramp_s": round(ramp, 3), "wall_s": round(time.monotonic() - t0, 3),
        "stream_s": chunks * interval / 1000.0,
    }))


if __name__ == "__main__":
    asyncio.run(main())
