#!/bin/sh
# CPU per mail of the mail analysis against the rules' MIME reader (mime.c),
# the sustained analysis rate, the MIME bomb's cost, and both parsers over
# the fuzz_mime corpus.  See bench/bench_analysis.c.  About a minute.
set -eu
cd "$(dirname "$0")/.."
make -s build/rel/bench_analysis
exec nice build/rel/bench_analysis fuzz/corpus/mime "$@"
