"""The official OpenAI and Anthropic Python SDKs, unchanged, pointed at the tokenwarden sidecar.

Each test checks what the app sees (the SDK's parsed objects, headers, exceptions) and what the
sidecar metered: the `/ledger` deltas must equal what the fake provider billed for the request
(its `/_fake/log` entry and `/_fake/usage` totals), priced with the RoutingPolicy's price
overrides (`conftest.PRICES`).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from decimal import Decimal

import anthropic
import openai
import pytest

from conftest import (
    ANTHROPIC_KEY,
    APP_KEY,
    OPENAI_KEY,
    FakeProvider,
    Meter,
    Sidecar,
    expected_text,
)

# A prompt long enough (~2 KB body) that the fake bills more input tokens than the cache knobs
# below, so all four token kinds are non-zero.
LONG_PROMPT = "Refactor this function to be clearer. " + " ".join(
    f"line {i}: x = compute(x, {i})" for i in range(80)
)


def assert_provider_key_swapped(entry: dict, api: str) -> None:
    """The provider got the key from the secrets dir, never the app's key."""
    headers = entry["headers"]
    if api == "openai":
        assert headers.get("authorization") == f"Bearer {OPENAI_KEY}"
        assert "x-api-key" not in headers
    else:
        assert headers.get("x-api-key") == ANTHROPIC_KEY
        assert "authorization" not in headers
        assert "anthropic-version" in headers
    assert APP_KEY not in json.dumps(headers)


# ============================================================================================
# OpenAI: chat completions


def test_openai_chat_plain(sidecar: Sidecar, meter: Meter) -> None:
    client = sidecar.openai()
    with meter(sidecar) as mm:
        resp = client.chat.completions.create(
            model="gpt-5-mini",
            messages=[{"role": "user", "content": LONG_PROMPT}],
            max_completion_tokens=200,
            extra_headers={"x-fake-output-tokens": "12", "x-fake-cached-tokens": "64"},
        )
    usage = mm.m.assert_metered("gpt-5-mini")
    assert_provider_key_swapped(mm.m.entry, "openai")

    assert resp.object == "chat.completion"
    assert resp.model == "gpt-5-mini"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == expected_text(12)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == usage["input_total"]
    assert resp.usage.completion_tokens == usage["output"] == 12
    assert resp.usage.prompt_tokens_details.cached_tokens == usage["cache_read"] == 64
    row = mm.m.after.model_row("gpt-5-mini")
    assert row["cache_read_tokens"] >= 64


def test_openai_chat_stream_without_usage(sidecar: Sidecar, meter: Meter) -> None:
    """`stream=True` alone: the app sees content and no usage anywhere, yet the call is metered."""
    client = sidecar.openai()
    with meter(sidecar) as mm:
        stream = client.chat.completions.create(
            model="gpt-5-mini",
            messages=[{"role": "user", "content": "Name three colours."}],
            stream=True,
            extra_headers={"x-fake-output-tokens": "20", "x-fake-chunks": "5"},
        )
        chunks = list(stream)
    usage = mm.m.assert_metered("gpt-5-mini")
    assert_provider_key_swapped(mm.m.entry, "openai")

    assert chunks, "no chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.model == "gpt-5-mini" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(20) and usage["output"] == 20
    assert chunks[-1].choices[0].finish_reason == "stop"
    # No usage chunk (a chunk with empty choices) and no usage member in any chunk: exactly what
    # the provider sends an app that did not ask for usage.
    assert all(c.choices for c in chunks), [c.model_dump() for c in chunks if not c.choices]
    assert all(c.usage is None for c in chunks)
    assert all("usage" not in c.model_fields_set for c in chunks), [
        c.model_dump_json() for c in chunks if "usage" in c.model_fields_set
    ][:2]
    # ... while the sidecar asked the provider for it, to meter the call.
    sent = json.loads(mm.m.entry["body"])
    assert sent.get("stream_options", {}).get("include_usage") is True
    assert mm.m.entry["usage_in_body"] is True


