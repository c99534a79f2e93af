#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time (default 60 s each; 600 s before a release).
#   fuzz/run.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The stable toolchain works with
# RUSTC_BOOTSTRAP=1, which this script sets. Crashes land in fuzz/artifacts/TARGET/ and the
# script exits non-zero; the growing corpus is kept in fuzz/corpus/TARGET/ (not committed).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(config request http1_head)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
status=0
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== $target for ${seconds}s"
  # -rss_limit_mb: a config or request must never need much memory.
  if ! cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1; then
    echo "!! $target found a crash: see fuzz/artifacts/$target/"
    status=1
  fi
done
exit "$status"
