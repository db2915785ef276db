#!/usr/bin/env bash
# Builds the interop test guest from Debian packages only: the kernel of linux-image-cloud-amd64 and an
# initramfs of busybox-static plus the virtio / virtio-rng / virtio-blk modules, whose /init reads
# /dev/hwrng and writes the bytes to a raw virtio-blk disk the host reads afterwards.
#
# Usage: scripts/interop/build-guest.sh [CACHE_DIR]   (relative to the repository; default .build-interop,
# which .gitignore covers as .build*/)
# Output: CACHE_DIR/guest/vmlinuz and CACHE_DIR/guest/initrd.img. Idempotent: when the stamp (kernel
# package version, busybox version, hash of this script) matches, it does nothing.
# Needs: apt-get, dpkg-deb, depmod (kmod), cpio, gzip, /bin/busybox from busybox-static
# (scripts/setup.sh interop installs them).
#
# The guest's /init understands these kernel command-line parameters:
#   virtrng.bytes=N    bytes to read from /dev/hwrng (default 65536)
#   virtrng.chunks=K   read them in K chunks, printing a timestamped progress line after each (default 1)
# and prints, on the serial console, lines the host parses (scripts/interop/run.py):
#   VIRTRNG-INFO rng_current=virtio_rng.0 rng_available=virtio_rng.0
#   VIRTRNG-CHUNK n=3 bytes=49152 usec=61234            (cumulative bytes, µs since the read began)
#   VIRTRNG-RESULT bytes=65536 usec=84123 rng_current=virtio_rng.0 disk=written
#   VIRTRNG-ERROR <what>
# then powers off. Times come from /proc/timer_list (monotonic, read without forking); the timed
# span is the dd processes reading /dev/hwrng (one fork and exec per chunk included).
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/../.."

cache=${1:-.build-interop}
meta_pkg=linux-image-cloud-amd64
# Modules the guest loads, by file name without .ko; their dependencies come from modules.dep.
# hw_random (rng-core) is built into the Debian cloud kernel (CONFIG_HW_RANDOM=y).
wanted_modules="virtio_pci virtio-rng virtio_blk"

mkdir -p "$cache/debs" "$cache/guest"
busybox=/bin/busybox
[[ -x $busybox ]] || { echo "build-guest: $busybox missing (apt-get install busybox-static)" >&2; exit 1; }

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
# apt-get download into the cache; refresh the package lists once if they are missing or stale.
# (As root apt warns that the download is unsandboxed: the _apt user cannot write the cache.)
download() {
    (cd "$cache/debs" && apt-get download -qq "$@" 2>/dev/null) && return 0
    echo "build-guest: apt-get download $* failed; running apt-get update" >&2
    $sudo apt-get update -qq
    (cd "$cache/debs" && apt-get download -qq "$@")
}

# The metapackage names the real, versioned image package in its Depends; ask apt for the candidate.
meta_version=$(apt-cache policy "$meta_pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
if [[ -z $meta_version || $meta_version == "(none)" ]]; then
    $sudo apt-get update -qq
    meta_version=$(apt-cache policy "$meta_pkg" | awk '/Candidate:/ {print $2}')
fi
script_hash=$(sha256sum "$self" | cut -c1-16)
busybox_version=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)
stamp="$meta_pkg=$meta_version busybox=$busybox_version script=$script_hash"
if [[ -f $cache/guest/stamp && $(cat "$cache/guest/stamp") == "$stamp" &&
      -f $cache/guest/vmlinuz && -f $cache/guest/initrd.img ]]; then
    echo "build-guest: up to date ($stamp)"
    exit 0
fi

