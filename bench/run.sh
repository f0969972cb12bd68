#!/bin/bash
# Benchmark (not a test): fosr-collector beside aiosmtpd and Postfix's
# smtp-sink under the same smtp-source load, then idle-session memory.
#
# Run from the repository root:   bench/run.sh
# Environment knobs (all optional):
#   BENCH_QUICK=1        only the two main scenarios and 2000 idle sessions
#   BENCH_IDLE="2000 10000"   idle-session counts
#   BENCH_SERVERS="fosr aiosmtpd smtp-sink"   which servers, in that order
#   BENCH_TMPDIR=build   where the temp dir (spools) goes (default: build/ in
#                        the repo); a real disk, not tmpfs, or fsync is free
#   BENCH_KEEP=1         keep the temp dir (spools, logs) for inspection
#   BENCH_ONLY="1k-500s idle"   only these scenarios (names below; idle = idle test)
#   BENCH_FOSR=path      use this fosr-collector binary and do not run make
# See bench/README.md for how to read the output.

set -u
export LC_ALL=C

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
BENCH=$ROOT/bench
PY=/usr/bin/python3
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink
FOSR=${BENCH_FOSR:-$ROOT/fosr-collector}
TCK=$(getconf CLK_TCK)

die() { echo "bench: $*" >&2; exit 1; }

[ -x "$SOURCE" ] && [ -x "$SINK" ] ||
	die "needs Postfix's smtp-source and smtp-sink: apt-get install postfix"
$PY -c 'import aiosmtpd' 2>/dev/null ||
	die "needs aiosmtpd for $PY: apt-get install python3-aiosmtpd"

if [ -z "${BENCH_FOSR:-}" ]; then
	make fosr-collector >/dev/null || die "make fosr-collector failed"
fi
[ -x "$FOSR" ] || die "no $FOSR"

# Idle sessions need one descriptor each, on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)

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
mkdir -p "$ROOT/build"
TMP=$(mktemp -d "${BENCH_TMPDIR:-$ROOT/build}/bench.XXXXXX") || die "mktemp"
RES=$TMP/results.tsv
: >"$RES"
SPID=""

cleanup() {
	if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
		kill "$SPID" 2>/dev/null
		sleep 0.5
		kill -9 "$SPID" 2>/dev/null
	fi
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "bench: kept $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	$PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until a 220 banner comes from 127.0.0.1:$1 (30 s), or fail.
wait_ready() {
	$PY - "$1" <<'EOF'
import socket, sys, time
end = time.time() + 30
while time.time() < end:
	try:
		s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2)
		s.settimeout(5)
		if s.recv(512).startswith(b"220"):
			s.sendall(b"QUIT\r\n")
			s.recv(512)
			sys.exit(0)
	except OSError:
		pass
	time.sleep(0.1)
sys.exit(1)
EOF
}

# "utime stime" of the whole process (all threads, live and exited), in ticks.
cpu_ticks() {
	awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat"
}

vm_kb() {
	awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}

# Write the fosr-collector config for work dir $1 and port $2.
fosr_config() {
	cat >"$1/fosr.yml" <<EOF
hostname: "mx.bench.example"
user: ""
listeners:
  - {address: 127.0.0.1, port: $2, tls: starttls, name: smtp}
tls:
  certificate: "$TMP/tls/cert.pem"
  key: "$TMP/tls/key.pem"
spool:
  directory: "$1/spool"
event_log: "$1/events.json"
limits:
  sessions: 20000
  sessions_per_ip: 20000
EOF
}

# Start server $1 with work dir $2; sets SPID and PORT.
start_server() {
	local name=$1 dir=$2
	mkdir -p "$dir"
	PORT=$(free_port)
	case $name in
	fosr)
		mkdir -p "$TMP/tls"
		fosr_config "$dir" "$PORT"
		"$FOSR" -c "$dir/fosr.yml" 2>"$dir/server.log" &
		;;
	aiosmtpd)
		$PY "$BENCH/aiosmtpd_server.py" 127.0.0.1 "$PORT" "$dir/mail" \
		    2>"$dir/server.log" &
		;;
	smtp-sink)
		# -m: smtp-sink serves only 256 connections at once by default.
		"$SINK" -c -m 20000 -u nobody "127.0.0.1:$PORT" 20000 \
		    >"$dir/counter.log" 2>"$dir/server.log" &
		;;
	esac
	SPID=$!
	if ! wait_ready "$PORT"; then
		echo "bench: $name did not come up on port $PORT:" >&2
		tail -5 "$dir/server.log" >&2
		stop_server
		return 1
	fi
}

