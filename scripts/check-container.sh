#!/bin/sh
# make check-container: build the Dockerfile with podman FROM a Debian 12 base
# made here with debootstrap (the BASE build argument), run it read-only as
# uid 2000 and test it from outside (tests/container/test_container.py):
# mail over 25, 465 and 587, the mail and events on the volume, and a restart
# that keeps the hostname, the certificate and the relay caps.
#
# Not part of `make check` (minutes, root, podman, network to the Debian
# mirror).  Installs podman, runc and debootstrap on this machine when missing.
# Everything (base root, podman storage, image, volume) lives in a temporary
# directory under /var/tmp, removed at the end (FOSR_CONTAINER_KEEP=1 keeps
# it); the .debs debootstrap downloads are kept in the cache check-fresh uses.
#
# On hosts with hybrid cgroups crun refuses to start containers: this uses
# Debian's runc, cgroupfs, no default ulimits, and --ulimit host.
#
# Environment: FOSR_MIRROR, FOSR_SECURITY, FOSR_FRESH_CACHE as check-fresh.sh.
set -u
cd "$(dirname "$0")/.." || exit 2
TOP=$(pwd)
SUITE=bookworm
CACHE=${FOSR_FRESH_CACHE:-/var/cache/fosr-check-fresh}
T0=$(date +%s)
say() { echo "check-container: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (debootstrap, podman)"
need=""
for p in podman runc debootstrap; do
	command -v "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
	say "installing$need on this machine"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >&2 ||
	    fail "cannot install$need"
fi

. "$TOP/scripts/debian-mirror.sh"
MIRROR=${FOSR_MIRROR:-$(pick_mirror "$SUITE")}
SECURITY=${FOSR_SECURITY:-$(pick_mirror "$SUITE-security")}
[ -n "$MIRROR" ] || fail "no Debian mirror for $SUITE in apt's sources: set FOSR_MIRROR"
MIRROR=${MIRROR%/}
SECURITY=${SECURITY%/}

mkdir -p "$CACHE/debootstrap" || fail "cannot create $CACHE"
W=$(mktemp -d /var/tmp/fosr-check-container.XXXXXX) || fail "mktemp failed"
CONTAINERS_CONF=$W/containers.conf
export CONTAINERS_CONF
cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF
# A private store: nothing of this run is left in the machine's podman.
P="podman --runtime runc --root $W/storage --runroot $W/runroot"
export FOSR_PODMAN="$P"

cleanup() {
	trap - EXIT INT TERM HUP
	$P rm -f -t 0 fosr-check >/dev/null 2>&1
	$P volume rm -f fosr-check >/dev/null 2>&1
	if [ "${FOSR_CONTAINER_KEEP:-}" = 1 ]; then
		say "kept $W (podman: $P)"
	else
		$P system reset -f >/dev/null 2>&1
		rm -rf --one-file-system "$W"
	fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM HUP

# ---------------------------------------------------------------- the base
say "debootstrap $SUITE (minbase) from $MIRROR"
t=$(date +%s)
unshare --mount --propagation private debootstrap --variant=minbase \
    --cache-dir="$CACHE/debootstrap" "$SUITE" "$W/base" "$MIRROR" >"$W/debootstrap.log" 2>&1 ||
    { tail -n 20 "$W/debootstrap.log" >&2; fail "debootstrap failed"; }
{
	echo "deb $MIRROR $SUITE main"
	echo "deb $MIRROR $SUITE-updates main"
	[ -n "$SECURITY" ] && echo "deb $SECURITY $SUITE-security main"
} >"$W/base/etc/apt/sources.list"
apt-config dump 2>/dev/null |
    grep -E '^Acquire::(https?::Proxy|Check-Valid-Until|Check-Date) ' >"$W/base/etc/apt/apt.conf.d/00mirror"
# Slimmed as debian:12-slim is (debuerreotype's slimify): no apt lists or
# caches, no documentation, man pages or locales, and dpkg told to install none.
rm -rf "$W/base/var/lib/apt/lists/"* "$W/base/var/cache/apt/"*.bin "$W/base/var/cache/apt/archives/"*.deb
cat >"$W/base/etc/dpkg/dpkg.cfg.d/docker" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
SLIM
find "$W/base/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$W/base/usr/share/groff/"* "$W/base/usr/share/info/"* "$W/base/usr/share/locale/"* \
    "$W/base/usr/share/man/"*
tar -C "$W/base" --numeric-owner -cf - . | $P import -q - localhost/fosr-base:$SUITE >/dev/null ||
    fail "podman import failed"
rm -rf --one-file-system "$W/base"
say "base image: $(($(date +%s) - t)) s"

# ---------------------------------------------------------------- the image
# The committed tree, as check-fresh: uncommitted changes are not tested.
mkdir -p "$W/tree"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	[ -n "$(git status --porcelain --untracked-files=no)" ] &&
	    say "NOTE: uncommitted changes are not tested (the committed tree is: $(git rev-parse --short HEAD))"
	git archive HEAD | tar -x -C "$W/tree"
else
	tar -c -f - --exclude=./build --exclude=./fosr-collector --exclude=./.git . | tar -x -C "$W/tree"
fi
say "building the image FROM localhost/fosr-base:$SUITE"
t=$(date +%s)
$P build --network host --build-arg BASE=localhost/fosr-base:$SUITE \
    -t localhost/fosr-collector:check -f "$W/tree/Dockerfile" "$W/tree" >"$W/build.log" 2>&1 ||
    { tail -n 40 "$W/build.log" >&2; fail "podman build failed"; }
BUILD_S=$(($(date +%s) - t))
SIZE=$($P image inspect --format '{{.Size}}' localhost/fosr-collector:check)
say "image built in $BUILD_S s, $SIZE bytes ($((SIZE / 1048576)) MiB)"

# ---------------------------------------------------------------- the test
/usr/bin/python3 "$TOP/tests/container/test_container.py" localhost/fosr-collector:check
rc=$?
say "total $(($(date +%s) - T0)) s; build $BUILD_S s; image $((SIZE / 1048576)) MiB; test exit $rc"
exit $rc
