#!/usr/bin/env bash
# Set-up (idempotent), build and start the daemon on the shipped settings: the embedded SmolLM2 model unless an
# Ollama server answers at llm.ollama_url. A line per stage says what it is doing and how long it has taken, so a
# long first build never looks stuck.
#
#   scripts/run.sh             the debug build that scripts/test.sh shares (its hot crates optimised in it:
#                              llama.cpp, candle, tokio, zeromq, lance's kernels): the quickest way to a running
#                              daemon (BENCHMARKS.md, "The default daemon's hot dependencies", has what it costs
#                              against --release)
#   scripts/run.sh --release   the fastest daemon: a separate, much longer cold build
#
# Other arguments go to `batos run`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
START=$SECONDS
stage() { printf '[run.sh %3dm%02ds] %s\n' $(((SECONDS - START) / 60)) $(((SECONDS - START) % 60)) "$*" >&2; }
RELEASE=0
if [ "${1:-}" = "--release" ]; then
    RELEASE=1
    shift
fi

stage "set-up: packages, Python venv, model file, sandbox root (each step skipped when already done)"
"$ROOT/scripts/setup.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/batos-target}
if [ "$RELEASE" = 1 ]; then
    stage "build: cargo build --release --bin batos into $CARGO_TARGET_DIR (first time on 2 cores: 35 min to over an hour by the machine; then seconds)"
    cargo build --release --bin batos
    BIN=$CARGO_TARGET_DIR/release/batos
else
    stage "build: cargo build --bin batos into $CARGO_TARGET_DIR, shared with scripts/test.sh (first time on 2 cores: 15–30 min by the machine; then seconds)"
    cargo build --bin batos
    BIN=$CARGO_TARGET_DIR/debug/batos
fi
stage "start: the daemon (other terminals: scripts/batos ping | send | status | watch | call | rate | curator)"
exec "$BIN" run --config "$ROOT/config/settings.toml" "$@"
