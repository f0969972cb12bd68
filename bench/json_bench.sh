#!/bin/sh
# JSON reader on the record path: json.c vs the replaced relay_json.c vs jansson
# (needs libjansson-dev, only for this measurement).  Usage: bench/json_bench.sh [N]
set -e
cd "$(dirname "$0")/.."
out=build/bench
mkdir -p $out/old
old=$(git log --format=%H -1 -- src/relay_json.c)
git show "$old~1:src/relay_json.c" > $out/old/relay_json.c
git show "$old~1:src/relay_json.h" > $out/old/relay_json.h
cc -std=c11 -D_GNU_SOURCE -O2 -iquote src -iquote $out/old -o $out/json_bench \
    bench/json_bench.c bench/json_bench_old.c bench/json_bench_jansson.c \
    $out/old/relay_json.c src/json.c src/utf8.c -ljansson
$out/json_bench bench/records.jsonl "${1:-1000000}"
