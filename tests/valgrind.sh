#!/bin/sh
# The end-to-end suite with the daemon under valgrind memcheck.  Builds nothing:
# run `make fosr-collector` first (the release build, -O2 -g).
#
#   tests/valgrind.sh [PATTERN ...]     (PATTERNs as tests/e2e/run_e2e.py's)
#
# Every daemon a test starts runs as tests/valgrind-wrap.sh, which execs
# valgrind with --error-exitcode=99 and full leak checking (definite and
# indirect leaks count as errors): a test whose daemon had an error fails on
# its exit status 99, and this script lists every log with errors at the end.
# Tests that measure time or memory skip themselves (FOSR_VALGRIND=1); every
# timeout of the harness is multiplied by FOSR_SLOW (default 20).
# Environment: FOSR_VG_DAEMON (default ./fosr-collector), FOSR_VG_LOGDIR
# (default build/valgrind/run.<date>), FOSR_VG_EXTRA (more valgrind options),
# FOSR_SLOW, FOSR_TEST_TIMEOUT (per test, default 1200 s).
# Exit status: 0 when every test passed and every log is clean.
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

command -v valgrind >/dev/null || { echo "valgrind.sh: apt-get install valgrind" >&2; exit 2; }
FOSR_VG_DAEMON=${FOSR_VG_DAEMON:-$ROOT/fosr-collector}
[ -x "$FOSR_VG_DAEMON" ] || { echo "valgrind.sh: no $FOSR_VG_DAEMON (make fosr-collector)" >&2; exit 2; }
FOSR_VG_LOGDIR=${FOSR_VG_LOGDIR:-$ROOT/build/valgrind/run.$(date +%Y%m%d-%H%M%S)}
mkdir -p "$FOSR_VG_LOGDIR"
FOSR_BIN=$ROOT/tests/valgrind-wrap.sh
FOSR_VALGRIND=1
FOSR_SLOW=${FOSR_SLOW:-20}
FOSR_TEST_TIMEOUT=${FOSR_TEST_TIMEOUT:-1200}
export FOSR_VG_DAEMON FOSR_VG_LOGDIR FOSR_BIN FOSR_VALGRIND FOSR_SLOW FOSR_TEST_TIMEOUT

echo "valgrind.sh: daemon $FOSR_VG_DAEMON, logs in $FOSR_VG_LOGDIR, FOSR_SLOW=$FOSR_SLOW"
/usr/bin/python3 tests/e2e/run_e2e.py "$@" 2>&1 | tee "$FOSR_VG_LOGDIR/e2e.log"
rc=$(grep -q '^E2E_COUNTS .* failed=0 ' "$FOSR_VG_LOGDIR/e2e.log" && echo 0 || echo 1)

# Each log: clean, with errors, or cut short (SIGKILL'ed by a test: no summary).
clean=0
bad=0
cut=0
for f in "$FOSR_VG_LOGDIR"/vg.*.log; do
	[ -f "$f" ] || continue
	n=$(sed -n 's/.*ERROR SUMMARY: \([0-9][0-9]*\) errors.*/\1/p' "$f" | tail -n 1)
	if [ -z "$n" ]; then
		cut=$((cut + 1))
	elif [ "$n" -eq 0 ]; then
		clean=$((clean + 1))
	else
		bad=$((bad + 1))
		echo "---- $f: $n errors ($(sed -n 's/.*Command: //p' "$f" | head -n 1 | cut -c1-160))"
		# the first error blocks, without the ==PID== prefix
		sed -e 's/^==[0-9]*== //' "$f" | awk '
			/^(Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and destination|Argument .* of function)/ ||
			/bytes in [0-9,]+ blocks are (definitely|indirectly) lost/ { p = 1; n++ }
			p && /^$/ { p = 0; print "" }
			p && n <= 6 { print "    " $0 }'
	fi
done
echo "valgrind.sh: $clean clean logs, $bad with errors, $cut cut short (daemon killed by the test)"
[ "$bad" -eq 0 ] || rc=1
exit "$rc"
