#!/bin/sh
# fuzz/run.sh FUZZ_BUILD SECONDS TARGET...
#
# Runs each libFuzzer target SECONDS seconds, one after the other, on one
# core.  The corpus of a target grows in fuzz-out/corpus/<target> (kept
# between runs); fuzz-out/seeds/<target> (make_seeds) is read as a second,
# read-only corpus.  A crash, sanitizer report, leak, timeout or
# out-of-memory is saved as fuzz-out/crashes/<target>-<kind>-<sha1> and makes
# this script exit 1 after the remaining targets ran.  Every run appends a
# line to fuzz-out/stats.tsv:
#   date  target  seconds  executions  corpus-files  result
# (docs/SECURITY.md quotes the totals; `fuzz/run.sh --totals` sums them).
set -u
if [ "${1:-}" = "--totals" ]; then
    f=fuzz-out/stats.tsv
    [ -f "$f" ] || { echo "no $f yet"; exit 0; }
    awk -F'\t' '{ s[$2] += $3; e[$2] += $4; n[$2]++ } END {
        for (t in s) printf "%-16s %4d runs %9.2f hours %14d executions\n", t, n[t], s[t] / 3600, e[t] }' "$f" | sort
    exit 0
fi
B=$1
S=$2
shift 2
mkdir -p fuzz-out/corpus fuzz-out/crashes
failed=""
for t in "$@"; do
    bin="$B/fuzz_$t"
    corpus="fuzz-out/corpus/$t"
    seeds="fuzz-out/seeds/$t"
    mkdir -p "$corpus" "$seeds"
    case $t in
        pickle|ptzip|gate|adapter_weights) dict="-dict=fuzz/dict/pickle.dict" ;;
        tokenize) dict="" ;;
        *) dict="-dict=fuzz/dict/json.dict" ;;
    esac
    maxlen=1048576
    [ "$t" = tokenizer_load ] && maxlen=2097152 # the Llama-2 tokenizer.json seed is 1.8 MB
    log="fuzz-out/$t.log"
    # -timeout: one input taking this long is a hang (quadratic blow-ups
    # included); -rss_limit_mb: the whole process; -max_len: inputs above
    # 1 MiB only slow the search down (2 MiB for whole tokenizer files).
    # FUZZ_SEED (CI sets it) fixes libFuzzer's random seed so that a bounded
    # run explores the same inputs every time; unset, each run differs.
    seedopt=""
    [ -n "${FUZZ_SEED:-}" ] && seedopt="-seed=$FUZZ_SEED"
    "$bin" "$corpus" "$seeds" $dict $seedopt -max_total_time="$S" -timeout=25 -rss_limit_mb=2560 \
        -max_len="$maxlen" -print_final_stats=1 -artifact_prefix="fuzz-out/crashes/$t-" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    files=$(ls "$corpus" | wc -l)
    if [ "$rc" -eq 0 ]; then result=ok; else result="FAILED(exit $rc)"; failed="$failed $t"; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$t" "${secs:-$S}" "${execs:-0}" \
        "$files" "$result" >>fuzz-out/stats.tsv
    printf 'fuzz %-16s %5ss %12s executions %6s corpus files  %s\n' "$t" "${secs:-$S}" "${execs:-?}" "$files" "$result"
    if [ "$rc" -ne 0 ]; then
        grep -E 'ERROR|SUMMARY|Test unit written|fuzz invariant|==[0-9]+==' "$log" | head -n 20
        echo "  (full log: $log)"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzzing found problems in:$failed (inputs in fuzz-out/crashes/)"
    exit 1
fi
