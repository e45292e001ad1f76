#!/usr/bin/env bash
# Idempotent set-up for building, running and testing batos on Debian bookworm.
# Installs the system packages the build and the sandbox need, a Python venv for the interop tests, and the
# default model. Safe to run again: every step checks first.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BATOS_CACHE:-$HOME/.cache/batos}
mkdir -p "$CACHE"

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. System packages: protoc (lance), cmake + clang (llama.cpp, bindgen), runsc (gVisor sandbox),
#    docker.io (second sandbox backend), tmux (the TUI's end-to-end test drives `batos tui` in it); for the test
#    suite only (--with-docker), chromium and chromium-driver (the page's end-to-end test drives it headless).
packages=(protobuf-compiler cmake clang libclang-dev runsc docker.io curl unzip tmux)
if [ "${1:-}" = "--with-docker" ]; then
  packages+=(chromium chromium-driver)
fi
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${missing[*]} — run: sudo apt-get install ${missing[*]}"; exit 1
  fi
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Rust toolchain.
if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install Rust (https://rustup.rs), version 1.94 or newer"; exit 1
fi
# The test script checks formatting and lints: rustfmt and clippy must be there.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    say "adding rustfmt and clippy to the toolchain"
    rustup component add rustfmt clippy
  else
    say "cargo fmt / cargo clippy missing: install the rustfmt and clippy components"; exit 1
  fi
fi

# 3. Python venv for the tests (pyzmq + msgpack interop, gguf to write test LoRA adapters, the official OpenAI
#    client and selenium for the HTTP door's tests).
VENV="$CACHE/venv"
if ! "$VENV/bin/python" -c 'import zmq, msgpack, gguf, numpy, openai, selenium' 2>/dev/null; then
  # A venv cut off while it was being created has python but no pip: make it again.
  if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    say "creating Python venv at $VENV"
    python3 -m venv --clear "$VENV"
  fi
  say "installing pyzmq, msgpack, gguf, numpy, openai, selenium into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check pyzmq msgpack gguf numpy openai selenium
fi

# 4. The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) into data/models/.
"$ROOT/scripts/fetch-model.sh" "$ROOT/data/models"

# 5. The tool sandbox: a minimal read-only Python root filesystem for gVisor (tools.rootfs).
"$ROOT/sandbox/build-rootfs.sh" "$ROOT/data/sandbox/rootfs" >&2

# 6. With --with-docker (the test suite): a Docker daemon with runsc registered, and the sandbox image.
if [ "${1:-}" = "--with-docker" ]; then
  "$ROOT/sandbox/start-dockerd.sh" >&2
  image=$("$ROOT/sandbox/build-docker-image.sh" "$ROOT/data/sandbox/rootfs" | sed -n 's/^image=//p' | tail -n 1)
  docker tag "$image" batos-sandbox:latest
  say "docker sandbox image $image tagged batos-sandbox:latest"
fi
