"""Minimal HTTP/1.1 response parsing and SSE event splitting for the bench clients (stdlib).

The stream probes time the arrival of bytes themselves, so they speak HTTP over raw sockets
instead of going through http.client's buffering: ResponseParser turns received bytes into
body bytes (chunked, Content-Length or close-delimited), SseSplitter turns body bytes into
`data:` payloads.
"""
import json
import urllib.parse


def loopback_target(url):
    """(host, port, path) of an http:// URL on loopback; refuses anything else."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("refusing non-loopback target %r" % url)
    return u.hostname, u.port or 80, u.path or "/"


def request_bytes(host, port, path, body, headers=()):
    lines = ["POST %s HTTP/1.1" % path, "Host: %s:%d" % (host, port),
             "Content-Type: application/json", "Authorization: Bearer sk-app-placeholder",
             "Content-Length: %d" % len(body)]
    lines.extend("%s: %s" % kv for kv in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def stream_body(model="gpt-4o-mini", text="Say hello."):
    return json.dumps({"model": model, "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": text}]},
                      separators=(",", ":")).encode()


class ResponseParser:
    """Feed received bytes; get body bytes back. `status`, `headers`, `done` as they become known."""

    def __init__(self):
        self.buf = b""
        self.status = None
        self.headers = {}
        self.done = False
        self._mode = None      # "chunked" | "length" | "close"
        self._left = 0         # bytes left of the current chunk / of the body
        self._cstate = "size"  # chunked: size | data | crlf | trailer

    def feed(self, data):
        self.buf += data
        out = []
        if self.status is None:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return b""
            head, self.buf = self.buf[:i].decode("latin-1"), self.buf[i + 4:]
            lines = head.split("\r\n")
            self.status = int(lines[0].split(" ", 2)[1])
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                self.headers[k.strip().lower()] = v.strip()
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                self._mode = "chunked"
            elif "content-length" in self.headers:
                self._mode, self._left = "length", int(self.headers["content-length"])
                self.done = self._left == 0
            else:
                self._mode = "close"
        if self._mode == "length":
            take = self.buf[:self._left]
            self.buf = self.buf[len(take):]
            self._left -= len(take)
            self.done = self._left == 0
            return take
        if self._mode == "close":
            take, self.buf = self.buf, b""
            return take
        while not self.done:
            if self._cstate == "size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                self._left = int(self.buf[:i].split(b";")[0], 16)
                self.buf = self.buf[i + 2:]
                self._cstate = "data" if self._left else "trailer"
            elif self._cstate == "data":
                take = self.buf[:self._left]
                self.buf = self.buf[len(take):]
                self._left -= len(take)
                out.append(take)
                if self._left:
                    break
                self._cstate = "crlf"
            elif self._cstate == "crlf":
                if len(self.buf) < 2:
                    break
                self.buf = self.buf[2:]
                self._cstate = "size"
            else:  # trailer: lines until an empty one
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                if not line:
                    self.done = True
        return b"".join(out)

    def eof(self):
        """The peer closed: a close-delimited body ends here; others are cut."""
        if self._mode == "close":
            self.done = True
        return self.done


class SseSplitter:
    """Feed body bytes; get the payloads of complete `data:` events back."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        self.buf += data.replace(b"\r\n", b"\n") if b"\r" in data else data
        out = []
        while True:
            i = self.buf.find(b"\n\n")
            if i < 0:
                return out
            block, self.buf = self.buf[:i], self.buf[i + 2:]
            parts = [ln[5:].lstrip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
            if parts:
                out.append(b"\n".join(parts))


def has_content(payload):
    """True when an OpenAI chunk carries a non-empty delta.content."""
    if payload == b"[DONE]" or b'"content"' not in payload:
        return False
    try:
        ch = json.loads(payload).get("choices") or []
    except ValueError:
        return False
    return bool(ch and (ch[0].get("delta") or {}).get("content"))
