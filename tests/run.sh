#!/bin/sh
# Every test, in order: (a) unit tests, (b) end-to-end against ./fosr-collector,
# (c) unit tests under ASan+UBSan, (d) end-to-end against the ASan+UBSan daemon,
# (e) the fuzz corpora replayed.  Run from anywhere after `make check` built
# everything.  Logs go to build/test-logs/.  The last line is "N passed, N failed"
# (individual cmocka tests + unittest tests + fuzz targets); the exit status is
# non-zero when anything failed.
set -u
cd "$(dirname "$0")/.." || exit 2

PY=/usr/bin/python3
LOGS=build/test-logs
mkdir -p "$LOGS"
total_pass=0
total_fail=0
report=""

# note STEP PASSED FAILED [EXTRA]: print and add one step's result.
note() {
	total_pass=$((total_pass + $2))
	total_fail=$((total_fail + $3))
	if [ "$3" -eq 0 ]; then st=ok; else st=FAIL; fi
	line=$(printf '%-4s %-44s %4d passed, %4d failed%s' "$st" "$1" "$2" "$3" "${4:-}")
	echo "$line"
	report="$report$line
"
}

# count_sum REGEX FILE: sum of the first number on the lines matching REGEX.
count_sum() {
	grep -E "$1" "$2" 2>/dev/null | sed 's/[^0-9]*\([0-9][0-9]*\).*/\1/' |
	    awk '{ s += $1 } END { print s + 0 }'
}

# cmocka_step LABEL DIR: run every DIR/test_* (cmocka), count individual tests.
cmocka_step() {
	p=0
	f=0
	n=0
	for t in "$2"/test_*; do
		[ -f "$t" ] && [ -x "$t" ] || continue
		n=$((n + 1))
		log="$LOGS/$1-$(basename "$t").log"
		CMOCKA_MESSAGE_OUTPUT=stdout "$t" >"$log" 2>&1
		rc=$?
		tp=$(grep -c '^\[       OK \]' "$log")
		tf=$(count_sum '^\[  FAILED  \] [0-9]+ test' "$log")
		if [ "$rc" -ne 0 ] && [ "$tf" -eq 0 ]; then
			tf=1	# crashed, sanitizer report, or no summary at all
		fi
		if [ "$tf" -ne 0 ]; then
			echo "---- $t failed (exit $rc), $log:"
			tail -n 40 "$log"
		fi
		p=$((p + tp))
		f=$((f + tf))
	done
	[ "$n" -eq 0 ] && echo "     (no unit test binaries under $2)"
	note "$1 ($n binaries)" "$p" "$f"
}

# e2e_step LABEL BINARY: the unittest suite against BINARY.
e2e_step() {
	log="$LOGS/$1.log"
	if [ ! -x "$2" ]; then
		echo "---- $2 is missing: not built?"
		note "$1" 0 1
		return
	fi
	echo "---- $1: FOSR_BIN=$2 (log: $log)"
	FOSR_BIN="$2" "$PY" tests/e2e/run_e2e.py >"$log" 2>&1
	rc=$?
	counts=$(grep '^E2E_COUNTS ' "$log" | tail -n 1)
	if [ -z "$counts" ]; then
		tail -n 40 "$log"
		note "$1" 0 1
		return
	fi
	ep=$(echo "$counts" | sed 's/.*passed=\([0-9]*\).*/\1/')
	ef=$(echo "$counts" | sed 's/.*failed=\([0-9]*\).*/\1/')
	es=$(echo "$counts" | sed 's/.*skipped=\([0-9]*\).*/\1/')
	[ "$rc" -ne 0 ] && [ "$ef" -eq 0 ] && ef=1
	if [ "$ef" -ne 0 ]; then
		# the failure reports, then the list of failed tests
		sed -n '/^======================================================================$/,$p' "$log" |
		    head -n 400
	fi
	note "$1" "$ep" "$ef" " ($es skipped)"
}

# fuzz_step: replay each target's corpus; a crash fails the target.
fuzz_step() {
	p=0
	f=0
	n=0
	for t in build/fuzz/fuzz_*; do
		[ -f "$t" ] && [ -x "$t" ] || continue
		n=$((n + 1))
		name=$(basename "$t")
		corpus="fuzz/corpus/${name#fuzz_}"
		log="$LOGS/$name.log"
		if [ -d "$corpus" ] && [ -n "$(find "$corpus" -type f | head -n 1)" ]; then
			# files as arguments: each is run once, nothing is written to the corpus
			find "$corpus" -type f -exec "$t" {} + >"$log" 2>&1
		else
			"$t" -runs=0 >"$log" 2>&1
		fi
		rc=$?
		if [ "$rc" -eq 0 ]; then
			p=$((p + 1))
		else
			f=$((f + 1))
			echo "---- $t crashed on its corpus (exit $rc), $log:"
			tail -n 40 "$log"
		fi
	done
	[ "$n" -eq 0 ] && echo "     (no fuzz targets under build/fuzz)"
	note "fuzz corpora ($n targets)" "$p" "$f"
}

echo "== (a) unit tests"
cmocka_step unit-rel build/rel/tests

echo "== (b) end-to-end, release build"
e2e_step e2e-rel ./fosr-collector

echo "== (c) unit tests, ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1
UBSAN_OPTIONS=print_stacktrace=1
export ASAN_OPTIONS UBSAN_OPTIONS
cmocka_step unit-asan build/asan/tests

echo "== (d) end-to-end, ASan+UBSan daemon"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0	# inherited by the daemon
export ASAN_OPTIONS
e2e_step e2e-asan build/asan/fosr-collector
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== (e) fuzz corpora"
fuzz_step

echo "== summary"
printf '%s' "$report"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