def test_openai_chat_stream_with_usage(sidecar: Sidecar, meter: Meter) -> None:
    client = sidecar.openai()
    with meter(sidecar) as mm:
        stream = client.chat.completions.create(
            model="gpt-5-mini",
            messages=[{"role": "user", "content": LONG_PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-fake-output-tokens": "16", "x-fake-chunks": "4", "x-fake-cached-tokens": "32"},
        )
        chunks = list(stream)
    usage = mm.m.assert_metered("gpt-5-mini")

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(16)
    # The final usage chunk is there, exactly once, last, with the provider's numbers.
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1
    last = chunks[-1]
    assert last is usage_chunks[0]
    assert last.choices == []
    assert last.usage.prompt_tokens == usage["input_total"]
    assert last.usage.completion_tokens == 16
    assert last.usage.prompt_tokens_details.cached_tokens == usage["cache_read"] == 32


# ============================================================================================
# OpenAI: responses, embeddings


def test_openai_responses_plain(sidecar: Sidecar, meter: Meter) -> None:
    client = sidecar.openai()
    with meter(sidecar) as mm:
        resp = client.responses.create(
            model="gpt-5-mini",
            input="Write a haiku about proxies.",
            max_output_tokens=500,
            extra_headers={"x-fake-output-tokens": "15"},
        )
    usage = mm.m.assert_metered("gpt-5-mini")
    assert_provider_key_swapped(mm.m.entry, "openai")

    assert resp.object == "response"
    assert resp.status == "completed"
    assert resp.model == "gpt-5-mini"
    assert resp.output_text == expected_text(15)
    assert resp.usage is not None
    assert resp.usage.input_tokens == usage["input_total"]
    assert resp.usage.output_tokens == usage["output"] == 15
    assert resp.usage.total_tokens == usage["input_total"] + 15


def test_openai_responses_stream(sidecar: Sidecar, meter: Meter) -> None:
    client = sidecar.openai()
    with meter(sidecar) as mm:
        stream = client.responses.create(
            model="gpt-5-mini",
            input=[{"role": "user", "content": "Explain SSE in one line."}],
            stream=True,
            extra_headers={"x-fake-output-tokens": "24", "x-fake-chunks": "6"},
        )
        events = list(stream)
    usage = mm.m.assert_metered("gpt-5-mini")

    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert types.count("response.completed") == 1
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 6
    assert "".join(deltas) == expected_text(24)
    done = events[-1].response
    assert done.status == "completed"
    assert done.output_text == expected_text(24)
    assert done.usage.input_tokens == usage["input_total"]
    assert done.usage.output_tokens == usage["output"] == 24
    # Sequence numbers stay intact through the proxy.
    seqs = [e.sequence_number for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_openai_embeddings(sidecar: Sidecar, meter: Meter) -> None:
    client = sidecar.openai()
    with meter(sidecar) as mm:
        resp = client.embeddings.create(
            model="text-embedding-3-small",
            input=["the quick brown fox", "jumps over the lazy dog"],
        )
    usage = mm.m.assert_metered("text-embedding-3-small")
    assert_provider_key_swapped(mm.m.entry, "openai")

    assert resp.model == "text-embedding-3-small"
    assert [d.index for d in resp.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in resp.data)
    assert all(isinstance(x, float) for x in resp.data[0].embedding)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == usage["input_total"]
    assert usage["output"] == 0


# ============================================================================================
# Anthropic: messages

CACHE_HEADERS = {"x-fake-cached-tokens": "200", "x-fake-cache-write-tokens": "120"}


def _assert_anthropic_cache_usage(usage_obj, billed: dict, output: int) -> None:
    assert usage_obj.cache_read_input_tokens == billed["cache_read"] == 200
    assert usage_obj.cache_creation_input_tokens == billed["cache_write"] == 120
    assert usage_obj.input_tokens == billed["input_total"] - 200 - 120 > 0
    assert usage_obj.output_tokens == billed["output"] == output


def test_anthropic_messages_plain(sidecar: Sidecar, meter: Meter) -> None:
    client = sidecar.anthropic()
    with meter(sidecar) as mm:
        msg = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=256,
            system="You are terse.",
            messages=[{"role": "user", "content": LONG_PROMPT}],
            extra_headers={**CACHE_HEADERS, "x-fake-output-tokens": "18"},
        )
    billed = mm.m.assert_metered("claude-sonnet-4-6")
    assert_provider_key_swapped(mm.m.entry, "anthropic")

    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == "claude-sonnet-4-6"
    assert msg.stop_reason == "end_turn"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == expected_text(18)
    _assert_anthropic_cache_usage(msg.usage, billed, 18)
    delta = mm.m.ledger_delta("claude-sonnet-4-6")
    assert (delta["cache_read_tokens"], delta["cache_write_tokens"]) == (200, 120)


def test_anthropic_messages_stream_raw(sidecar: Sidecar, meter: Meter) -> None:
    """`messages.create(stream=True)`: the raw event stream."""
    client = sidecar.anthropic()
    with meter(sidecar) as mm:
        stream = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=256,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            stream=True,
            extra_headers={**CACHE_HEADERS, "x-fake-output-tokens": "21", "x-fake-chunks": "7"},
        )
        events = list(stream)
    billed = mm.m.assert_metered("claude-sonnet-4-6")

    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert types.count("content_block_delta") == 7
    assert text == expected_text(21)
    start = events[0].message
    assert start.model == "claude-sonnet-4-6"
    assert start.usage.cache_read_input_tokens == 200
    assert start.usage.cache_creation_input_tokens == 120
    assert start.usage.input_tokens == billed["input_total"] - 320
    message_delta = [e for e in events if e.type == "message_delta"]
    assert len(message_delta) == 1
    assert message_delta[0].usage.output_tokens == billed["output"] == 21
    assert message_delta[0].delta.stop_reason == "end_turn"


def test_anthropic_messages_stream_helper(sidecar: Sidecar, meter: Meter) -> None:
    """`messages.stream(...)`: the SDK's accumulating helper."""
    client = sidecar.anthropic()
    with meter(sidecar) as mm:
        with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=10,
            messages=[{"role": "user", "content": LONG_PROMPT}],
            extra_headers={**CACHE_HEADERS, "x-fake-output-tokens": "30", "x-fake-chunks": "3"},
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    billed = mm.m.assert_metered("claude-haiku-4-5")

    # max_tokens (10) < 30: truncated like the real API.
    assert text == expected_text(10)
    assert final.content[0].text == text
    assert final.stop_reason == "max_tokens"
    assert final.model == "claude-haiku-4-5"
    _assert_anthropic_cache_usage(final.usage, billed, 10)


# ============================================================================================
# Routing, as the app sees it


def test_openai_routing_visible(sidecar: Sidecar, meter: Meter) -> None:
    """The app asks for gpt-5; route `gpt5-to-mini` sends gpt-5-mini and says so."""
    client = sidecar.openai()
    with meter(sidecar) as mm:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-5",
            messages=[{"role": "user", "content": "Rename variable x to count."}],
            max_completion_tokens=100,
        )
    completion = raw.parse()
    assert raw.status_code == 200
    assert raw.headers["x-tokenwarden-model"] == "gpt-5-mini"
    assert raw.headers["x-tokenwarden-route"] == "gpt5-to-mini"
    assert completion.model == "gpt-5-mini"
    assert completion.choices[0].message.content == expected_text(40)

    entry = mm.m.entry
    assert entry["model"] == "gpt-5-mini"  # the body was rewritten
    assert json.loads(entry["body"])["model"] == "gpt-5-mini"
    mm.m.assert_metered("gpt-5-mini")
    assert mm.m.ledger_delta("gpt-5")["requests"] == 0


