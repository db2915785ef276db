#!/usr/bin/env bash
# Runs every benchmark once in short mode, prints the tables and the ratios against the in-run
# baselines, and fails if any benchmark allocates (allocation counts are deterministic).
set -euo pipefail
export VIRTRNG_BENCH_SHORT=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
swift package --package-path Benchmarks benchmark --format markdown --no-progress | tee "$out"
python3 scripts/bench-report.py "$out" Benchmarks/allocation-allowlist.txt
