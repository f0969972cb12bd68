#!/bin/sh
# make check-fresh: `make check` on a pristine Debian 12, built here and now.
#
# A minimal Debian 12 root is made with debootstrap (variant minbase) from the
# Debian mirror this machine's apt already uses, given what the Debian
# installer would add (sources.list with updates and security, /etc/hosts,
# resolv.conf), then the committed tree (git archive HEAD: uncommitted changes
# are not tested) is copied in and, inside the root, `sh scripts/deps.sh`
# installs what the project installs, and `make check` runs.  A test that
# fails here and not on a developer's machine depends on something deps.sh
# does not install, or on the machine's state.
#
# The root runs in its own mount, PID and UTS namespaces (unshare): when the run
# ends, however it ends, every process started inside is killed with the
# namespace and every mount (/proc, /sys, /dev, tmpfs on /tmp, /run and
# /dev/shm) goes with it; the root is then removed.  Only the downloaded
# .debs are kept, in $FOSR_FRESH_CACHE (default /var/cache/fosr-check-fresh),
# verified by apt and debootstrap on reuse.  The test logs are copied to
# build/check-fresh/.
#
# Needs root, network to the Debian mirror, ~3 GB in /var/tmp.  Installs
# debootstrap on this machine if it is missing.  The last line of output is
# make check's "N passed, N failed" ("0 passed, 1 failed" when make check
# did not get as far as the tests), also written to build/check-fresh/result;
# the exit status is make check's.
#
# Environment: FOSR_MIRROR      Debian mirror URL (default: read from apt's sources)
#              FOSR_SECURITY    security mirror URL (idem)
#              FOSR_FRESH_CACHE .deb cache directory
#              FOSR_FRESH_KEEP  1: keep the root (its path is printed) instead of removing it
set -u
cd "$(dirname "$0")/.." || exit 2
TOP=$(pwd)
SUITE=bookworm
CACHE=${FOSR_FRESH_CACHE:-/var/cache/fosr-check-fresh}
OUT=$TOP/build/check-fresh
T0=$(date +%s)

say() { echo "check-fresh: $*" >&2; }
fail() {
	say "$*"
	[ -d "$OUT" ] && echo "0 passed, 1 failed" >"$OUT/result"
	echo "0 passed, 1 failed"
	exit 1
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (debootstrap, chroot, mounts)"

# ---------------------------------------------------------------- the host
# What this script itself needs: debootstrap; unshare, mount, chroot
# (util-linux, coreutils: always there); git for the tree when it is a checkout.
if ! command -v debootstrap >/dev/null 2>&1; then
	say "installing debootstrap on this machine"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2 ||
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends debootstrap >&2; } ||
	    fail "cannot install debootstrap"
fi

# pick_mirror SUITE: the first URI serving SUITE in apt's sources (the
# archive; SUITE-security, the security one).
. "$TOP/scripts/debian-mirror.sh"
MIRROR=${FOSR_MIRROR:-$(pick_mirror "$SUITE")}
SECURITY=${FOSR_SECURITY:-$(pick_mirror "$SUITE-security")}
[ -n "$MIRROR" ] || fail "no Debian mirror for $SUITE in apt's sources: set FOSR_MIRROR"
MIRROR=${MIRROR%/}
SECURITY=${SECURITY%/}
say "mirror $MIRROR${SECURITY:+, security $SECURITY}"

# ---------------------------------------------------------------- the tree
mkdir -p "$CACHE/debootstrap" "$CACHE/archives/partial" "$OUT" || fail "cannot create $CACHE, $OUT"
rm -f "$OUT/result"
W=$(mktemp -d /var/tmp/fosr-check-fresh.XXXXXX) || fail "mktemp failed"
R=$W/root
NSPID=""
TAILPID=""

cleanup() {
	trap - EXIT INT TERM HUP
	if [ -n "$NSPID" ] && kill -0 "$NSPID" 2>/dev/null; then
		# SIGKILL: unshare blocks SIGTERM and SIGINT while it waits for its
		# child.  --kill-child: the child (PID 1 inside) then gets SIGKILL,
		# and the kernel kills the rest of the namespace with it.
		kill -KILL "$NSPID" 2>/dev/null
		wait "$NSPID" 2>/dev/null
	fi
	NSPID=""
	[ -n "$TAILPID" ] && wait "$TAILPID" 2>/dev/null	# ends with unshare (--pid)
	TAILPID=""
	# the mounts lived in the namespace; none may be left on the host
	if grep -q " $R[/ ]" /proc/mounts 2>/dev/null; then
		say "mounts left under $R (removing nothing):"
		grep " $R[/ ]" /proc/mounts >&2
		return
	fi
	if [ "${FOSR_FRESH_KEEP:-}" = 1 ]; then
		say "root kept in $R"
	else
		rm -rf --one-file-system "$W"
	fi
}
trap cleanup EXIT
trap 'say "interrupted"; cleanup; echo "0 passed, 1 failed" | tee "$OUT/result"; exit 130' INT TERM HUP

