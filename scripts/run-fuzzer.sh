#!/usr/bin/env bash
# Runs one libFuzzer target (built by `make fuzz-build`) for a bounded time from its seed corpus.
# Exits non-zero on any crash, sanitizer report, leak or timeout; the reproducer lands in fuzz-artifacts/.
set -euo pipefail
target=$1 seconds=${2:-60}
shift 2 || true
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp -r "Fuzz/$target/Seeds/." "$corpus/" 2>/dev/null || true
mkdir -p fuzz-artifacts
echo "fuzz: $target for ${seconds}s from $(ls "$corpus" | wc -l) seeds"
".build-fuzz/release/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=fuzz-artifacts/ "$@" "$corpus" 2>&1 |
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|INFO: Seed|.*(ERROR|Assertion|Fatal|fatal).*)' || true
exit "${PIPESTATUS[0]}"
