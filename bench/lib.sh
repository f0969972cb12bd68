# shellcheck shell=bash
# shellcheck disable=SC2034 # NOFILE, L_*: globals for the sourcing scripts
# Helpers shared by bench/run.sh, bench/tls.sh and bench/scale.sh (sourced,
# not run).  The sourcing script sets BENCH_NAME (for messages) and then calls
# bench_init TMP_PREFIX.  Knobs read here:
#   BENCH_FOSR=path    use this fosr-collector binary and do not run make
#   BENCH_TMPDIR=dir   where the temp dir goes (default build/ in the repo)
#   BENCH_KEEP=1       keep the temp dir
#   BENCH_FEED=0       fosr-collector without publishing (default 1 where the
#                      script supports it: run.sh, scale.sh)
#   BENCH_FEED_ECHO=1  the broker identity may also subscribe, so publishes
#                      are confirmed by the broker's echo instead of TCP acks
#   BENCH_FEED_WAIT=120  seconds to wait for the feed to catch up after a run

set -u
export LC_ALL=C

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
BENCH=$ROOT/bench
PY=/usr/bin/python3
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink
BROKER=$ROOT/tests/broker/hpfeeds_broker.py
FOSR=${BENCH_FOSR:-$ROOT/fosr-collector}
TCK=$(getconf CLK_TCK)
BENCH_NAME=${BENCH_NAME:-bench}
SPID=""		# the server under test
BPID=""		# the hpfeeds broker
BPORT=""	# its port while it runs (fosr_config adds a feed: when set)
TMP=""

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }

need_postfix() {
	{ [ -x "$SOURCE" ] && [ -x "$SINK" ]; } ||
		die "needs Postfix's smtp-source and smtp-sink: apt-get install postfix"
}

need_aiosmtpd() {
	$PY -c 'import aiosmtpd' 2>/dev/null ||
		die "needs aiosmtpd for $PY: apt-get install python3-aiosmtpd"
}

# Build fosr-collector unless BENCH_FOSR names a binary.
need_fosr() {
	if [ -z "${BENCH_FOSR:-}" ]; then
		make fosr-collector >/dev/null || die "make fosr-collector failed"
	fi
	[ -x "$FOSR" ] || die "no $FOSR"
}

# Raise the descriptor limit to $1 (root may raise the hard limit too), or as
# far as allowed; sets NOFILE.
raise_nofile() {
	local want=${1:-0}
	if [ "$(ulimit -Hn)" != unlimited ] && [ "$want" -gt "$(ulimit -Hn)" ]; then
		ulimit -Hn "$want" 2>/dev/null
	fi
	ulimit -n "$(ulimit -Hn)" 2>/dev/null
	NOFILE=$(ulimit -n)
}