if command -v git >/dev/null 2>&1 && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		say "NOTE: uncommitted changes are not tested (the committed tree is: $(git rev-parse --short HEAD))"
	fi
	TREE="git archive $(git rev-parse HEAD)"	# the commit as at the start
else
	TREE="tar -c -f - --exclude=./build --exclude=./fosr-collector --exclude=./.git ."
fi

# ---------------------------------------------------------------- the root
# ns CMD...: CMD in new mount and PID namespaces, in the background (so that
# a signal reaches our trap at once), its pid in NSPID; whatever it mounts
# (debootstrap mounts /proc and /sys in the root) and starts goes with it.
ns() {
	unshare --mount --pid --uts --fork --kill-child --propagation private "$@" &
	NSPID=$!
}

say "debootstrap $SUITE (minbase) into $R"
t=$(date +%s)
ns debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap" "$SUITE" "$R" "$MIRROR" \
    >"$OUT/debootstrap.log" 2>&1
wait "$NSPID" || { NSPID=""; tail -n 30 "$OUT/debootstrap.log" >&2; fail "debootstrap failed"; }
NSPID=""
say "debootstrap: $(($(date +%s) - t)) s"

# What the Debian installer writes and debootstrap does not.
{
	echo "deb $MIRROR $SUITE main"
	echo "deb $MIRROR $SUITE-updates main"
	[ -n "$SECURITY" ] && echo "deb $SECURITY $SUITE-security main"
} >"$R/etc/apt/sources.list"
# The settings this machine's apt needs to use that mirror (a proxy; a frozen
# mirror's Release files past their Valid-Until), nothing else.
apt-config dump 2>/dev/null |
    grep -E '^Acquire::(https?::Proxy|Check-Valid-Until|Check-Date) ' >"$R/etc/apt/apt.conf.d/00mirror"
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
echo fosr-fresh >"$R/etc/hostname"
cat >"$R/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	fosr-fresh
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
# A chroot has no init: packages must not try to start their services.
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"

mkdir -p "$R/src/fosr-collector"
$TREE | tar -x -C "$R/src/fosr-collector" || fail "cannot copy the tree into the root"

# ---------------------------------------------------------------- inside
# Run in the namespaces; the script below is PID 1's child, the chroot's
# commands its descendants.  A clean environment, as a root login would have.
cat >"$W/inside.sh" <<'EOF'
set -u
R=$1
CACHE=$2
hostname fosr-fresh &&		# its own (UTS namespace), as in its /etc/hosts
mount -t proc proc "$R/proc" &&
mount -t sysfs sysfs "$R/sys" &&
mount --rbind /dev "$R/dev" &&
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm" &&
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp" &&
mount -t tmpfs -o mode=755 tmpfs "$R/run" &&
mkdir -p "$R/run/lock" &&
mount --bind "$CACHE/archives" "$R/var/cache/apt/archives" || exit 3
# env --default-signal: signals ignored here (SIGINT, in a shell's background
# job) would be ignored by every test too.
exec env --default-signal chroot "$R" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TERM=dumb LOGNAME=root USER=root SHELL=/bin/sh /bin/sh -c '
	cd /src/fosr-collector || exit 3
	t=$(date +%s)
	echo "== sh scripts/deps.sh"
	sh scripts/deps.sh || { echo "deps.sh failed"; exit 4; }
	echo "deps.sh: $(($(date +%s) - t)) s"
	t=$(date +%s)
	echo "== make check"
	make check
	rc=$?
	echo "make check: $(($(date +%s) - t)) s, exit $rc"
	# what the tests left running (the namespace ends with this shell, and
	# takes them with it; a test should have stopped them itself)
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		[ "$p" = 1 ] && continue
		c=$(tr "\0" " " <"$d/cmdline" 2>/dev/null) && [ -n "$c" ] && echo "left running: pid $p: $c"
	done
	exit $rc'
EOF
say "running deps.sh and make check inside (log: $OUT/check.log)"
: >"$OUT/check.log"	# before tail opens it
ns sh "$W/inside.sh" "$R" "$CACHE" >"$OUT/check.log" 2>&1
tail -n +1 -f --pid="$NSPID" "$OUT/check.log" &
TAILPID=$!
wait "$NSPID"
rc=$?
NSPID=""
wait "$TAILPID" 2>/dev/null
TAILPID=""

rm -rf "$OUT/test-logs"
[ -d "$R/src/fosr-collector/build/test-logs" ] &&
    cp -r "$R/src/fosr-collector/build/test-logs" "$OUT/test-logs"
cleanup		# before the last line: when it is printed, nothing is left
say "total $(($(date +%s) - T0)) s, make check exit $rc"
last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$OUT/check.log" | tail -n 1)
if [ -z "$last" ]; then
	[ "$rc" -ne 0 ] || rc=1
	last="0 passed, 1 failed"
fi
echo "$last" >"$OUT/result"
echo "$last"
exit "$rc"
