#!/bin/bash
# Scaling benchmark (not a test): how server CPU per mail grows with the
# number of concurrent active sessions.  For each N (100, 1,000, 10,000)
# smtp-source -d -s N keeps N sessions open, each sending 1 KB mails one after
# another, against fosr-collector (durable storage and publishing on, as in
# run.sh), aiosmtpd and smtp-sink.  Prints CPU us/msg per N, its ratio to
# N=100 (flat = 1.0) and fosr-collector's ratio to the others at each N.
#
# Run from anywhere:   bench/scale.sh
# Environment knobs (all optional):
#   SCALE_N="100 1000 10000"   session counts
#   SCALE_PER_SESSION=3  messages per session (total = max(N x this, SCALE_MIN))
#   SCALE_MIN=5000       at least this many messages per run (tick resolution)
#   BENCH_SERVERS, BENCH_FOSR, BENCH_TMPDIR, BENCH_KEEP, BENCH_FEED,
#   BENCH_FEED_ECHO, BENCH_FEED_WAIT: as for bench/run.sh
# Needs root for ulimit -n above N (both the server and smtp-source hold one
# descriptor per session) and for smtp-sink -u nobody.

BENCH_NAME="scale bench"
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

NS=${SCALE_N:-100 1000 10000}
PER=${SCALE_PER_SESSION:-3}
MIN=${SCALE_MIN:-5000}
SERVERS=${BENCH_SERVERS:-fosr aiosmtpd smtp-sink}

need_postfix
need_aiosmtpd
need_fosr
max=0
for n in $NS; do [ "$n" -gt "$max" ] && max=$n; done
raise_nofile $((max + 1000))
bench_init scalebench
RES=$TMP/scale.tsv
: >"$RES"

# Established TCP connections on the machine (ss -s).
estab() {
	ss -s | sed -n 's/^TCP:.*estab \([0-9]*\).*/\1/p'
}

# Largest number of established TCP connections seen every 0.5 s until file
# $1 exists, less those open when it started (other users'), halved (client
# and server ends are both local).
peak_sampler() {
	local base peak=0 e
	base=$(estab)
	while [ ! -e "$1" ]; do
		e=$(estab)
		[ "${e:-0}" -gt "$peak" ] && peak=$e
		sleep 0.5
	done
	e=$(( (peak - ${base:-0}) / 2 ))
	[ "$e" -lt 0 ] && e=0
	echo "$e"
}

echo "scale bench: $(nproc) cores, $(uname -r), ulimit -n $NOFILE, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "scale bench: temp dir $TMP on $(fs_describe "$TMP")"
echo "scale bench: fs probe: $($PY "$BENCH/fsprobe.py" "$TMP")"
START=$(date +%s)
for n in $NS; do
	msgs=$((n * PER))
	[ "$msgs" -lt "$MIN" ] && msgs=$MIN
	echo "== $n sessions, $msgs messages"
	for srv in $SERVERS; do
		if [ "$NOFILE" -lt $((n + 100)) ]; then
			printf '%s\t%s\t%s\t-\t-\t-\t-\t-\tskipped: ulimit -n is %s\n' \
			    "$n" "$srv" "$msgs" "$NOFILE" >>"$RES"
			echo "  $srv skipped: ulimit -n is $NOFILE"
			continue
		fi
		dir=$TMP/$srv-$n
		mkdir -p "$dir"
		peak_sampler "$dir/.done" >"$dir/peak" &
		ppid_=$!
		load_run "$srv" "$dir" "$n" 1024 "$msgs" d
		touch "$dir/.done"
		wait "$ppid_"
		if [ "$L_OK" = 0 ]; then
			printf '%s\t%s\t%s\t-\t-\t-\t-\t-\tserver did not start\n' \
			    "$n" "$srv" "$msgs" >>"$RES"
			continue
		fi
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s %s%s\n' "$n" "$srv" "$msgs" \
		    "$L_RATE" "$L_CPU" "$L_MACHINE" "$L_KERN" "$(cat "$dir/peak")" \
		    "$L_CLIENT" "$L_STORED" "${L_LAG:+ feed_lag=${L_LAG}s}" >>"$RES"
		printf '  %-10s %9s msgs/s %7s us/msg  machine %7s  kernel %6s  peak %s sessions  %s %s%s\n' \
		    "$srv" "$L_RATE" "$L_CPU" "$L_MACHINE" "$L_KERN" "$(cat "$dir/peak")" \
		    "$L_CLIENT" "$L_STORED" "${L_LAG:+ feed lag ${L_LAG}s}"
	done
done
echo "scale bench: fs probe: $($PY "$BENCH/fsprobe.py" "$TMP")"
echo "scale bench: done in $(( $(date +%s) - START )) s"
echo
$PY - "$RES" "$SERVERS" <<'EOF'
import sys

rows, ns = {}, []
for line in open(sys.argv[1]):
	c = line.rstrip("\n").split("\t")
	rows[c[0], c[1]] = c
	if c[0] not in ns:
		ns.append(c[0])
servers = sys.argv[2].split()


def num(s):
	try:
		return float(s)
	except (TypeError, ValueError):
		return None


def ratio(a, b):
	a, b = num(a), num(b)
	return "%.2f" % (a / b) if a is not None and b else "-"


print("Concurrent active sessions (smtp-source -d -s N, 1 KB); CPU = server utime+stime / messages;")
print("machine/kernel as in run.sh; peak = most established sessions seen (ss -s, every 0.5 s; the")
print("broker connection and a few of the machine's others may add a handful)")
hdr = "%6s  %-10s %7s %9s %11s %9s %9s %8s %8s  %s" % (
    "N", "server", "msgs", "msgs/s", "CPU us/msg", "vs N=%s" % ns[0], "machine",
    "kernel", "peak", "client / stored")
print(hdr)
print("-" * len(hdr))
for n in ns:
	for s in servers:
		c = rows.get((n, s))
		if not c:
			continue
		base = rows.get((ns[0], s))
		print("%6s  %-10s %7s %9s %11s %9s %9s %8s %8s  %s" % (
		    n, s, c[2], c[3], c[4], ratio(c[4], base[4] if base else None),
		    c[5], c[6], c[7], c[8]))
print()
others = [s for s in servers if s != "fosr"]
if "fosr" in servers and others:
	print("fosr-collector / other, server CPU per message (below 1 is better for fosr)")
	print("%6s  %s" % ("N", "  ".join("%12s" % ("vs " + o) for o in others)))
	for n in ns:
		f = rows.get((n, "fosr"))
		print("%6s  %s" % (n, "  ".join(
		    "%12s" % ratio(f[4] if f else None, rows[n, o][4] if (n, o) in rows else None)
		    for o in others)))
EOF
