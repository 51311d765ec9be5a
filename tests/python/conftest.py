"""Fixtures for the SDK compatibility tests: a fake provider and tokenwarden sidecars.

The official `openai` and `anthropic` Python SDKs talk to a real `tokenwarden-sidecar` process
(standalone mode: a policy file and a secrets dir written here), which forwards to a real
`tokenwarden-fake-provider` process. Everything listens on 127.0.0.1 only; no real provider is
ever contacted (the SDK base URLs and keys in the environment point at the sidecar too).

Binaries come from `$TOKENWARDEN_BIN_DIR` (default `<repo>/target/debug`); `tests/python/run.sh`
builds them when missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import anthropic
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("TOKENWARDEN_BIN_DIR") or REPO / "target" / "debug")
SIDECAR_BIN = BIN_DIR / "tokenwarden-sidecar"
# The fake provider's binary; `fake-provider` is its earlier name.
FAKE_BIN = next(
    (p for p in (BIN_DIR / "tokenwarden-fake-provider", BIN_DIR / "fake-provider") if p.exists()),
    BIN_DIR / "tokenwarden-fake-provider",
)

# The key the app holds: not a provider key. The sidecar must replace it.
APP_KEY = "app-key-not-real"
# The keys the fake provider accepts by default; the sidecar reads them from the secrets dir.
OPENAI_KEY = "sk-fake-openai"
ANTHROPIC_KEY = "sk-fake-anthropic"

LABELS = "app=sdk-compat,team=platform"
NAMESPACE = "sdk"
BLOCK_NAMESPACE = "sdk-block"
BUDGET = "sdk-daily"
TINY_BUDGET = "sdk-tiny"

READY_TIMEOUT_S = 10.0
# Per-request client timeout: keeps a hung sidecar from stalling the run (retries stay default).
CLIENT_TIMEOUT_S = 15.0

# Price overrides (USD per million tokens) put in the RoutingPolicy, so the expected cost of
# every request is exact arithmetic on the usage the fake provider reports.
PRICES: dict[str, dict[str, str]] = {
    "gpt-5-mini": {"input": "0.25", "output": "2", "cache_read": "0.025", "cache_write": "0.25"},
    "gpt-5": {"input": "1.25", "output": "10", "cache_read": "0.125", "cache_write": "1.25"},
    "text-embedding-3-small": {"input": "0.02", "output": "0", "cache_read": "0.02", "cache_write": "0.02"},
    "claude-haiku-4-5": {"input": "1", "output": "5", "cache_read": "0.1", "cache_write": "1.25"},
    "claude-sonnet-4-6": {"input": "3", "output": "15", "cache_read": "0.3", "cache_write": "3.75"},
}
PROVIDER_MODELS = {
    "openai": ["gpt-5-mini", "gpt-5", "text-embedding-3-small"],
    "anthropic": ["claude-haiku-4-5", "claude-sonnet-4-6"],
}


def expected_text(n: int) -> str:
    """The fake provider's output for `n` output tokens: `tok0 tok1 … tok{n-1}`."""
    return " ".join(f"tok{i}" for i in range(n))


def expected_cost(model: str, uncached_input: int, output: int, cache_read: int, cache_write: int) -> Decimal:
    p = {k: Decimal(v) for k, v in PRICES[model].items()}
    total = (
        uncached_input * p["input"]
        + output * p["output"]
        + cache_read * p["cache_read"]
        + cache_write * p["cache_write"]
    )
    return total / Decimal(1_000_000)


# --------------------------------------------------------------------------------------------
# Plain HTTP to the admin / fake endpoints (never through a proxy from the environment).

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(url: str) -> Any:
    status, body = http_get(url)
    assert status == 200, f"GET {url}: {status} {body[:500]!r}"
    return json.loads(body)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Processes


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-limit:]


@dataclass
class FakeProvider:
    proc: subprocess.Popen
    url: str

    def log(self) -> list[dict]:
        return http_json(f"{self.url}/_fake/log")

    def usage(self) -> dict[str, dict]:
        return http_json(f"{self.url}/_fake/usage")


