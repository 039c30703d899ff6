#!/usr/bin/env bash
# Builds the guest images the driver tests (and CI) boot, once, into a cache
# directory, and prints their paths as KEY=PATH lines:
#
#   ROOTFS=DIR       busybox root file system for lxc guests
#   INITRAMFS=FILE   busybox initramfs (cpio.gz) for qemu guests
#   KERNEL=FILE      vmlinuz from Debian's linux-image-*-cloud-amd64 package
#   DISK=FILE        a blank 4 MiB raw disk image to attach as a drive
#
# qemu-img (qemu-utils) makes the per-guest overlays of disk images.
#
# The kernel package is fetched with `apt-get download` and unpacked with
# `dpkg-deb -x` into a temporary directory: it is never installed. The
# initramfs's /init mounts /proc, /sys and /dev, loads the power button and
# evdev modules taken from the same package, listens to the power button,
# prints CORRAL-GUEST-UP on the console (ttyS0), loads the virtio balloon
# driver and idles. It powers off when the ACPI power button is pressed
# (QMP system_powerdown), or after N seconds when the kernel command line
# says corral.poweroff=N, and panics when it says corral.panic=1 (with
# panic=-1 and QEMU's -no-reboot, QEMU then exits). corral.fill=N makes it
# write and delete N MiB first, so the host holds memory a balloon can take.
# After the marker it loads the virtio drivers (balloon and block: disks
# appear as /dev/vda, /dev/vdb...), prints CORRAL-GUEST-SHELL and runs a
# shell on the console (guest console), unless corral.shell=0.
#
# `testassets.sh rootfs` builds and prints only ROOTFS (no kernel download,
# no QEMU), for tests of containers alone.
#
# Missing tools (qemu-system-x86, busybox-static, cpio, systemd) are installed with
# apt-get. Outputs that exist are kept, so a second run takes milliseconds;
# delete the cache directory (or set CORRAL_ASSETS elsewhere) to rebuild.
# Concurrent runs serialise on a lock file in the cache directory.
set -euo pipefail

ASSETS=${CORRAL_ASSETS:-/var/cache/corral-test-assets}
WHAT=${1:-all}
case $WHAT in
all | rootfs) ;;
*)
	echo "usage: $0 [all|rootfs]" >&2
	exit 2
	;;
esac
mkdir -p "$ASSETS"
exec 9>"$ASSETS/.lock"
flock 9

log() { echo "testassets: $*" >&2; }