stop_server() {
	[ -n "$SPID" ] || return 0
	kill "$SPID" 2>/dev/null
	for _ in $(seq 50); do
		kill -0 "$SPID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$SPID" 2>/dev/null; then
		echo "bench: pid $SPID ignored SIGTERM for 5 s, killing" >&2
		kill -9 "$SPID" 2>/dev/null
	fi
	wait "$SPID" 2>/dev/null
	SPID=""
}

# How many mails the server $1 (work dir $2) says it has; "-" if unknown.
stored_count() {
	case $1 in
	fosr)
		local files lines ev
		files=$(find "$2/spool/messages" -maxdepth 1 -name '*.eml' 2>/dev/null | wc -l)
		lines=$(cat "$2/spool/receptions.jsonl" 2>/dev/null | wc -l)
		ev=$(grep -c '"fosr.mail.received"' "$2/events.json" 2>/dev/null)
		echo "files=$files receptions=$lines events=${ev:-0} log_warnings=$(awk '$2 != "info" && $2 != "debug"' "$2/server.log" | wc -l)"
		;;
	aiosmtpd)
		local n u
		n=$(find "$2/mail" -type f | wc -l)
		u=$(find "$2/mail" -type f -print0 | xargs -0 -r sha256sum | awk '{print $1}' | sort -u | wc -l)
		echo "files=$n distinct=$u"
		;;
	smtp-sink)
		echo "discarded"
		;;
	esac
}

run_scenario() {
	local srv=$1 scen=$2 sess=$3 size=$4 msgs=$5 mode=$6
	local dir=$TMP/$srv-$scen dflag="" c0 c1 t0 t1 rc err hwm stored alive
	[ "$mode" = d ] && dflag=-d
	start_server "$srv" "$dir" || {
		printf 'load\t%s\t%s\t%s\t%s\t%s\t-\t-\t-\t-\tserver did not start\n' \
		    "$scen" "$srv" "$sess" "$size" "$msgs" >>"$RES"
		return
	}
	c0=$(cpu_ticks "$SPID")
	t0=$(date +%s.%N)
	"$SOURCE" $dflag -s "$sess" -m "$msgs" -l "$size" -M client.bench.example \
	    -f sender@client.bench.example -t rcpt@dest.bench.example \
	    "127.0.0.1:$PORT" >"$dir/source.out" 2>"$dir/source.err"
	rc=$?
	t1=$(date +%s.%N)
	alive=alive
	kill -0 "$SPID" 2>/dev/null || alive=DIED
	c1=$(cpu_ticks "$SPID" 2>/dev/null)
	hwm=$(vm_kb "$SPID" VmHWM 2>/dev/null)
	if [ $alive = DIED ] || [ -z "$c1" ]; then
		alive=DIED
		c1=$c0
		hwm=-
		wait "$SPID"
		echo "  !! $srv exited during the run (status $?); last log lines:"
		tail -3 "$dir/server.log" | cut -c1-200 | sed 's/^/      /'
	fi
	# Counted before the server stops: a 250 must already mean "on disk".
	stored=$(stored_count "$srv" "$dir")
	err=$(grep -c . "$dir/source.err")
	stop_server
	printf 'load\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$srv" \
	    "$sess" "$size" "$msgs" \
	    "$(awk -v m="$msgs" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", m / (b - a) }')" \
	    "$(awk -v m="$msgs" -v c0="$c0" -v c1="$c1" -v h="$TCK" 'BEGIN {
		split(c0, a, " "); split(c1, b, " "); k = 1e6 / h / m
		printf "%.1f", (b[1] + b[2] - a[1] - a[2]) * k }')" \
	    "$hwm" "rc=$rc,stderr_lines=$err,$alive" "$stored" \
	    "$(awk -v m="$msgs" -v c0="$c0" -v c1="$c1" -v h="$TCK" 'BEGIN {
		split(c0, a, " "); split(c1, b, " "); k = 1e6 / h / m
		printf "%.0f+%.0f", (b[1] - a[1]) * k, (b[2] - a[2]) * k }')" >>"$RES"
	printf '  %-10s %-12s %s\n' "$srv" "$scen" "$(tail -1 "$RES" | cut -f7- | tr '\t' ' ')"
	if [ "$err" -gt 0 ]; then
		echo "    smtp-source stderr (first lines):"
		head -3 "$dir/source.err" | sed 's/^/      /'
	fi
	if [ "$srv" = fosr ] && [ -s "$dir/server.log" ]; then
		local w
		w=$(awk '$2 != "info" && $2 != "debug"' "$dir/server.log" | wc -l)
		[ "$w" -gt 0 ] && {
			echo "    fosr-collector log: $w error/warning lines, first:"
			awk '$2 != "info" && $2 != "debug"' "$dir/server.log" |
			    head -3 | cut -c1-200 | sed 's/^/      /'
		}
	fi
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

echo "bench: $(nproc) cores, $(uname -r), temp dir $TMP ($(stat -f -c %T "$TMP")), ulimit -n $NOFILE"
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
