#!/bin/bash
# TLS benchmark (not a test): fosr-collector beside aiosmtpd with an
# ssl_context, implicit TLS (465-style) and STARTTLS (587-style), under the
# same load from bench/tls_load.py (whole sessions, one full handshake each,
# one 1 KB mail each; then handshake only: TLS, banner/EHLO, QUIT).  Prints
# sessions/s (= handshakes/s) and server CPU us per TLS session, and the
# ratios.  About 2 minutes.
#
# Run from anywhere:   bench/tls.sh
# Environment knobs (all optional):
#   TLS_SECONDS=10       load duration per server and mode
#   TLS_PROCS=2 TLS_THREADS=4   client processes x threads (concurrent sessions)
#   BENCH_FOSR=path      use this fosr-collector binary and do not run make
#   BENCH_TMPDIR=build   where the temp dir (spools, certificate) goes
#   BENCH_KEEP=1         keep the temp dir

BENCH_NAME="tls bench"
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SECS=${TLS_SECONDS:-10}
PROCS=${TLS_PROCS:-2}
THREADS=${TLS_THREADS:-4}

need_aiosmtpd
need_fosr
bench_init tlsbench
RES=$TMP/results.txt
: >"$RES"

# Start server $1 in work dir $2; sets SPID, IPORT (implicit) and SPORT
# (starttls).  fosr-collector does not publish here (no broker).
tls_start_server() {
	local name=$1 dir=$2
	mkdir -p "$dir"
	IPORT=$(free_port)
	SPORT=$(free_port)
	case $name in
	fosr)
		fosr_start "$dir" "  - {address: 127.0.0.1, port: $IPORT, tls: implicit, name: submissions}
  - {address: 127.0.0.1, port: $SPORT, tls: starttls, name: submission}"
		;;
	aiosmtpd)
		$PY "$BENCH/aiosmtpd_tls_server.py" 127.0.0.1 "$IPORT" "$SPORT" \
		    "$TMP/tls/cert.pem" "$TMP/tls/key.pem" "$dir/mail" 2>"$dir/server.log" &
		SPID=$!
		;;
	esac
	if ! { wait_ready "$IPORT" implicit && wait_ready "$SPORT" starttls; }; then
		echo "tls bench: $name did not come up:" >&2
		tail -5 "$dir/server.log" >&2
		stop_server
		return 1
	fi
}

# Mails server $1 has stored in work dir $2.
stored() {
	case $1 in
	fosr) find "$2/spool/messages" -maxdepth 1 -name '*.eml' 2>/dev/null | wc -l ;;
	aiosmtpd) find "$2/mail" -type f 2>/dev/null | wc -l ;;
	esac
}

run() {
	local srv=$1 mode=$2 kind=$3 dir=$TMP/$1-$2-$3 port c0 c1 out n s0 s1 rate cpu
	tls_start_server "$srv" "$dir" || { echo "$kind-$mode $srv - - - failed" >>"$RES"; return; }
	port=$IPORT
	[ "$mode" = starttls ] && port=$SPORT
	# warm-up, not counted (first sessions, lazy initialisation, allocator growth)
	$PY "$BENCH/tls_load.py" 127.0.0.1 "$port" "$mode" 1 1 2 "$kind" >/dev/null
	s0=$(stored "$srv" "$dir")
	c0=$(cpu_ticks "$SPID" | awk '{ print $1 + $2 }')
	out=$($PY "$BENCH/tls_load.py" 127.0.0.1 "$port" "$mode" "$SECS" "$PROCS" "$THREADS" "$kind")
	c1=$(cpu_ticks "$SPID" | awk '{ print $1 + $2 }')
	s1=$(stored "$srv" "$dir")
	stop_server
	n=$(echo "$out" | sed -n 's/^sessions=\([0-9]*\) .*/\1/p')
	rate=$(echo "$out" | sed -n 's/.* rate=\([0-9.]*\) .*/\1/p')
	cpu=$(awk -v a="$c0" -v b="$c1" -v n="${n:-0}" -v h="$TCK" \
	    'BEGIN { if (n > 0) printf "%.0f", (b - a) * 1e6 / h / n; else print "-" }')
	echo "$kind-$mode $srv ${rate:--} $cpu $((s1 - s0)) $out" >>"$RES"
	printf '  %-18s %-9s %8s sessions/s %6s us CPU/session  stored=%s\n      %s\n' \
	    "$kind-$mode" "$srv" "${rate:--}" "$cpu" "$((s1 - s0))" "$out"
}

make_cert
echo "tls bench: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
    "$PROCS x $THREADS concurrent sessions, $SECS s per run, RSA 2048 certificate"
echo "tls bench: fosr-collector $("$FOSR" --version 2>&1 | head -1 | awk '{print $NF}')," \
    "aiosmtpd $($PY -c 'import aiosmtpd; print(aiosmtpd.__version__)')"
for kind in mail handshake; do
	for mode in implicit starttls; do
		for srv in fosr aiosmtpd; do
			run "$srv" "$mode" "$kind"
		done
	done
done
echo
printf '%-18s %12s %12s %7s   %13s %13s %7s\n' mode "fosr sess/s" "aio sess/s" ratio \
    "fosr us/sess" "aio us/sess" ratio
for mode in mail-implicit mail-starttls handshake-implicit handshake-starttls; do
	awk -v m="$mode" '$1 == m { r[$2] = $3; c[$2] = $4 }
	END {
		rr = (r["aiosmtpd"] + 0 > 0) ? sprintf("%.2f", r["fosr"] / r["aiosmtpd"]) : "-"
		cr = (c["aiosmtpd"] + 0 > 0) ? sprintf("%.2f", c["fosr"] / c["aiosmtpd"]) : "-"
		printf "%-18s %12s %12s %7s   %13s %13s %7s\n", m, r["fosr"], r["aiosmtpd"], rr,
		    c["fosr"], c["aiosmtpd"], cr
	}' "$RES"
done
echo "(sessions/s = full TLS handshakes/s, the client shares the 2 cores: above 1 is better for"
echo " fosr-collector; server CPU per session = utime+stime of the server process: below 1 is better)"