def test_openai_unrouted_passthrough(sidecar: Sidecar, meter: Meter) -> None:
    client = sidecar.openai()
    with meter(sidecar) as mm:
        raw = client.responses.with_raw_response.create(
            model="gpt-5-mini", input="hi", extra_headers={"x-fake-output-tokens": "3"}
        )
    resp = raw.parse()
    assert raw.headers["x-tokenwarden-model"] == "gpt-5-mini"
    assert raw.headers["x-tokenwarden-route"] == "rest"
    assert resp.model == "gpt-5-mini"
    mm.m.assert_metered("gpt-5-mini")


def test_openai_routing_on_responses_stream(sidecar: Sidecar, meter: Meter) -> None:
    client = sidecar.openai()
    with meter(sidecar) as mm:
        with client.responses.with_streaming_response.create(
            model="gpt-5", input="Summarise: a b c", stream=True, extra_headers={"x-fake-output-tokens": "5"}
        ) as raw:
            assert raw.headers["x-tokenwarden-model"] == "gpt-5-mini"
            assert raw.headers["x-tokenwarden-route"] == "gpt5-to-mini"
            events = list(raw.parse())
    assert events[-1].type == "response.completed"
    assert events[-1].response.model == "gpt-5-mini"
    assert events[-1].response.output_text == expected_text(5)
    mm.m.assert_metered("gpt-5-mini")