def start_fake_provider(workdir: Path) -> FakeProvider:
    if not FAKE_BIN.exists():
        pytest.exit(f"{FAKE_BIN} is missing: build it (tests/python/run.sh does)", returncode=2)
    stderr = open(workdir / "fake-provider.log", "wb")
    proc = subprocess.Popen(
        [str(FAKE_BIN), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
    )
    stderr.close()
    try:
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(READY_TIMEOUT_S)
        first = line[0].decode().strip() if line else ""
        m = re.fullmatch(r"listening on (127\.0\.0\.1:\d+)", first)
        if not m:
            raise RuntimeError(
                f"fake provider did not announce its address (got {first!r}); "
                f"stderr: {_tail(workdir / 'fake-provider.log')}"
            )
        fake = FakeProvider(proc=proc, url=f"http://{m.group(1)}")
        status, body = http_get(f"{fake.url}/_fake/health")
        if status != 200:
            raise RuntimeError(f"fake provider health: {status} {body!r}")
        return fake
    except BaseException:
        _stop(proc)
        raise


@dataclass
class Sidecar:
    proc: subprocess.Popen
    url: str
    admin_url: str
    namespace: str
    budget: str
    workdir: Path
    log_path: Path
    started_at: float  # time.time() at start

    @property
    def budget_ref(self) -> str:
        return f"{self.namespace}/{self.budget}"

    def ledger(self) -> dict:
        return http_json(f"{self.admin_url}/ledger")

    def metrics(self) -> str:
        status, body = http_get(f"{self.admin_url}/metrics")
        assert status == 200, f"/metrics: {status}"
        return body.decode()

    def budget_blocks(self) -> float:
        """Sum of `tokenwarden_budget_blocks_total` for this sidecar's budget."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("tokenwarden_budget_blocks_total") and f'"{self.budget_ref}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def openai(self, **kw: Any) -> openai.OpenAI:
        # Default max_retries on purpose: a budget block must not be retried by the SDK.
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=APP_KEY, timeout=CLIENT_TIMEOUT_S, **kw)

    def anthropic(self, **kw: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=APP_KEY, timeout=CLIENT_TIMEOUT_S, **kw)


def policy_yaml(namespace: str, fake_url: str, budget_name: str, budget_limit_usd: str) -> str:
    def prices(provider: str) -> str:
        rows = []
        for model in PROVIDER_MODELS[provider]:
            p = PRICES[model]
            rows.append(
                f'        - {{model: {model}, inputPerMTok: "{p["input"]}", outputPerMTok: "{p["output"]}", '
                f'cacheReadPerMTok: "{p["cache_read"]}", cacheWritePerMTok: "{p["cache_write"]}"}}'
            )
        return "\n".join(rows)

    return f"""\
# Written by tests/python/conftest.py: every provider is the local fake provider.
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: sdk-compat, namespace: {namespace}}}
spec:
  workloadSelector:
    matchLabels: {{app: sdk-compat}}
  providers:
    - name: openai
      api: openai
      baseUrl: "{fake_url}"
      apiKeySecretRef: {{name: llm-keys, key: openai}}
      prices:
{prices("openai")}
    - name: anthropic
      api: anthropic
      baseUrl: "{fake_url}/"
      apiKeySecretRef: {{name: llm-keys, key: anthropic}}
      prices:
{prices("anthropic")}
  tiers:
    - {{name: mini, provider: openai, model: gpt-5-mini}}
    - {{name: flagship, provider: openai, model: gpt-5}}
    - {{name: haiku, provider: anthropic, model: claude-haiku-4-5}}
    - {{name: sonnet, provider: anthropic, model: claude-sonnet-4-6}}
  routes:
    # The app asks for the flagship; it gets the mini model.
    - name: gpt5-to-mini
      match: {{apis: [ChatCompletions, Responses], models: ["gpt-5"]}}
      target: {{tier: mini}}
    - name: opus-to-haiku
      match: {{apis: [Messages], models: ["claude-opus-*"]}}
      target: {{provider: anthropic, model: claude-haiku-4-5}}
    - name: rest
      target: {{passthrough: true}}
  escalation:
    onUpstreamError: false
  fallback:
    maxAttempts: 1
    perTryTimeout: 10s
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: {budget_name}, namespace: {namespace}}}
spec:
  workloadSelector:
    matchLabels: {{team: platform}}
  period: Daily
  timeZone: UTC
  limit: {{usd: "{budget_limit_usd}"}}
  thresholds:
    - {{percent: 50, action: Alert}}
    - {{percent: 100, action: Block}}
