#!/bin/bash
# Benchmark (not a test): fosr-collector (durable storage and hpfeeds
# publishing to the test broker) beside aiosmtpd and Postfix's smtp-sink under
# the same smtp-source load, then idle-session memory.
#
# Run from anywhere:   bench/run.sh
# Environment knobs (all optional):
#   BENCH_QUICK=1        only the two main scenarios and 2000 idle sessions
#   BENCH_IDLE="2000 10000"   idle-session counts
#   BENCH_SERVERS="fosr aiosmtpd smtp-sink"   which servers, in that order
#   BENCH_TMPDIR=build   where the temp dir (spools) goes (default: build/ in
#                        the repo); a real disk, not tmpfs, or fsync is free;
#                        e.g. a journaled ext4 image, see bench/README.md
#   BENCH_KEEP=1         keep the temp dir (spools, logs) for inspection
#   BENCH_ONLY="1k-500s idle"   only these scenarios (names below; idle = idle test)
#   BENCH_FOSR=path      use this fosr-collector binary and do not run make
#   BENCH_FEED=0         fosr-collector without publishing (default: publishing on)
#   BENCH_ANALYSIS=false fosr-collector without the analysis worker (default: on)
#   BENCH_FEED_ECHO=1    broker confirms by echo (identity may subscribe)
#   BENCH_FEED_WAIT=120  seconds to wait for the feed to catch up after a run
# See bench/README.md for how to read the output.

BENCH_NAME=bench
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

need_postfix
need_aiosmtpd
need_fosr

# Idle sessions need one descriptor each, on both sides.
raise_nofile 20100

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	# name sessions size messages mode(d = many mails per session, c = one per connection)
	SCENARIOS="1k-50s 50 1024 5000 d
100k-50s 50 102400 1000 d"
	IDLE=${BENCH_IDLE:-2000}
else
	SCENARIOS="1k-50s 50 1024 5000 d
100k-50s 50 102400 1000 d
1k-1s 1 1024 1000 d
1k-500s 500 1024 5000 d
1k-50s-conn 50 1024 3000 c"
	IDLE=${BENCH_IDLE:-2000 10000}
fi
SERVERS=${BENCH_SERVERS:-fosr aiosmtpd smtp-sink}
if [ -n "${BENCH_ONLY:-}" ]; then
	# Keep only the scenarios named in BENCH_ONLY (e.g. "1k-500s idle").
	SCENARIOS=$(while read -r l; do
		case " $BENCH_ONLY " in *" ${l%% *} "*) echo "$l" ;; esac
	done <<<"$SCENARIOS")
	case " $BENCH_ONLY " in *" idle "*) ;; *) IDLE="" ;; esac
fi

# Not /tmp or /var/tmp by default: on a machine where tests create and delete
# many files there, ext4 without a journal makes every file creation scan
# recently freed inodes (measured here: 400-800 us per create in /var/tmp,
# 25 us under build/), which would swamp the servers' own cost.
bench_init bench
RES=$TMP/results.tsv
: >"$RES"

# One load scenario against server $1; appends a "load" row to $RES:
# load scen srv sess size msgs msgs/s cpu_us peak_kb client stored usr+sys
#      machine_us client_us broker_us feed_lag_s kernel_us to_exit_us
run_scenario() {
	local srv=$1 scen=$2 sess=$3 size=$4 msgs=$5 mode=$6
	load_run "$srv" "$TMP/$srv-$scen" "$sess" "$size" "$msgs" "$mode"
	if [ "$L_OK" = 0 ]; then
		printf 'load\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\tserver did not start\n' \
		    "$scen" "$srv" "$sess" "$size" "$msgs" >>"$RES"
		return
	fi
	printf 'load\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
	    "$scen" "$srv" "$sess" "$size" "$msgs" "$L_RATE" "$L_CPU" "$L_HWM" \
	    "$L_CLIENT" "$L_STORED" "$L_USRSYS" "$L_MACHINE" "$L_SRC" "$L_BRK" \
	    "${L_LAG:--}" "$L_KERN" "$L_TOEXIT" >>"$RES"
	printf '  %-10s %-12s %s/s %s us/msg (%s, to exit %s) machine %s, kernel %s us/msg %s%s\n' "$srv" "$scen" \
	    "$L_RATE" "$L_CPU" "$L_USRSYS" "$L_TOEXIT" "$L_MACHINE" "$L_KERN" "$L_STORED" "${L_LAG:+ feed lag ${L_LAG}s}"
}

run_idle() {
	local srv=$1 n=$2 dir out
	dir=$TMP/$1-idle-$2
	if [ "$NOFILE" -lt $((n + 100)) ]; then
		printf 'idle\t%s\t%s\t-\tskipped: ulimit -n is %s\n' "$n" "$srv" "$NOFILE" >>"$RES"
		return
	fi
	start_server "$srv" "$dir" || {
		printf 'idle\t%s\t%s\t-\tserver did not start\n' "$n" "$srv" >>"$RES"
		return
	}
	out=$($PY "$BENCH/idle.py" 127.0.0.1 "$PORT" "$SPID" "$n" 2>"$dir/idle.err")
	[ -n "$out" ] || out="idle.py failed: $(tail -1 "$dir/idle.err")"
	stop_server
	printf 'idle\t%s\t%s\t%s\n' "$n" "$srv" "$out" >>"$RES"
	printf '  %-10s idle %-6s %s\n' "$srv" "$n" "$out"
}

echo "bench: $(nproc) cores, $(uname -r), ulimit -n $NOFILE, temp dir $TMP"
echo "bench: on $(fs_describe "$TMP")"
if [ "${BENCH_FEED:-1}" != 0 ]; then
	echo "bench: fosr-collector publishes to the test hpfeeds broker (confirmation by $([ "${BENCH_FEED_ECHO:-0}" = 1 ] && echo "echo" || echo "TCP acks"))"
else
	echo "bench: fosr-collector without publishing (BENCH_FEED=0)"
fi
echo "bench: fosr-collector $("$FOSR" --version 2>&1 | head -1)"
echo "bench: load average before start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews msgs/s)"
echo "bench: fs probe in $TMP: $($PY "$BENCH/fsprobe.py" "$TMP")"
START=$(date +%s)
# Servers one after another within each scenario, so that drift in the
# machine's load or the filesystem's state hits all three alike.
while read -r -u 3 scen sess size msgs mode; do
	[ -n "$scen" ] || continue
	echo "== $scen"
	for srv in $SERVERS; do
		run_scenario "$srv" "$scen" "$sess" "$size" "$msgs" "$mode"
	done
done 3<<<"$SCENARIOS"
for n in $IDLE; do
	echo "== idle $n"
	for srv in $SERVERS; do
		run_idle "$srv" "$n"
	done
done
echo "bench: fs probe in $TMP: $($PY "$BENCH/fsprobe.py" "$TMP")"
echo "bench: done in $(( $(date +%s) - START )) s"
echo
$PY "$BENCH/report.py" "$RES"
