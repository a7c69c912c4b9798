#!/bin/sh
# Runs every test binary given, adds up cmocka's per-group counts and prints
# one closing line "N passed, N failed, N skipped".  A binary that dies
# without reporting counts as one failure.
passed=0; failed=0; skipped=0; broken=""
: "${BUILD:=build}"
export LORAFLOW_BIN="${LORAFLOW_BIN:-$BUILD/loraflow}"
log=$(mktemp)
for t in "$@"; do
    echo "== $t"
    "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; broken="$broken $t(exit $rc)"; fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
done
rm -f "$log"
[ -n "$broken" ] && echo "crashed or exited early:$broken"
if [ "$skipped" -gt 0 ]; then
    echo "($skipped skipped: see the SKIPPED lines above for why)"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
