#!/usr/bin/env python3
"""Reads package-benchmark's markdown output: prints p50 ratios of each benchmark against the baseline
measured in the same run, and fails when a benchmark allocates (allocation counts are deterministic).

Pairs: `X.Swift` against `X.C` (the plain C loop) or, where the baseline is a plain Swift loop over
the same bytes, against `X.Baseline`. Allocation gate: every benchmark's `Malloc (total)`
must be 0 at every percentile, except those named in Benchmarks/allocation-allowlist.txt.
"""
import re
import sys


def parse(path):
    results, name = {}, None
    for line in open(path, encoding="utf-8", errors="replace"):
        heading = re.match(r"^### (\S+)", line)
        if heading:
            name = heading.group(1)
            results[name] = {}
            continue
        row = re.match(r"^\|\s*([^|]+?)\s*\|((?:\s*[-\d.]+\s*\|)+)", line)
        if name and row:
            cells = [c.strip() for c in row.group(2).split("|") if c.strip()]
            results[name][row.group(1)] = [float(c) for c in cells]
    return results


def main():
    results = parse(sys.argv[1])
    allow = set()
    if len(sys.argv) > 2:
        allow = {l.split("#")[0].strip() for l in open(sys.argv[2]) if l.split("#")[0].strip()}
    if not results:
        print("bench-report: no benchmark results found", file=sys.stderr)
        return 1
    print("\nRatios (p50 wall clock, same run):")
    for name in sorted(results):
        if name.endswith(".Swift"):
            stem = name[: -len(".Swift")]
            base = stem + ".C" if stem + ".C" in results else stem + ".Baseline"
            swift = next((v for k, v in results[name].items() if k.startswith("Time (wall clock)")), None)
            c = next((v for k, v in results.get(base, {}).items() if k.startswith("Time (wall clock)")), None)
            if swift and c and c[2] > 0:
                kind = "C" if base.endswith(".C") else "baseline"
                print(f"  {name:<45} {swift[2]:>10.0f} ns  vs {kind} {c[2]:>10.0f} ns  = {swift[2] / c[2]:.2f}x")
    failures = []
    for name, metrics in sorted(results.items()):
        mallocs = next((v for k, v in metrics.items() if k.startswith("Malloc (total)")), None)
        if mallocs is None:
            failures.append(f"{name}: no allocation metric reported")
        elif max(mallocs[:-1]) > 0 and name not in allow:
            failures.append(f"{name}: allocates ({mallocs[:-1]})")
    for failure in failures:
        print(f"bench-report: {failure}", file=sys.stderr)
    print(f"\nbench-report: {len(results)} benchmarks, {len(failures)} allocation failures")
    return 1 if failures else 0


sys.exit(main())