started=$(date +%s%N)
meta_deb=$(ls "$cache/debs/${meta_pkg}_${meta_version//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
if [[ -z $meta_deb ]]; then
    download "$meta_pkg=$meta_version"
    meta_deb=$(ls "$cache/debs/${meta_pkg}_${meta_version//:/%3a}_"*.deb | head -n1)
fi
# Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
image_pkg=$(dpkg-deb -f "$meta_deb" Depends | sed -E 's/^ *([^ ,(]+).*/\1/')
image_version=$(dpkg-deb -f "$meta_deb" Depends | sed -nE 's/.*\(= *([^)]+)\).*/\1/p')
image_deb=$(ls "$cache/debs/${image_pkg}_${image_version//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
if [[ -z $image_deb ]]; then
    download "$image_pkg=$image_version"
    image_deb=$(ls "$cache/debs/${image_pkg}_${image_version//:/%3a}_"*.deb | head -n1)
fi
echo "build-guest: kernel from $(basename "$image_deb")"

# Unpack the kernel package (no root install) and generate modules.dep, which the .deb does not ship.
kroot=$cache/kernel
rm -rf "$kroot"
dpkg-deb -x "$image_deb" "$kroot"
kver=$(ls "$kroot/lib/modules")
depmod -b "$kroot" "$kver"
moddir=$kroot/lib/modules/$kver

# Load order: for each wanted module, its dependencies deepest first (modules.dep lists them
# nearest first), then the module; each module once.
order=()
add_module() { # $1: path relative to $moddir
    local m
    for m in "${order[@]}"; do [[ $m == "$1" ]] && return 0; done
    order+=("$1")
}
for name in $wanted_modules; do
    line=$(grep -E "/$name\.ko(\.[a-z]+)?:" "$moddir/modules.dep") ||
        { echo "build-guest: module $name not in $kver" >&2; exit 1; }
    path=${line%%:*}
    read -r -a deps <<<"${line#*:}"
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do add_module "${deps[i]}"; done
    add_module "$path"
done

# The initramfs tree.
root=$cache/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,data,lib/modules}
cp "$busybox" "$root/bin/busybox"
for path in "${order[@]}"; do
    cp "$moddir/$path" "$root/lib/modules/"
    basename "$path" >>"$root/lib/modules/load-order"
done

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
# Interop test guest (generated by scripts/interop/build-guest.sh): read /dev/hwrng, report, power off.
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() { echo "VIRTRNG-ERROR $*"; sync; poweroff -f; }
# Monotonic microseconds in $now, from the "now at N nsecs" line of /proc/timer_list, read with shell
# builtins only: no fork, so a stamp costs well under a millisecond even under TCG.
stamp() { { read -r _; read -r _; read -r _ _ ns _; } </proc/timer_list; now=$((ns / 1000)); }

bytes=65536
chunks=1
for arg in $(cat /proc/cmdline); do
    case $arg in
    virtrng.bytes=*) bytes=${arg#*=} ;;
    virtrng.chunks=*) chunks=${arg#*=} ;;
    esac
done

for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m" || fail "insmod $m"
done
# virtio-rng registers with the hw_random core while probing; give it up to 5 s.
tries=0
while [ "$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)" = none ] ||
      [ ! -e /sys/class/misc/hw_random/rng_current ]; do
    tries=$((tries + 1))
    [ $tries -gt 50 ] && break
    usleep 100000
done
current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
available=$(echo $(cat /sys/class/misc/hw_random/rng_available 2>/dev/null) | tr ' ' ',')
echo "VIRTRNG-INFO rng_current=${current:-missing} rng_available=${available:-none}"
[ -c /dev/hwrng ] || fail "no /dev/hwrng"

# Chunks of bytes/chunks; the last one takes the remainder. The timed part is the dd reads into
# tmpfs only; the disk write comes after.
chunk=$((bytes / chunks))
: >/data/out
done_bytes=0
n=0
stamp
start=$now
while [ $n -lt $chunks ]; do
    n=$((n + 1))
    size=$chunk
    [ $n -eq $chunks ] && size=$((bytes - done_bytes))
    dd if=/dev/hwrng of=/data/out bs=$size count=1 iflag=fullblock oflag=append conv=notrunc 2>/dev/null ||
        fail "dd chunk $n"
    stamp
    done_bytes=$((done_bytes + size))
    [ $chunks -gt 1 ] && echo "VIRTRNG-CHUNK n=$n bytes=$done_bytes usec=$((now - start))"
done
elapsed=$((now - start))
got=$(wc -c </data/out)

disk=none
if [ -b /dev/vda ]; then
    dd if=/data/out of=/dev/vda bs=4096 conv=fsync 2>/dev/null && disk=written || disk=failed
fi
echo "VIRTRNG-RESULT bytes=$got usec=$elapsed rng_current=${current:-missing} disk=$disk"
sync
poweroff -f
INIT
chmod 755 "$root/init"

# newc cpio, gzip: the Debian kernel has CONFIG_RD_GZIP.
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -6) >"$cache/guest/initrd.img.tmp"
mv "$cache/guest/initrd.img.tmp" "$cache/guest/initrd.img"
cp "$kroot/boot/vmlinuz-$kver" "$cache/guest/vmlinuz"
echo "$stamp" >"$cache/guest/stamp"
echo "build-guest: built $cache/guest in $((($(date +%s%N) - started) / 1000000)) ms;" \
    "modules: $(tr '\n' ' ' <"$root/lib/modules/load-order")"
