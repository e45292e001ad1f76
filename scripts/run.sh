#!/usr/bin/env bash
# Set-up (idempotent), build and start the daemon on the shipped settings: the embedded SmolLM2 model unless an
# Ollama server answers at llm.ollama_url. Extra arguments go to `batos run`. A line per stage says what it is
# doing and how long it has taken, so a long first build never looks stuck.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
START=$SECONDS
stage() { printf '[run.sh %3dm%02ds] %s\n' $(((SECONDS - START) / 60)) $(((SECONDS - START) % 60)) "$*" >&2; }

stage "set-up: packages, Python venv, model file, sandbox root (each step skipped when already done)"
"$ROOT/scripts/setup.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/batos-target}
stage "build: cargo build --release --bin batos into $CARGO_TARGET_DIR (first time on 2 cores: over an hour; then seconds)"
cargo build --release --bin batos
stage "start: the daemon (other terminals: scripts/batos ping | send | status | watch | call)"
exec "$CARGO_TARGET_DIR/release/batos" run --config "$ROOT/config/settings.toml" "$@"