def test_anthropic_routing_visible(sidecar: Sidecar, meter: Meter) -> None:
    """claude-opus-* goes to claude-haiku-4-5 (route `opus-to-haiku`)."""
    client = sidecar.anthropic()
    with meter(sidecar) as mm:
        raw = client.messages.with_raw_response.create(
            model="claude-opus-4-6",
            max_tokens=64,
            messages=[{"role": "user", "content": "Fix the typo in 'teh'."}],
            extra_headers={"x-fake-output-tokens": "6"},
        )
    msg = raw.parse()
    assert raw.headers["x-tokenwarden-model"] == "claude-haiku-4-5"
    assert raw.headers["x-tokenwarden-route"] == "opus-to-haiku"
    assert msg.model == "claude-haiku-4-5"
    assert msg.content[0].text == expected_text(6)
    assert mm.m.entry["model"] == "claude-haiku-4-5"
    mm.m.assert_metered("claude-haiku-4-5")
    assert mm.m.ledger_delta("claude-opus-4-6")["requests"] == 0


def test_main_budget_tracks_spend(sidecar: Sidecar) -> None:
    """The main sidecar's $100 budget sees the ledger's spend and stays Ok."""
    ledger = sidecar.ledger()
    row = next(b for b in ledger["budgets"] if (b["namespace"], b["name"]) == (sidecar.namespace, sidecar.budget))
    assert row["state"] == "Ok"
    assert Decimal(row["limit_usd"]) == Decimal("100")
    assert row["shadow"] is False
    # Every metered request counts against the budget (the ledger holds only this run, so the
    # totals match unless the day rolled over mid-run).
    assert Decimal(row["spent_usd"]) <= Decimal(ledger["total"]["cost_usd"])
    assert row["requests"] <= ledger["total"]["requests"]
    if datetime.fromisoformat(row["period_start"]).timestamp() <= sidecar.started_at:
        assert Decimal(row["spent_usd"]) == Decimal(ledger["total"]["cost_usd"])
        assert row["requests"] == ledger["total"]["requests"]


# ============================================================================================
# Budget blocks: 429 in the provider's shape, not retried by the SDK


