#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# Run libFuzzer harnesses: for each one, first every file in
# regressions/TARGET/ and corpus/TARGET/ once, then a time-limited
# fuzzing run over a COPY of corpus/TARGET in a temporary directory
# (the committed corpus never grows).  A crash keeps the temporary
# directory and says where the crashing input is.  Used by
# `make check-fuzz` (see README.md); can be run by hand:
#
#   fuzz/run-fuzz.sh [-s SECONDS] [-j JOBS] [-k] BUILDDIR SRCDIR TARGET...
#
# -s: seconds of fuzzing per target (default $FUZZ_SECONDS or 60;
#     0 runs the regressions and seeds only)
# -j: parallel fuzzing jobs per target (default 1)
# -k: keep the grown corpus, and print where it is
# Extra libFuzzer options can be given in $FUZZ_FLAGS.

set -euo pipefail

seconds="${FUZZ_SECONDS:-60}"
jobs=1
keep=0
while getopts "s:j:k" opt; do
  case "$opt" in
    s) seconds="$OPTARG" ;;
    j) jobs="$OPTARG" ;;
    k) keep=1 ;;
    *) echo "usage: $0 [-s SECONDS] [-j JOBS] [-k] BUILDDIR SRCDIR TARGET..." >&2
       exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -lt 3 ]; then
  echo "usage: $0 [-s SECONDS] [-j JOBS] [-k] BUILDDIR SRCDIR TARGET..." >&2
  exit 2
fi
builddir="$(cd "$1" && pwd)"
srcdir="$(cd "$2" && pwd)"
shift 2

case "$seconds" in
  ''|*[!0-9]*) echo "$0: FUZZ_SECONDS must be a whole number, got '$seconds'" >&2
               exit 2 ;;
esac

# Leaks are real failures here too; ASan's defaults otherwise.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=()
for target in "$@"; do
  bin="$builddir/$target"
  if [ ! -x "$bin" ]; then
    echo "$0: $bin is not built" >&2
    exit 2
  fi
  work="$(mktemp -d "${TMPDIR:-/tmp}/$target.XXXXXX")"

  # 1. Known crashers and the seeds, each run once.
  inputs=()
  for dir in "$srcdir/regressions/$target" "$srcdir/corpus/$target"; do
    [ -d "$dir" ] || continue
    while IFS= read -r -d '' f; do
      inputs+=("$f")
    done < <(find "$dir" -type f ! -name '.*' -print0 | sort -z)
  done
  echo "== $target: ${#inputs[@]} regression and seed inputs"
  if [ ${#inputs[@]} -gt 0 ] &&
     ! "$bin" -runs=1 ${FUZZ_FLAGS:-} "${inputs[@]}" > "$work/replay.log" 2>&1; then
    tail -n 60 "$work/replay.log"
    echo "FAIL: $target crashes on a regression or seed input (log: $work/replay.log)"
    failed+=("$target")
    continue
  fi

  # 2. Fuzzing, on a copy of the corpus.
  if [ "$seconds" -gt 0 ]; then
    mkdir "$work/corpus" "$work/artifacts"
    if [ -d "$srcdir/corpus/$target" ]; then
      cp -R "$srcdir/corpus/$target/." "$work/corpus/"
    fi
    echo "== $target: fuzzing for ${seconds}s with $jobs job(s)"
    args=(-max_total_time="$seconds" -print_final_stats=1
          -artifact_prefix="$work/artifacts/")
    if [ "$jobs" -gt 1 ]; then
      args+=(-jobs="$jobs" -workers="$jobs")
    fi
    status=0
    (cd "$work" && "$bin" "${args[@]}" ${FUZZ_FLAGS:-} "$work/corpus" \
       > "$work/fuzz.log" 2>&1) || status=$?
    # With -jobs the output is in fuzz-N.log files.
    cat "$work"/fuzz*.log > "$work/all.log" 2>/dev/null || true
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' \
      "$work/all.log" | sed "s/^/   $target: /" || true
    crashers=$(find "$work/artifacts" -type f | head -n 5)
    if [ "$status" -ne 0 ] || [ -n "$crashers" ]; then
      tail -n 60 "$work/all.log"
      echo "FAIL: $target (exit $status); crashing input(s):"
      for f in $crashers; do echo "   $f"; done
      echo "   to keep one as a regression: cp FILE $srcdir/regressions/$target/"
      failed+=("$target")
      continue
    fi
    echo "== $target: corpus grew from $(find "$srcdir/corpus/$target" -type f 2>/dev/null | wc -l) to $(find "$work/corpus" -type f | wc -l) inputs"
  fi
  if [ "$keep" -eq 1 ]; then
    echo "== $target: kept $work"
  else
    rm -rf "$work"
  fi
  echo "PASS: $target"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "check-fuzz: FAILED: ${failed[*]}"
  echo "check-fuzz: $(( $# - ${#failed[@]} )) passed, ${#failed[@]} failed"
  exit 1
fi
echo "check-fuzz: all $# target(s) passed"
echo "check-fuzz: $# passed, 0 failed"