# Make the temp dir $BENCH_TMPDIR/$1.XXXXXX (sets TMP) and the cleanup traps.
bench_init() {
	mkdir -p "$ROOT/build"
	TMP=$(mktemp -d "${BENCH_TMPDIR:-$ROOT/build}/$1.XXXXXX") || die "mktemp"
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

bench_cleanup() {
	local p
	for p in "$SPID" "$BPID"; do
		if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
			kill "$p" 2>/dev/null
			sleep 0.5
			kill -9 "$p" 2>/dev/null
		fi
	done
	[ -n "$TMP" ] || return
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "$BENCH_NAME: kept $TMP"
	else
		rm -rf "$TMP"
	fi
}

free_port() {
	$PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Wait until 127.0.0.1:$1 sends its 220 banner (30 s), or fail.  $2 =
# "implicit": TLS from the first byte (465-style), certificate not checked.
wait_ready() {
	$PY - "$1" "${2:-plain}" <<'EOF'
import socket, ssl, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
end = time.time() + 30
while time.time() < end:
	try:
		s = socket.create_connection(("127.0.0.1", port), 2)
		s.settimeout(5)
		if mode == "implicit":
			s = ctx.wrap_socket(s)
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

# "utime stime" of process $1 (all threads, live and exited), in ticks.
cpu_ticks() {
	awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat"
}

# Ticks the whole machine spent busy, from /proc/stat: user + system + irq +
# softirq + steal of all CPUs.  Not idle, not iowait, and not "nice" (user
# time of niced processes: the compilers and fuzzers others run at nice 19).
sys_ticks() {
	awk '$1 == "cpu" { print $2 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# Ticks spent by the kernel outside any user process: all kernel threads
# (children of kthreadd: jbd2, kworkers incl. the loop device's, kblockd,
# ksoftirqd; utime+stime) plus irq and softirq time from /proc/stat.  Kernel
# threads that exit during the interval are missed (few: worker pools).
kernel_ticks() {
	{
		awk '$1 == "cpu" { print $7 + $8; exit }' /proc/stat
		cat /proc/[0-9]*/stat 2>/dev/null |
		    awk '{ sub(/^.*\) /, ""); if ($2 == 2 || $2 == 0) print $12 + $13 }'
	} | awk '{ t += $1 } END { print t + 0 }'
}

vm_kb() {
	awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}

# A self-signed RSA 2048 certificate in $TMP/tls/{cert,key}.pem.
make_cert() {
	mkdir -p "$TMP/tls"
	[ -s "$TMP/tls/cert.pem" ] && return 0
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/tls/key.pem" \
	    -out "$TMP/tls/cert.pem" -days 2 -subj /CN=mx.bench.example \
	    >/dev/null 2>&1 || die "openssl req failed"
}

# Start the test hpfeeds broker with its log in $1/broker.log; sets BPID and
# BPORT.  Identity "writer" may publish to spam.mails (and, with
# BENCH_FEED_ECHO=1, subscribe to it too, which makes the broker echo every
# publish back to the collector as its confirmation).
broker_start() {
	local dir=$1 sub="" i
	[ "${BENCH_FEED_ECHO:-0}" = 1 ] && sub=spam.mails
	mkdir -p "$dir"
	$PY "$BROKER" --port 0 --user "writer:secret:spam.mails:$sub" \
	    >"$dir/broker.port" 2>"$dir/broker.log" &
	BPID=$!
	for i in $(seq 100); do
		BPORT=$(awk '$1 == "PORT" { print $2 }' "$dir/broker.port" 2>/dev/null)
		[ -n "$BPORT" ] && return 0
		kill -0 "$BPID" 2>/dev/null || break
		[ "$i" -lt 100 ] && sleep 0.1
	done
	echo "$BENCH_NAME: the hpfeeds broker did not start:" >&2
	tail -3 "$dir/broker.log" >&2
	broker_stop
	return 1
}

broker_stop() {
	if [ -n "$BPID" ]; then
		kill "$BPID" 2>/dev/null
		wait "$BPID" 2>/dev/null
	fi
	BPID=""
	BPORT=""
}

# Publishes the broker (log in $1) accepted.
broker_published() {
	grep -c '^publish ' "$1/broker.log" 2>/dev/null
}

# Wait (at most BENCH_FEED_WAIT s) until fosr-collector's cursor for
# spam.mails in spool $1 reaches the end of the reception journal, i.e. every
# mail that got a 250 was confirmed by the broker.  Prints the seconds waited;
# fails on timeout.  The cursor is saved once a second.
feed_wait() {
	local spool=$1 end cur t0 lim
	lim=${BENCH_FEED_WAIT:-120}
	t0=$(date +%s.%N)
	# 7370616d2e6d61696c73 = "spam.mails" in hex
	while :; do
		end=$(stat -c %s "$spool/receptions.jsonl" 2>/dev/null || echo 0)
		# the cursor file's first field is the byte offset (then ino=, dev=...)
		cur=$(cut -d' ' -f1 "$spool/feed/7370616d2e6d61696c73.cursor" 2>/dev/null || echo -1)
		[ "$cur" = "$end" ] && break
		if awk -v a="$t0" -v b="$(date +%s.%N)" -v l="$lim" 'BEGIN { exit !(b - a > l) }'; then
			awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
			return 1
		fi
		sleep 0.05
	done
	awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

# Write $1/fosr.yml: spool and event log in $1, listeners from $2 (YAML list
# items, one a line), a feed: section when the broker runs (BPORT set).
fosr_config() {
	make_cert
	{
		cat <<EOF
hostname: "mx.bench.example"
user: ""
listeners:
$2
tls:
  certificate: "$TMP/tls/cert.pem"
  key: "$TMP/tls/key.pem"
spool:
  directory: "$1/spool"
event_log: "$1/events.json"
limits:
  sessions: 20000
  sessions_per_ip: 20000
client_lookup:
  enabled: ${BENCH_LOOKUP:-false}
EOF
		# Only when asked: a binary from before the analysis worker refuses the key.
		if [ -n "${BENCH_ANALYSIS:-}" ]; then
			printf 'analysis:\n  enabled: %s\n' "$BENCH_ANALYSIS"
		fi
		if [ -n "$BPORT" ]; then
			cat <<EOF
feed:
  broker: "127.0.0.1"
  port: $BPORT
  identity: "writer"
  secret: "secret"
  channels: ["spam.mails"]
EOF
		fi
	} >"$1/fosr.yml"
}

# Start fosr-collector in work dir $1 with listeners $2 (see fosr_config);
# sets SPID.  The caller waits for readiness.
fosr_start() {
	mkdir -p "$1"
	fosr_config "$1" "$2"
	"$FOSR" -c "$1/fosr.yml" 2>"$1/server.log" &
	SPID=$!
}

# Start plain-SMTP server $1 (fosr, aiosmtpd, smtp-sink) in work dir $2 on a
# free port; sets SPID and PORT.  fosr-collector publishes when the broker
# runs (see broker_start).
start_server() {
	local name=$1 dir=$2
	mkdir -p "$dir"
	PORT=$(free_port)
	case $name in
	fosr)
		fosr_start "$dir" "  - {address: 127.0.0.1, port: $PORT, tls: starttls, name: smtp}"
		;;
	aiosmtpd)
		$PY "$BENCH/aiosmtpd_server.py" 127.0.0.1 "$PORT" "$dir/mail" \
		    2>"$dir/server.log" &
		SPID=$!
		;;
	smtp-sink)
		# -m: smtp-sink serves only 256 connections at once by default.
		"$SINK" -c -m 20000 -u nobody "127.0.0.1:$PORT" 20000 \
		    >"$dir/counter.log" 2>"$dir/server.log" &
		SPID=$!
		;;
	esac
	if ! wait_ready "$PORT"; then
		echo "$BENCH_NAME: $name did not come up on port $PORT:" >&2
		tail -5 "$dir/server.log" >&2
		stop_server
		return 1
	fi
}

# User+system ticks of this shell's reaped children so far, into CH_TICKS.
# (Not via $(...): a subshell has its own, empty, children's times.)
children_ticks() {
	times >"$TMP/.times"
	CH_TICKS=$(awk -v h="$TCK" 'NR == 2 {
		split($1, u, /[ms]/); split($2, s, /[ms]/)
		printf "%.0f", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * h }' "$TMP/.times")
}

# Stop the server under test (SIGTERM, SIGKILL after 5 s).  Sets STOP_TICKS:
# the server's whole-life CPU, from its rusage when reaped (plus a few sleeps).
stop_server() {
	local t0
	STOP_TICKS=""
	[ -n "$SPID" ] || return 0
	children_ticks
	t0=$CH_TICKS
	kill "$SPID" 2>/dev/null
	for _ in $(seq 50); do
		kill -0 "$SPID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$SPID" 2>/dev/null; then
		echo "$BENCH_NAME: pid $SPID ignored SIGTERM for 5 s, killing" >&2
		kill -9 "$SPID" 2>/dev/null
	fi
	wait "$SPID" 2>/dev/null
	children_ticks
	STOP_TICKS=$((CH_TICKS - t0))
	SPID=""
}

# Run smtp-source with arguments "$2"..., output in $1/source.{out,err}; sets
# SRC_RC and SRC_TICKS (its own user+system CPU, in ticks).
run_source() {
	local dir=$1 t
	shift
	t=$( (
		"$SOURCE" "$@" >"$dir/source.out" 2>"$dir/source.err"
		echo "rc=$?"
		times
	) | awk -v h="$TCK" '
		/^rc=/ { rc = substr($0, 4); next }
		NR == 3 {
			# children: "0m1.230s 0m0.450s"
			split($1, u, /[ms]/); split($2, s, /[ms]/)
			t = (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * h
		}
		END { printf "%d %.0f", rc, t }')
	SRC_RC=${t%% *}
	SRC_TICKS=${t##* }
}

# Lines of fosr-collector's log (in $1) that are not info or debug.
fosr_warnings() {
	awk '$2 != "info" && $2 != "debug"' "$1/server.log" 2>/dev/null | wc -l
}

# How many mails server $1 (work dir $2) says it has; "-" if unknown.
stored_count() {
	case $1 in
	fosr)
		local files lines ev
		files=$(find "$2/spool/messages" -maxdepth 1 -name '*.eml' 2>/dev/null | wc -l)
		lines=$(wc -l <"$2/spool/receptions.jsonl" 2>/dev/null || echo 0)
		ev=$(grep -c '"fosr.mail.received"' "$2/events.json" 2>/dev/null)
		echo "files=$files receptions=$lines events=${ev:-0} log_warnings=$(fosr_warnings "$2")"
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

# us per message of a tick delta: per_msg TICKS MSGS
per_msg() {
	awk -v t="$1" -v m="$2" -v h="$TCK" 'BEGIN { printf "%.1f", t * 1e6 / h / m }'
}

# One smtp-source load against server $1 in work dir $2: $3 sessions, $4-byte
# bodies, $5 messages, mode $6 (d = many mails per session, c = one per
# connection).  For fosr-collector the broker is started first unless
# BENCH_FEED=0, and after smtp-source ends the server CPU is counted until the
# feed cursor reached the journal end (publishing belongs to the mail).
# Sets L_OK (0 = server did not start), L_RATE (msgs/s), L_CPU (server us/msg),
# L_USRSYS ("usr+sys" us/msg), L_HWM (KB), L_CLIENT, L_STORED, L_MACHINE
# (us/msg, whole machine), L_SRC, L_BRK, L_KERN (client, broker, kernel
# threads + irq/softirq, us/msg), L_LAG (s the feed needed after the run),
# L_TOEXIT (server us/msg from the start of the load to its exit).
load_run() {
	local srv=$1 dir=$2 sess=$3 size=$4 msgs=$5 mode=$6
	local dflag="" c0 c1 s0 s1 k0 k1 b0=0 b1=0 t0 t1 err alive feed=0 lag="" pub n
	[ "$mode" = d ] && dflag=-d
	L_OK=0 L_RATE=- L_CPU=- L_USRSYS=- L_HWM=- L_CLIENT=- L_STORED=- L_MACHINE=-
	L_SRC=- L_BRK=- L_KERN=- L_LAG="" L_TOEXIT=-
	mkdir -p "$dir"
	if [ "$srv" = fosr ] && [ "${BENCH_FEED:-1}" != 0 ]; then
		broker_start "$dir" || return
		feed=1
	fi
	if ! start_server "$srv" "$dir"; then
		broker_stop
		return
	fi
	L_OK=1
	c0=$(cpu_ticks "$SPID")
	[ $feed = 1 ] && b0=$(cpu_ticks "$BPID" | awk '{ print $1 + $2 }')
	s0=$(sys_ticks)
	k0=$(kernel_ticks)
	t0=$(date +%s.%N)
	# shellcheck disable=SC2086 # dflag is empty or one word
	run_source "$dir" $dflag -s "$sess" -m "$msgs" -l "$size" -M client.bench.example \
	    -f sender@client.bench.example -t rcpt@dest.bench.example "127.0.0.1:$PORT"
	t1=$(date +%s.%N)
	alive=alive
	kill -0 "$SPID" 2>/dev/null || alive=DIED
	if [ $feed = 1 ] && [ $alive = alive ]; then
		lag=$(feed_wait "$dir/spool") || lag="TIMEOUT after $lag"
	fi
	c1=$(cpu_ticks "$SPID" 2>/dev/null)
	[ $feed = 1 ] && b1=$(cpu_ticks "$BPID" | awk '{ print $1 + $2 }')
	# Write back now what the run left dirty (aiosmtpd's files, fosr's
	# not yet checkpointed .eml files), so that the kernel's work for it
	# falls in the machine and kernel columns; the server is not charged.
	[ "${BENCH_SYNC:-1}" = 1 ] && sync -f "$dir"
	s1=$(sys_ticks)
	k1=$(kernel_ticks)
	L_HWM=$(vm_kb "$SPID" VmHWM 2>/dev/null)
	if [ $alive = DIED ] || [ -z "$c1" ]; then
		alive=DIED
		c1=$c0
		L_HWM=-
		wait "$SPID"
		echo "  !! $srv exited during the run (status $?); last log lines:"
		tail -3 "$dir/server.log" | cut -c1-200 | sed 's/^/      /'
	fi
	# Counted before the server stops: a 250 must already mean "on disk".
	L_STORED=$(stored_count "$srv" "$dir")
	if [ $feed = 1 ]; then
		# The cursor moves on TCP acks; give the broker a moment to log.
		n=$(awk '{ print $1 }' <<<"${L_STORED#*receptions=}")
		for _ in $(seq 50); do
			pub=$(broker_published "$dir")
			[ "$pub" -ge "$n" ] && break
			sleep 0.1
		done
		L_STORED="$L_STORED published=$pub"
		L_LAG=$lag
	fi
	err=$(grep -c . "$dir/source.err")
	stop_server
	broker_stop
	# The server's CPU from the start of the load to its exit (its shutdown
	# work, e.g. fosr's last spool checkpoint, included).
	[ -n "$STOP_TICKS" ] && [ $alive = alive ] &&
		L_TOEXIT=$(awk -v c0="$c0" -v t="$STOP_TICKS" -v m="$msgs" -v h="$TCK" \
		    'BEGIN { split(c0, a, " "); printf "%.1f", (t - a[1] - a[2]) * 1e6 / h / m }')
	L_CLIENT="rc=$SRC_RC,stderr_lines=$err,$alive"
	L_RATE=$(awk -v m="$msgs" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", m / (b - a) }')
	L_CPU=$(awk -v m="$msgs" -v c0="$c0" -v c1="$c1" -v h="$TCK" 'BEGIN {
		split(c0, a, " "); split(c1, b, " "); k = 1e6 / h / m
		printf "%.1f", (b[1] + b[2] - a[1] - a[2]) * k }')
	L_USRSYS=$(awk -v m="$msgs" -v c0="$c0" -v c1="$c1" -v h="$TCK" 'BEGIN {
		split(c0, a, " "); split(c1, b, " "); k = 1e6 / h / m
		printf "%.0f+%.0f", (b[1] - a[1]) * k, (b[2] - a[2]) * k }')
	L_MACHINE=$(per_msg $((s1 - s0)) "$msgs")
	L_KERN=$(per_msg $((k1 - k0)) "$msgs")
	L_SRC=$(per_msg "$SRC_TICKS" "$msgs")
	[ $feed = 1 ] && L_BRK=$(per_msg $((b1 - b0)) "$msgs")
	if [ "$err" -gt 0 ]; then
		echo "    smtp-source stderr (first lines):"
		head -3 "$dir/source.err" | sed 's/^/      /'
	fi
	if [ "$srv" = fosr ] && [ "$(fosr_warnings "$dir")" -gt 0 ]; then
		echo "    fosr-collector log: $(fosr_warnings "$dir") error/warning lines, first:"
		awk '$2 != "info" && $2 != "debug"' "$dir/server.log" |
		    head -3 | cut -c1-200 | sed 's/^/      /'
	fi
	return 0
}

# One line about the filesystem holding $1: device, type, options, journal.
fs_describe() {
	local src fstype opts j=""
	read -r src fstype opts < <(findmnt -n -o SOURCE,FSTYPE,OPTIONS --target "$1")
	case $fstype in
	ext*)
		if dumpe2fs -h "$src" 2>/dev/null | grep -q '^Filesystem features:.*has_journal'; then
			j=", journal"
		else
			j=", NO journal"
		fi
		;;
	esac
	echo "$src $fstype ($opts$j)"
}
