#!/usr/bin/env bash
# Installs, where missing, the Debian packages the build and the tests need. Idempotent: a machine that
# already has them pays one dpkg query. Usage: scripts/setup.sh [GROUP...]  (default: build)
#   build    C libraries the package links (libftdi1/libusb-1.0 for the QNG transport) and pkg-config
set -euo pipefail

declare -A groups=(
    [build]="pkg-config libftdi1-dev libusb-1.0-0-dev"
)

wanted=()
for group in "${@:-build}"; do
    [[ -n "${groups[$group]+x}" ]] || { echo "setup.sh: unknown group '$group'" >&2; exit 2; }
    for pkg in ${groups[$group]}; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || wanted+=("$pkg")
    done
done
[[ ${#wanted[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "setup.sh: installing ${wanted[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
