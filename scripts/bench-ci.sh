#!/usr/bin/env bash
# Runs every benchmark once in short mode and prints its table.
set -euo pipefail
export VIRTRNG_BENCH_SHORT=1
swift package --package-path Benchmarks benchmark --format markdown --no-progress
