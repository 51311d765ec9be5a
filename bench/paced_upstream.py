#!/usr/bin/env python3
"""Paced SSE upstream for the tokenwarden benchmark (stdlib asyncio, 127.0.0.1 only).

POST .../chat/completions -> an OpenAI chat-completion stream sent over time, chunked:
    role chunk (at once), CHUNKS content chunks INTERVAL_MS apart, finish chunk,
    usage chunk, `data: [DONE]`  => CHUNKS + 4 `data:` events.
The pacing can be set per request with the headers `x-bench-chunks` and
`x-bench-interval-ms` (they pass through every proxy under test unchanged), so one
server serves both the 50 x 20 ms TTFT probe and the long-lived 1000-open-streams check.
A request without `"stream": true` gets a fixed chat.completion JSON.
GET /health -> ok. Any Authorization is accepted.

Pacing is what makes response buffering visible: a proxy that holds the stream back
shows a time to first event close to the stream's whole length.

usage: paced_upstream.py PORT [DEFAULT_CHUNKS] [DEFAULT_INTERVAL_MS]
"""
import asyncio
import json
import sys

HOST = "127.0.0.1"


def ev(obj):
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def chunk(payload):
    return b"%x\r\n%s\r\n" % (len(payload), payload)


BASE = {"id": "chatcmpl-paced", "object": "chat.completion.chunk",
        "created": 1700000000, "model": "gpt-4o-mini"}
ROLE = chunk(ev(dict(BASE, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}])))
FINISH = chunk(ev(dict(BASE, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])))
DONE = chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
TOKENS = [chunk(ev(dict(BASE, choices=[{"index": 0, "delta": {"content": " tok%d" % i},
                                        "finish_reason": None}]))) for i in range(1000)]
FULL = json.dumps({
    "id": "chatcmpl-paced", "object": "chat.completion", "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}, separators=(",", ":")).encode()


def usage(n):
    return chunk(ev(dict(BASE, choices=[], usage={"prompt_tokens": 12, "completion_tokens": n,
                                                  "total_tokens": 12 + n})))


class Server:
    def __init__(self, chunks, interval_ms):
        self.chunks = chunks
        self.interval_ms = interval_ms

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                hdr = {}
                for ln in lines[1:]:
                    k, sep, v = ln.partition(":")
                    if sep:
                        hdr[k.strip().lower()] = v.strip()
                body = b""
                if "chunked" in hdr.get("transfer-encoding", "").lower():
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        data = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += data[:-2]
                else:
                    n = int(hdr.get("content-length", "0") or 0)
                    if n:
                        body = await reader.readexactly(n)
                if method == "GET" and path == "/health":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: 2\r\n\r\nok")
                elif method == "POST" and path.endswith("/chat/completions"):
                    try:
                        stream = bool(json.loads(body or b"{}").get("stream"))
                    except ValueError:
                        stream = False
                    if stream:
                        n = min(1000, int(hdr.get("x-bench-chunks", self.chunks)))
                        gap = int(hdr.get("x-bench-interval-ms", self.interval_ms)) / 1000.0
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     + ROLE)
                        await writer.drain()
                        for i in range(n):
                            await asyncio.sleep(gap)
                            writer.write(TOKENS[i])
                            await writer.drain()
                        writer.write(FINISH + usage(n) + DONE)
                    else:
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: %d\r\n\r\n%s" % (len(FULL), FULL))
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                if hdr.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def main():
    port = int(sys.argv[1])
    srv = Server(int(sys.argv[2]) if len(sys.argv) > 2 else 50,
                 int(sys.argv[3]) if len(sys.argv) > 3 else 20)
    server = await asyncio.start_server(srv.handle, HOST, port, backlog=8192)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
