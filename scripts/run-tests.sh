#!/usr/bin/env bash
# Runs built test executables (libtest harness), or a module of one, one after another, each with its
# ignored tests too and one test at a time, and says which failed. scripts/test.sh uses it inside the roots of other Slurm
# releases (scripts/slurm-root.sh), where there is no cargo: the executables were built on this machine
# against that release's headers.
#   run-tests.sh LIST [LIBTEST-ARG...]   LIST: a file of "name<TAB>path[<TAB>filter]" lines (scripts/test.sh
#                                        writes it); a filter runs only the tests whose names hold it (a
#                                        module of the executable: "gpus::")
set -uo pipefail
list=${1:?list of test executables}
[[ -r $list ]] || { echo "run-tests: cannot read $list" >&2; exit 2; }
shift
failed=()
total=0
while IFS=$'\t' read -r name exe filter; do
    [[ -n $name ]] || continue
    printf '\n--- %s (%s)\n' "$name" "$exe"
    start=$SECONDS
    "$exe" ${filter:+"$filter"} --include-ignored --test-threads 1 "$@"
    rc=$?
    printf -- '--- %s: %s in %d s\n' "$name" "$( ((rc == 0)) && echo passed || echo "FAILED (exit $rc)")" $((SECONDS - start))
    ((rc == 0)) || failed+=("$name")
    total=$((total + 1))
done <"$list"
if ((${#failed[@]} > 0)); then
    echo "run-tests: ${#failed[@]} of $total test runs failed: ${failed[*]}"
    exit 1
fi
echo "run-tests: all $total test runs passed"