@pytest.fixture(scope="module")
def exhausted(tiny_sidecar: Sidecar, meter: Meter) -> Sidecar:
    """Spend the $0.01 budget of `tiny_sidecar` with one legitimate request.

    Its worst case (a ~150-byte prompt, max_tokens 16) fits the budget, so it is allowed; the
    provider then bills 20,000 cache-write tokens ($0.025 at $1.25/M), which exhausts it.
    """
    client = tiny_sidecar.anthropic()
    with meter(tiny_sidecar) as mm:
        msg = client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=16,
            messages=[{"role": "user", "content": "Cache this long system context."}],
            extra_headers={"x-fake-cache-write-tokens": "20000", "x-fake-output-tokens": "4"},
        )
    assert msg.usage.cache_creation_input_tokens == 20000
    mm.m.assert_metered("claude-haiku-4-5")
    row = mm.m.after.budget_row(tiny_sidecar.namespace, tiny_sidecar.budget)
    assert row["state"] == "Exhausted", row
    return tiny_sidecar


def _blocked(sidecar: Sidecar, fake: FakeProvider, call) -> tuple[Exception, float]:
    """Run `call`, which must raise; check the request never reached the provider or the ledger."""
    blocks_before = sidecar.budget_blocks()
    log_before = len(fake.log())
    ledger_before = sidecar.ledger()["total"]
    t0 = time.monotonic()
    with pytest.raises(Exception) as ei:
        call()
    elapsed = time.monotonic() - t0
    assert len(fake.log()) == log_before, "a blocked request reached the provider"
    assert sidecar.ledger()["total"] == ledger_before
    # Exactly one HTTP request was refused: the SDK did not retry despite max_retries=2.
    assert sidecar.budget_blocks() - blocks_before == 1
    return ei.value, elapsed


def test_budget_block_openai(exhausted: Sidecar, fake: FakeProvider) -> None:
    client = exhausted.openai()
    assert client.max_retries == 2  # the SDK default: not lowered for this test
    err, elapsed = _blocked(
        exhausted,
        fake,
        lambda: client.chat.completions.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=16
        ),
    )
    assert isinstance(err, openai.RateLimitError), repr(err)
    assert elapsed < 5.0
    assert err.status_code == 429
    assert err.response.headers["x-should-retry"] == "false"
    assert err.response.headers["x-tokenwarden-error"] == "limit"
    assert err.type == "insufficient_quota"
    assert err.code == "tokenwarden_budget_exceeded"
    assert isinstance(err.body, dict)
    assert f"TokenBudget {exhausted.budget_ref}" in err.body["message"]
    assert exhausted.budget_ref in str(err)


def test_budget_block_openai_stream(exhausted: Sidecar, fake: FakeProvider) -> None:
    client = exhausted.openai()
    err, elapsed = _blocked(
        exhausted,
        fake,
        lambda: list(
            client.responses.create(model="gpt-5", input="hi", stream=True)
        ),
    )
    assert isinstance(err, openai.RateLimitError), repr(err)
    assert elapsed < 5.0
    assert exhausted.budget_ref in str(err)


def test_budget_block_anthropic(exhausted: Sidecar, fake: FakeProvider) -> None:
    client = exhausted.anthropic()
    assert client.max_retries == 2
    err, elapsed = _blocked(
        exhausted,
        fake,
        lambda: client.messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        ),
    )
    assert isinstance(err, anthropic.RateLimitError), repr(err)
    assert elapsed < 5.0
    assert err.status_code == 429
    assert err.response.headers["x-should-retry"] == "false"
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "rate_limit_error"
    assert f"TokenBudget {exhausted.budget_ref}" in err.body["error"]["message"]
    assert exhausted.budget_ref in str(err)


def test_budget_block_anthropic_stream_helper(exhausted: Sidecar, fake: FakeProvider) -> None:
    client = exhausted.anthropic()

    def call() -> None:
        with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            stream.until_done()

    err, elapsed = _blocked(exhausted, fake, call)
    assert isinstance(err, anthropic.RateLimitError), repr(err)
    assert elapsed < 5.0
    assert exhausted.budget_ref in str(err)
