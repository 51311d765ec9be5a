#!/usr/bin/env bash
# SDK compatibility tests: the official openai/anthropic Python SDKs against a real
# tokenwarden-sidecar forwarding to the fake provider (all on 127.0.0.1).
#
#   tests/python/run.sh [pytest args...]
#
# Python: $PYTHON, else .venv/bin/python (created from scripts/requirements-test.txt when
# missing). Binaries: $TOKENWARDEN_BIN_DIR (default target/debug), built when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
else
  py=.venv/bin/python
  if [ ! -x "$py" ]; then
    python3 -m venv .venv
  fi
  if ! "$py" -c 'import openai, anthropic, pytest' 2>/dev/null; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
  fi
fi

bin_dir=${TOKENWARDEN_BIN_DIR:-$PWD/target/debug}
fake_bin=$bin_dir/tokenwarden-fake-provider
[ -x "$fake_bin" ] || fake_bin=$bin_dir/fake-provider # its earlier name
if [ ! -x "$bin_dir/tokenwarden-sidecar" ] || [ ! -x "$fake_bin" ]; then
  if [ -n "${TOKENWARDEN_BIN_DIR:-}" ]; then
    echo "tests/python/run.sh: binaries missing in TOKENWARDEN_BIN_DIR=$bin_dir" >&2
    exit 2
  fi
  cargo build -p tokenwarden-sidecar -p tokenwarden-fake-provider --bins
fi

export PYTHONDONTWRITEBYTECODE=1
exec "$py" -m pytest -q tests/python "$@"
