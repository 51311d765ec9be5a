#!/usr/bin/env python3
"""Write the request bodies of the benchmark (deterministic, stdlib).

  small.json  ~1 KB   a chat completion: system prompt + one user question
  large.json  ~200 KB a long coding-agent context: system prompt, then many turns of
                      user asks, assistant tool calls and tool results (source files,
                      test logs), so the JSON is full of escaped newlines and quotes
Both are non-streaming POST /v1/chat/completions bodies with model gpt-4o-mini.

usage: make_bodies.py OUT_DIR [SMALL_BYTES] [LARGE_BYTES]
"""
import json
import os
import random
import sys

MODEL = "gpt-4o-mini"
SYSTEM = ("You are a careful coding agent working in a Rust repository. Read files before "
          "editing them, keep changes small, run the tests after every change, and explain "
          "what you changed and why.")
WORDS = ("let mut self fn impl pub struct enum match Some None Ok Err return async await "
         "config budget ledger provider request response stream token usage cost route tier "
         "parse header body bytes error timeout retry settle reserve meter").split()


def code_block(rng, lines):
    out = []
    for i in range(lines):
        indent = "    " * rng.randint(0, 3)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        tail = rng.choice([";", " {", "}", ",", "", ' // "note"', " => {"])
        out.append("%s%s%s" % (indent, words, tail))
        if i % 17 == 16:
            out.append("")
    return "\n".join(out)


def body(messages):
    return json.dumps({"model": MODEL, "messages": messages}, separators=(",", ":")).encode()


def small(target):
    q = ("Here is a failing test in the budget module. The reservation is released twice "
         "when the upstream times out after the first retry. Explain the bug and propose a "
         "minimal fix with a regression test. ")
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
    while len(body(msgs)) < target:
        msgs[1]["content"] += "Keep the public API unchanged. "
    msgs[1]["content"] = msgs[1]["content"][:len(msgs[1]["content"]) - (len(body(msgs)) - target)]
    return body(msgs)


def large(target):
    rng = random.Random(20240601)
    msgs = [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": "The ledger loses records when the sidecar restarts "
                                        "during a stream. Find out why and fix it."}]
    turn = 0
    while len(body(msgs)) < target:
        turn += 1
        call_id = "call_%04d" % turn
        path = "src/%s/%s.rs" % (rng.choice(WORDS), rng.choice(WORDS))
        msgs.append({"role": "assistant", "content": None, "tool_calls": [{
            "id": call_id, "type": "function",
            "function": {"name": "read_file", "arguments": json.dumps({"path": path})}}]})
        msgs.append({"role": "tool", "tool_call_id": call_id,
                     "content": "// %s\n%s" % (path, code_block(rng, rng.randint(40, 120)))})
        msgs.append({"role": "assistant",
                     "content": "I read `%s`. The `%s` path does not %s the %s before it "
                                "returns; next I check the caller." % (
                                    path, rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS))})
    msgs.append({"role": "user", "content": "Now write the fix."})
    # trim the last tool output so the body lands on the target size
    while len(body(msgs)) > target:
        over = len(body(msgs)) - target
        c = msgs[-3]["content"]
        msgs[-3]["content"] = c[:max(0, len(c) - over)]
    return body(msgs)


def main():
    out = sys.argv[1]
    sb = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    lb = int(sys.argv[3]) if len(sys.argv) > 3 else 200 * 1024
    os.makedirs(out, exist_ok=True)
    for name, data in (("small.json", small(sb)), ("large.json", large(lb))):
        json.loads(data)
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        print("%s %d" % (name, len(data)))


if __name__ == "__main__":
    main()
