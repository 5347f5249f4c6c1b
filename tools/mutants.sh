#!/usr/bin/env bash
# `make mutants`: mutation testing of the core, one tool per language (not part of make test/CI).
#
#   Rust:   cargo-mutants over rust/core (crate pverep-core), its own unit tests and proptests.
#           Equivalent mutants are excluded, each with its reason, in .cargo/mutants.toml.
#   Python: mutmut over the core modules named in pyproject's [tool.mutmut]. mutmut maps every
#           test to the functions it calls and runs only those tests per mutant (no lab tests).
#           Equivalent mutants carry a "pragma: no mutate" comment with the reason.
#
# mutmut derives module names from file paths and knows only ./, src/ and source/ as import
# roots, so the Python side runs in a staging copy (mutants-report/py-stage) where python/ is
# src/. mutmut keeps each mutant's result until its function changes, even when the tests
# changed: so every run starts from fresh mutants unless MUTANTS_KEEP=1 (faster, but the
# survivors of unchanged functions are then those of the last run).
# Results: mutants-report/{rust,python}-*.txt and mutants-report/summary.txt.
#
# MUTANTS_ONLY=rust|python runs one side; MUTANTS_JOBS (default 2) sets the parallelism;
# MUTANTS_RUST_FILES="rust/core/src/x.rs …" and MUTANTS_PY_SELECT="pverep.calendar.* …" (mutant
# name globs) narrow a run to what an issue changed, and MUTANTS_RUST_RE (a regex on the names
# `cargo mutants --list` shows, e.g. 'snapshots\.rs:5[0-9][0-9]:') the Rust side further.
# MUTANTS_PY_FILES="src/pverep/calendar.py …" (stage paths) mutates only those files, and
# MUTANTS_PY_TESTS="tests/unit/test_calendar.py …" maps and runs
# only those tests: far faster than mapping the whole fast suite.
set -euo pipefail
set -f  # mutant selections are globs for the tools, not for the shell
cd "$(dirname "$0")/.."
root=$PWD
report=$root/mutants-report
stage=$report/py-stage
jobs=${MUTANTS_JOBS:-2}
only=${MUTANTS_ONLY:-}
mkdir -p "$report"
: > "$report/summary.txt"

if [ "$only" != python ]; then
    echo "== cargo-mutants: rust/core =="
    start=$(date +%s)
    # --no-shuffle: a stable order, so two reports compare line by line.
    files=()
    for f in ${MUTANTS_RUST_FILES:-}; do files+=(--file "$f"); done
    [ -z "${MUTANTS_RUST_RE:-}" ] || files+=(--re "$MUTANTS_RUST_RE")
    nice -n 10 "$root/.tools/bin/cargo-mutants" mutants --package pverep-core "${files[@]}" \
        --jobs "$jobs" --no-shuffle --minimum-test-timeout 10 \
        --output "$report/rust" || true  # survivors are a result, not a failure
    cp "$report/rust/mutants.out/outcomes.json" "$report/rust-outcomes.json"
    for kind in caught missed timeout unviable; do
        cp "$report/rust/mutants.out/$kind.txt" "$report/rust-$kind.txt"
    done
    "$root/.venv/bin/python" tools/mutants_score.py rust "$report" "$(( $(date +%s) - start ))" \
        | tee -a "$report/summary.txt"
fi

if [ "$only" != rust ]; then
    echo "== mutmut: Python core =="
    start=$(date +%s)
    # cp -a keeps mtimes: mutmut regenerates only the files that changed since the last run.
    mkdir -p "$stage"
    rm -rf "$stage/src" "$stage/tests"
    [ "${MUTANTS_KEEP:-}" = 1 ] || rm -rf "$stage/mutants"
    cp -a python "$stage/src"
    cp -a tests pyproject.toml "$stage/"
    "$root/.venv/bin/python" tools/mutants_narrow.py "$stage/pyproject.toml" \
        "${MUTANTS_PY_FILES:-}" "${MUTANTS_PY_TESTS:-}"
    # shellcheck disable=SC2086  # the selection is a list of globs, split on purpose
    (cd "$stage" && nice -n 10 "$root/.venv/bin/mutmut" run --max-children "$jobs" \
        ${MUTANTS_PY_SELECT:-}) || true
    (cd "$stage" && "$root/.venv/bin/mutmut" results --all true) > "$report/python-results.txt" || true
    "$root/.venv/bin/python" tools/mutants_score.py python "$report" "$(( $(date +%s) - start ))" \
        | tee -a "$report/summary.txt"
fi