"""


def start_sidecar(root: Path, name: str, fake: FakeProvider, namespace: str, budget: str, limit_usd: str) -> Sidecar:
    if not SIDECAR_BIN.exists():
        pytest.exit(f"{SIDECAR_BIN} is missing: build it (tests/python/run.sh does)", returncode=2)
    workdir = root / name
    (workdir / "secrets" / "llm-keys").mkdir(parents=True)
    (workdir / "state").mkdir()
    (workdir / "secrets" / "llm-keys" / "openai").write_text(OPENAI_KEY + "\n")
    (workdir / "secrets" / "llm-keys" / "anthropic").write_text(ANTHROPIC_KEY + "\n")
    policy = workdir / "policy.yaml"
    policy.write_text(policy_yaml(namespace, fake.url, budget, limit_usd))

    last_error = ""
    for _ in range(3):  # a picked port can be taken in between: retry with new ones
        port, admin_port = free_port(), free_port()
        if port == admin_port:
            continue
        log_path = workdir / f"sidecar-{port}.log"
        log = open(log_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWARDEN_")}
        env.setdefault("RUST_LOG", "info")
        started_at = time.time()
        proc = subprocess.Popen(
            [
                str(SIDECAR_BIN),
                "--policy-file", str(policy),
                "--secrets-dir", str(workdir / "secrets"),
                "--state-dir", str(workdir / "state"),
                "--labels", LABELS,
                "--namespace", namespace,
                "--listen", f"127.0.0.1:{port}",
                "--admin-listen", f"127.0.0.1:{admin_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        sidecar = Sidecar(
            proc=proc,
            url=f"http://127.0.0.1:{port}",
            admin_url=f"http://127.0.0.1:{admin_port}",
            namespace=namespace,
            budget=budget,
            workdir=workdir,
            log_path=log_path,
            started_at=started_at,
        )
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    last_error = f"sidecar exited with {proc.returncode}: {_tail(log_path)}"
                    break
                try:
                    status, _ = http_get(f"{sidecar.admin_url}/readyz", timeout=1.0)
                    if status == 200:
                        return sidecar
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sidecar not ready within {READY_TIMEOUT_S}s: {_tail(log_path)}")
                time.sleep(0.05)
        except BaseException:
            _stop(proc)
            raise
        if "in use" not in last_error.lower():
            break
    raise RuntimeError(last_error)


# --------------------------------------------------------------------------------------------
# Ledger bookkeeping


@dataclass
class Snapshot:
    ledger: dict
    fake_usage: dict[str, dict]
    fake_log_len: int

    def model_row(self, model: str) -> dict:
        for row in self.ledger["models"]:
            if row["model"] == model:
                return row
        return {
            "model": model,
            "requests": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cost_usd": "0",
        }

    def budget_row(self, namespace: str, name: str) -> dict:
        for row in self.ledger["budgets"]:
            if row["namespace"] == namespace and row["name"] == name:
                return row
        raise AssertionError(f"budget {namespace}/{name} not in /ledger: {self.ledger['budgets']}")


@dataclass
class Metered:
    """What one request (or a few) did, seen from the fake provider and the sidecar's ledger."""

    before: Snapshot
    after: Snapshot
    entries: list[dict]  # the fake provider's log entries for these requests
    sidecar: Sidecar = field(repr=False)

    @property
    def entry(self) -> dict:
        assert len(self.entries) == 1, f"expected one upstream request, got {len(self.entries)}: {self.entries}"
        return self.entries[0]

    def ledger_delta(self, model: str) -> dict:
        a, b = self.after.model_row(model), self.before.model_row(model)
        out = {k: a[k] - b[k] for k in ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")}
        out["cost_usd"] = Decimal(a["cost_usd"]) - Decimal(b["cost_usd"])
        return out

    def fake_usage_delta(self, model: str) -> dict:
        zero = {"requests": 0, "input_total": 0, "output": 0, "cache_read": 0, "cache_write": 0}
        a = self.after.fake_usage.get(model, zero)
        b = self.before.fake_usage.get(model, zero)
        return {k: a[k] - b[k] for k in zero}

    def assert_metered(self, served_model: str) -> dict:
        """The ledger grew by exactly what the fake provider billed for this one request.

        Returns the fake provider's usage report for it.
        """
        e = self.entry
        usage = e["usage"]
        assert usage is not None, f"the fake provider billed nothing: {e}"
        assert usage["model"] == served_model
        # The fake's running totals agree with its log entry.
        assert self.fake_usage_delta(served_model) == {
            "requests": 1,
            "input_total": usage["input_total"],
            "output": usage["output"],
            "cache_read": usage["cache_read"],
            "cache_write": usage["cache_write"],
        }
        uncached = usage["input_total"] - usage["cache_read"] - usage["cache_write"]
        cost = expected_cost(served_model, uncached, usage["output"], usage["cache_read"], usage["cache_write"])
        assert self.ledger_delta(served_model) == {
            "requests": 1,
            "input_tokens": uncached,
            "output_tokens": usage["output"],
            "cache_read_tokens": usage["cache_read"],
            "cache_write_tokens": usage["cache_write"],
            "cost_usd": cost,
        }, f"ledger rows before/after: {self.before.model_row(served_model)} / {self.after.model_row(served_model)}"
        # Nothing else was recorded.
        assert self.after.ledger["total"]["requests"] - self.before.ledger["total"]["requests"] == 1
        # The budget saw the same spend.
        ns, name = self.sidecar.namespace, self.sidecar.budget
        ba, bb = self.after.budget_row(ns, name), self.before.budget_row(ns, name)
        assert Decimal(ba["spent_usd"]) - Decimal(bb["spent_usd"]) == cost
        assert ba["requests"] - bb["requests"] == 1
        return usage


class Meter:
    """`with meter(sidecar) as m: <requests>` then `m.result.assert_metered(model)`."""

    def __init__(self, fake: FakeProvider) -> None:
        self.fake = fake

    def snapshot(self, sidecar: Sidecar) -> Snapshot:
        return Snapshot(ledger=sidecar.ledger(), fake_usage=self.fake.usage(), fake_log_len=len(self.fake.log()))

    def __call__(self, sidecar: Sidecar, requests: int = 1) -> "_Measure":
        return _Measure(self, sidecar, requests)


class _Measure:
    def __init__(self, meter: Meter, sidecar: Sidecar, requests: int) -> None:
        self.meter, self.sidecar, self.requests = meter, sidecar, requests
        self.result: Metered | None = None

    def __enter__(self) -> "_Measure":
        self.before = self.meter.snapshot(self.sidecar)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return
        # Streams are settled when the body ends, which can be a moment after the SDK has read
        # the last event: wait (bounded) for the ledger to record them.
        want = self.before.ledger["total"]["requests"] + self.requests
        deadline = time.monotonic() + 5.0
        while True:
            after = self.meter.snapshot(self.sidecar)
            if after.ledger["total"]["requests"] >= want or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        log = self.meter.fake.log()
        self.result = Metered(
            before=self.before,
            after=after,
            entries=log[self.before.fake_log_len :],
            sidecar=self.sidecar,
        )

    @property
    def m(self) -> Metered:
        assert self.result is not None
        return self.result


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tokenwarden-sdk-"))
    yield d
    if os.environ.get("TOKENWARDEN_KEEP_TMP"):
        print(f"\nkept {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def fake(workdir: Path) -> Iterator[FakeProvider]:
    f = start_fake_provider(workdir)
    try:
        yield f
    finally:
        _stop(f.proc)


@pytest.fixture(scope="session")
def sidecar(workdir: Path, fake: FakeProvider) -> Iterator[Sidecar]:
    s = start_sidecar(workdir, "main", fake, NAMESPACE, BUDGET, "100.00")
    saved = {k: os.environ.get(k) for k in _SDK_ENV}
    # Anything that builds a client from the environment talks to the sidecar, with a dummy key.
    os.environ.update(
        {
            "OPENAI_BASE_URL": f"{s.url}/v1",
            "OPENAI_API_KEY": APP_KEY,
            "ANTHROPIC_BASE_URL": s.url,
            "ANTHROPIC_API_KEY": APP_KEY,
        }
    )
    try:
        yield s
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _stop(s.proc)


_SDK_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")


@pytest.fixture(scope="session")
def tiny_sidecar(workdir: Path, fake: FakeProvider) -> Iterator[Sidecar]:
    """A sidecar whose only budget is $0.01 a day (not yet spent)."""
    s = start_sidecar(workdir, "tiny", fake, BLOCK_NAMESPACE, TINY_BUDGET, "0.01")
    try:
        yield s
    finally:
        _stop(s.proc)


@pytest.fixture(scope="session")
def meter(fake: FakeProvider) -> Meter:
    return Meter(fake)


@pytest.fixture(scope="session", autouse=True)
def _no_proxies() -> Iterator[None]:
    """Loopback traffic must never go through a proxy from the environment."""
    saved = {k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy")}
    for k in saved:
        os.environ[k] = ",".join(x for x in ("127.0.0.1", "localhost", saved[k]) if x)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _sidecar_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for name in ("sidecar", "tiny_sidecar"):
            if name in request.fixturenames:
                s = request.getfixturevalue(name)
                print(f"\n--- {name} log (tail) ---\n{s.log_tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep
