#!/usr/bin/env bash
# Builds and runs Examples/VirtQueueConsumer, a package that depends on this one by path and uses only
# the VirtQueue product, then checks that its build compiled nothing but VirtQueue and its C shim.
set -euo pipefail
cd Examples/VirtQueueConsumer
swift build --scratch-path .build 2>&1 | tail -n 3
swift run --scratch-path .build --skip-build VirtQueueConsumer
modules=$(find .build/debug/Modules .build/debug -maxdepth 1 -name '*.swiftmodule' -exec basename {} .swiftmodule \; | sort -u | tr '\n' ' ')
echo "example: modules built: $modules"
for forbidden in NIO NIOCore Logging ArgumentParser Benchmark EGDCodec RateLimit EntropySources VirtRNGCore; do
    if [[ " $modules " == *" $forbidden "* ]]; then
        echo "example: the VirtQueue-only build compiled $forbidden" >&2
        exit 1
    fi
done
[[ " $modules " == *" VirtQueue "* ]] || { echo "example: VirtQueue was not built" >&2; exit 1; }
echo "example: OK (VirtQueue alone)"