need_pkgs=()
[ "$WHAT" = rootfs ] || command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
# A static busybox works inside any root file system.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || need_pkgs+=(busybox-static)
[ "$WHAT" = rootfs ] || command -v cpio >/dev/null || need_pkgs+=(cpio)
[ "$WHAT" = rootfs ] || command -v qemu-img >/dev/null || need_pkgs+=(qemu-utils)
command -v flock >/dev/null || need_pkgs+=(util-linux)
# The nemesis test partitions servers with nftables rules.
[ "$WHAT" = rootfs ] || command -v nft >/dev/null || need_pkgs+=(nftables)
# The unit files in deploy/ are checked with systemd-analyze verify.
[ "$WHAT" = rootfs ] || command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
# The web page is tested in headless Chromium, which trusts the test's CA
# through an NSS database (certutil).
[ "$WHAT" = rootfs ] || command -v chromium >/dev/null || need_pkgs+=(chromium)
[ "$WHAT" = rootfs ] || command -v certutil >/dev/null || need_pkgs+=(libnss3-tools)
# Links and bridges of the network tests, shaping (tc).
[ "$WHAT" = rootfs ] || command -v ip >/dev/null || need_pkgs+=(iproute2)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing ${need_pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
fi
BUSYBOX=/bin/busybox

tmp=$(mktemp -d "$ASSETS/.build.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT

# populate DIR: busybox, its applet links and the minimal directories.
populate() {
	local d=$1
	mkdir -p "$d"/{bin,sbin,etc,proc,sys,dev,tmp,root,usr/bin,usr/sbin,var}
	chmod 1777 "$d/tmp"
	cp "$BUSYBOX" "$d/bin/busybox"
	for a in $("$BUSYBOX" --list); do
		[ "$a" = busybox ] || ln -sf busybox "$d/bin/$a"
	done
	echo "root:x:0:0:root:/root:/bin/sh" >"$d/etc/passwd"
	echo "root:x:0:" >"$d/etc/group"
	echo "corral" >"$d/etc/hostname"
	printf '127.0.0.1\tlocalhost\n' >"$d/etc/hosts"
}

ROOTFS=$ASSETS/rootfs
if [ ! -x "$ROOTFS/bin/busybox" ]; then
	populate "$tmp/rootfs"
	rm -rf "$ROOTFS"
	mv "$tmp/rootfs" "$ROOTFS"
fi

if [ "$WHAT" = rootfs ]; then
	echo "ROOTFS=$ROOTFS"
	exit 0
fi

# The kernel and its modules: one download serves both.
KERNEL=$ASSETS/vmlinuz
MODULES=$ASSETS/modules
if [ ! -s "$KERNEL" ] || [ ! -f "$MODULES/virtio_blk.ko" ]; then
	pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	if [ -z "$pkg" ]; then
		apt-get update -qq >&2
		pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	fi
	[ -n "$pkg" ] || { log "cannot resolve linux-image-cloud-amd64 to a kernel package"; exit 1; }
	log "downloading $pkg (not installing it)"
	mkdir "$tmp/deb"
	chmod 777 "$tmp/deb" # apt's sandbox user writes the download
	(cd "$tmp/deb" && apt-get download -q "$pkg" >&2)
	dpkg-deb -x "$tmp"/deb/*.deb "$tmp/x"
	kdir=$(echo "$tmp"/x/lib/modules/*)
	mkdir "$tmp/modules"
	for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_modern_dev \
		virtio/virtio_pci_legacy_dev virtio/virtio_pci virtio/virtio_balloon \
		acpi/button input/evdev block/virtio_blk; do
		cp "$kdir/kernel/drivers/$m.ko" "$tmp/modules/"
	done
	rm -rf "$MODULES"
	mv "$tmp/modules" "$MODULES"
	cp "$tmp"/x/boot/vmlinuz-* "$tmp/vmlinuz"
	mv "$tmp/vmlinuz" "$KERNEL"
fi

# The version in the name changes with /init: a cached older one is not used.
INITRAMFS=$ASSETS/initramfs-5.cpio.gz
if [ ! -s "$INITRAMFS" ]; then
	r=$tmp/initramfs
	populate "$r"
	mkdir -p "$r/lib/modules"
	cp "$MODULES"/*.ko "$r/lib/modules/"
	cat >"$r/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in button evdev; do
	insmod /lib/modules/$m.ko 2>/dev/null
done
powerbutton() {
	for e in /sys/class/input/event*; do
		if [ "$(cat $e/device/name 2>/dev/null)" = "Power Button" ]; then
			echo /dev/input/${e##*/}
			return
		fi
	done
}
ev=$(powerbutton)
if [ -n "$ev" ]; then
	# Any event from the power button device powers the guest off.
	(dd if=$ev of=/dev/null bs=24 count=1 2>/dev/null; echo CORRAL-GUEST-POWERDOWN; poweroff -f) &
fi
for arg in $(cat /proc/cmdline); do
	case $arg in
	corral.poweroff=*) (sleep ${arg#*=}; echo CORRAL-GUEST-POWEROFF; poweroff -f) & ;;
	corral.panic=1) echo CORRAL-GUEST-PANIC; echo c >/proc/sysrq-trigger ;;
	corral.fill=*)
		# Touch N MiB and free it again: the host then holds that memory
		# for the guest until a balloon takes it back.
		dd if=/dev/zero of=/tmp/fill bs=1048576 count=${arg#*=} 2>/dev/null
		rm -f /tmp/fill
		echo CORRAL-GUEST-FILLED
		;;
	esac
done
echo CORRAL-GUEST-UP
# The balloon driver after the marker: it takes a third of a second.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_balloon virtio_blk; do
	insmod /lib/modules/$m.ko 2>/dev/null
done
if ! grep -qw corral.shell=0 /proc/cmdline; then
	echo CORRAL-GUEST-SHELL
	# A shell that ends (end of input) is started again, not busily.
	while :; do sh; sleep 1; done
fi
while :; do sleep 3600; done
EOF
	chmod 755 "$r/init"
	(cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9 >"$tmp/initramfs.cpio.gz"
	mv "$tmp/initramfs.cpio.gz" "$INITRAMFS"
fi

DISK=$ASSETS/disk.raw
if [ ! -s "$DISK" ]; then
	truncate -s 4M "$tmp/disk.raw"
	mv "$tmp/disk.raw" "$DISK"
fi

echo "ROOTFS=$ROOTFS"
echo "INITRAMFS=$INITRAMFS"
echo "KERNEL=$KERNEL"
echo "DISK=$DISK"
