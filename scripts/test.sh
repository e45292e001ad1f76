#!/usr/bin/env bash
# Runs the whole test suite: set-up (idempotent), then every unit and integration test.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
"$ROOT/scripts/setup.sh" --with-docker
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/batos-target}
export BATOS_PYTHON=${BATOS_PYTHON:-${BATOS_CACHE:-$HOME/.cache/batos}/venv/bin/python}
export BATOS_MODEL=${BATOS_MODEL:-$ROOT/data/models/SmolLM2-135M-Instruct.Q4_1.gguf}
# Hygiene first (fast to fail): formatting, then clippy with every warning an error (workspace lints: no
# unwrap/expect outside tests, documented public items). Then every unit and integration test.
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "test: cargo test --workspace --all-targets"
status=0
cargo test --workspace --all-targets --no-fail-fast "$@" || status=$?
# Twenty questions on the embedded model (~11 min on 2 cores) run alone, after the rest: beside the other tests
# they would compete for both cores and make timing-sensitive tests flaky. So the test is #[ignore]d in the
# run above and asked for by name here.
echo "test: the twenty-question test (tests/e2e/first_hour.rs), alone"
cargo test --workspace --test e2e --no-fail-fast "$@" -- --ignored --exact \
    first_hour::twenty_first_questions_get_answers_that_end_and_do_not_loop --nocapture || status=$?
exit $status
