#!/usr/bin/env bash
# One command: installs wrk, nginx and matplotlib if missing, builds the shipped binary (the dist
# profile: fat LTO) and runs bench/bench.py (A: upstream direct, B: azure-costs-proxy, C: nginx),
# then the start-up, memory and cold-request checks.
#   bench/run.sh [--rounds N] [--seconds S] [--quick] [--only SCENARIOS] [--no-checks]
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v taskset >/dev/null || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"
python3 -c 'import matplotlib' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check matplotlib
cargo build --profile dist --locked
exec python3 bench/bench.py "$@"
