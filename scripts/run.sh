#!/usr/bin/env bash
# Set-up (idempotent) and start the daemon on the shipped settings: the embedded SmolLM2 model unless an
# Ollama server answers at llm.ollama_url. Extra arguments go to `batos run`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
"$ROOT/scripts/setup.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/batos-target}
exec cargo run --release --bin batos -- run --config config/settings.toml "$@"
