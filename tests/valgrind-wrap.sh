#!/bin/sh
# FOSR_BIN for the end-to-end suite under valgrind (tests/valgrind.sh sets it).
# It execs valgrind, so the pid the harness sees (signals, /proc/PID/fd
# listening sockets, /proc/PID/status) is valgrind's, which is the daemon's.
#   FOSR_VG_DAEMON   the daemon to run (default: <repo>/fosr-collector, the
#                    release build from `make fosr-collector`, -O2 -g)
#   FOSR_VG_LOGDIR   where the vg.PID.log files go (default: build/valgrind)
#   FOSR_VG_EXTRA    extra valgrind options (e.g. --suppressions=FILE)
here=$(cd "$(dirname "$0")" && pwd)
daemon=${FOSR_VG_DAEMON:-$here/../fosr-collector}
logdir=${FOSR_VG_LOGDIR:-$here/../build/valgrind}
mkdir -p "$logdir"
# shellcheck disable=SC2086
exec valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
    --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
    --track-fds=no --num-callers=30 ${FOSR_VG_EXTRA:-} \
    --log-file="$logdir/vg.%p.log" "$daemon" "$@"
