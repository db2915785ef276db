#!/usr/bin/env bash
# Installs, where missing, the Debian packages the build and the tests need. Idempotent: a machine that
# already has them pays one dpkg query. Usage: scripts/setup.sh [GROUP...]  (default: build)
#   build    C libraries the package links (libftdi1/libusb-1.0 for the QNG transport) and pkg-config
#   interop  the real peers of scripts/interop: QEMU, a static busybox and cpio/kmod (depmod) to build
#            the test guest's initramfs, rngtest (FIPS 140-2), ekeyd-egd-linux (an EGD client) and
#            unshare. Side effects: ekeyd-egd-linux ships START_EKEYD_EGD_LINUX=NO, so its service stays
#            off; rng-tools5's postinst enables and starts rngd.service (host /dev/hwrng into the host
#            pool) where services may start, i.e. not in a container with a policy-rc.d. The tests
#            need neither service.
set -euo pipefail

declare -A groups=(
    [build]="pkg-config libftdi1-dev libusb-1.0-0-dev"
    [interop]="qemu-system-x86 busybox-static cpio kmod rng-tools5 ekeyd-egd-linux util-linux"
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
