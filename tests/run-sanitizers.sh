#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# The test suite against instrumented builds (`make check-sanitizers`):
#
#   tests/run-sanitizers.sh [asan|tsan|valgrind|all]     (default: asan)
#
# asan      AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer
# tsan      ThreadSanitizer
#           Both build a copy of the sources out of the main tree
#           (BUILDROOT/san-MODE, configure --enable-sanitizers=...) and run
#           its whole `make check`.  The unit tests are instrumented
#           programs; for the shell tests tests/sanitizers/nbdkit stands in
#           for nbdkit (FLEECE_WRAP_DIR, see tests/functions.sh) and runs
#           the real, uninstrumented nbdkit with the sanitizer runtime
#           preloaded, so that it can load our instrumented filters.
# valgrind  The C unit tests of a normal (uninstrumented) build, in
#           BUILDROOT/san-valgrind, under valgrind memcheck
#           (--leak-check=full); test-rangelock and the control server
#           tests (test-control-lines, test-control-server) also
#           under helgrind.
# all       The three, one after the other.
#
# Every sanitizer report goes to BUILDROOT/san-MODE/sanitizer-logs;
# tests/sanitizers/reports.py sorts them into ours (a frame in filters/,
# common/ or tests/) and not ours (nbdkit, libnbd, glibc: these belong in
# the documented suppression files of tests/sanitizers/) and prints
# them.  A mode fails if a test fails or any report is ours.  The last
# line is "sanitizers: N passed, N failed, N skipped", where failed counts
# failed tests plus reports in our code.
#
# BUILDROOT is the current directory when it is a configured build of
# this project (as under `make check-sanitizers`), else the source tree.
# Environment:
#   FLEECE_SAN_BUILDROOT     where the san-* build directories go
#   FLEECE_SAN_CFLAGS        CFLAGS of the instrumented builds (-g -O1)
#   FLEECE_SAN_TIMEOUT       limit of one `make check`, seconds (1800)
#   FLEECE_SAN_NO_COPY=1     build the san-* copies as they are, without
#                            bringing the sources over first (to try a
#                            change made in the copy)
#   FLEECE_STRESS_SECONDS    honoured by test-fleece-stress.sh; the TSan
#                            run sets 8 unless it is set
#   MAKEFLAGS, TESTS         as for make check (e.g. TESTS=test-params.sh)

set -euo pipefail

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sandir=$srcdir/tests/sanitizers

if [ -n "${FLEECE_SAN_BUILDROOT:-}" ]; then
  buildroot=$FLEECE_SAN_BUILDROOT
elif [ -f config.status ] && grep -q nbdkit-fleece config.status 2>/dev/null; then
  buildroot=$PWD
else
  buildroot=$srcdir
fi
mkdir -p "$buildroot"
buildroot=$(cd "$buildroot" && pwd)

jobs=$(nproc 2>/dev/null || echo 2)
# Debian's python3 owns the libnbd bindings that nbdsh and the helpers need.
export PATH="/usr/bin:$PATH"
export LC_ALL=C

log ()
{
  echo "run-sanitizers: $*"
}

die ()
{
  echo "run-sanitizers: error: $*" >&2
  exit 2
}

# copy_sources DIR: DIR gets the sources of $srcdir (tracked and
# untracked-but-not-ignored files, so the work in progress too).  Only
# the files whose content differs are copied, and they get the current
# time, so that make rebuilds exactly what changed since the last run.
copy_sources ()
{
  local dir=$1 f
  mkdir -p "$dir"
  git -C "$srcdir" ls-files -co --exclude-standard -z |
    # Never our own build directories (if .gitignore does not list them).
    grep -zEv '^san-(asan|tsan|valgrind)/' |
    while IFS= read -r -d '' f; do
      [ -f "$srcdir/$f" ] || continue
      cmp -s "$srcdir/$f" "$dir/$f" && continue
      mkdir -p "$dir/$(dirname "$f")"
      cp "$srcdir/$f" "$dir/$f"
      chmod --reference="$srcdir/$f" "$dir/$f"
    done
}

# build MODE DIR CONFIGURE-ARGS...: a build of the sources in DIR.
build ()
{
  local mode=$1 dir=$2; shift 2
  local blog=$dir/san-build.log
  mkdir -p "$dir"
  : >"$blog"
  if command -v git >/dev/null &&
     git -C "$srcdir" rev-parse --git-dir >/dev/null 2>&1; then
    if [ "${FLEECE_SAN_NO_COPY:-0}" != 1 ] || [ ! -d "$dir" ]; then
      copy_sources "$dir"
    fi
    cd "$dir"
    if [ ! -x configure ]; then
      log "$mode: autoreconf in $dir"
      autoreconf -fi >>"$blog" 2>&1 || { cat "$blog"; die "$mode: autoreconf failed"; }
    fi
    local confdir=.
  elif [ ! -f "$srcdir/config.status" ] && [ -x "$srcdir/configure" ]; then
    # A release tarball: an unconfigured source tree builds VPATH.
    mkdir -p "$dir"
    cd "$dir"
    local confdir=$srcdir
  else
    die "need git (to copy the sources) or an unconfigured source tree"
  fi
  # Reconfigure when the options differ from the last run's.
  local want="$*"
  if [ ! -f config.status ] || [ "$(cat .san-configure 2>/dev/null)" != "$want" ]; then
    log "$mode: configure $want"
    "$confdir/configure" "$@" >>"$blog" 2>&1 ||
      { tail -n 40 "$blog"; die "$mode: configure failed (log: $blog)"; }
    printf '%s' "$want" >.san-configure
  fi
  log "$mode: make -j$jobs in $dir"
  make -j"$jobs" >>"$blog" 2>&1 ||
    { tail -n 60 "$blog"; die "$mode: build failed (log: $blog)"; }
}

# count LOG KEY: sum of the automake summary lines "# KEY: N".
count ()
{
  awk -v k="# $2:" '$1" "$2 == k { n += $3 } END { print n + 0 }' "$1"
}

run_sanitizer ()
{
  local mode=$1 flag lib
  case $mode in
    asan) flag=address; lib=libasan ;;
    tsan) flag=thread; lib=libtsan ;;
  esac
  local dir=$buildroot/san-$mode
  local start=$SECONDS
  build "$mode" "$dir" --enable-sanitizers=$flag \
        CFLAGS="${FLEECE_SAN_CFLAGS:--g -O1}"

  # The runtime our modules were linked with is the one nbdkit must load.
  local runtime
  runtime=$(ldd "$dir/filters/cbw/.libs/nbdkit-cbw-filter.so" |
              awk -v l="$lib" '$1 ~ "^"l"\\.so" { print $3 }')
  [ -n "$runtime" ] && [ -f "$runtime" ] ||
    die "$mode: cannot find $lib in the filters' dependencies (install the gcc runtime package, e.g. libasan8/libtsan2)"
  local ubsan=
  if [ "$mode" = asan ]; then
    ubsan=$(ldd "$dir/filters/cbw/.libs/nbdkit-cbw-filter.so" |
              awk '$1 ~ /^libubsan\.so/ { print $3 }')
    [ -n "$ubsan" ] && [ -f "$ubsan" ] ||
      die "asan: cannot find libubsan in the filters' dependencies (libubsan1)"
  fi

  local logdir=$dir/sanitizer-logs
  rm -rf "$logdir"
  mkdir -p "$logdir"
  gcc -shared -fPIC -O2 -Wall -o "$logdir/nbdkit-preload.so" \
      "$sandir/nbdkit-preload.c" -ldl ||
    die "cannot build nbdkit-preload.so"

  local real
  real=$(command -v nbdkit) || die "nbdkit is not installed"

  local clog=$dir/check.log
  local status=0
  log "$mode: make check in $dir/tests (runtime $runtime)"
  (
    export FLEECE_WRAP_DIR=$sandir
    export FLEECE_SAN=$mode
    export FLEECE_SAN_LOGDIR=$logdir
    export FLEECE_SAN_RUNTIME=$runtime
    export FLEECE_SAN_SHIM=$logdir/nbdkit-preload.so
    export FLEECE_REAL_NBDKIT=$real
    [ -z "$ubsan" ] || export FLEECE_UBSAN_RUNTIME=$ubsan
    if [ "$mode" = tsan ]; then
      export FLEECE_STRESS_SECONDS=${FLEECE_STRESS_SECONDS:-8}
    fi
    # The same options for the instrumented unit test programs.
    # shellcheck source=sanitizers/options.sh
    source "$sandir/options.sh"
    fleece_san_options "$mode" "$logdir"
    timeout -k 30 "${FLEECE_SAN_TIMEOUT:-1800}" \
      make -C "$dir/tests" -j"$jobs" check ${TESTS:+TESTS="$TESTS"}
  ) >"$clog" 2>&1 || status=$?
  grep -E '^(PASS|FAIL|SKIP|XFAIL|XPASS|ERROR):' "$clog" || true

  local pass fail skip
  pass=$(count "$clog" PASS)
  fail=$(( $(count "$clog" FAIL) + $(count "$clog" ERROR) + $(count "$clog" XPASS) ))
  skip=$(count "$clog" SKIP)
  if [ $status -ne 0 ]; then
    if [ $status -eq 124 ]; then
      log "$mode: make check timed out after ${FLEECE_SAN_TIMEOUT:-1800} s"
    fi
    [ -f "$dir/tests/test-suite.log" ] && cat "$dir/tests/test-suite.log"
    [ "$fail" -gt 0 ] || fail=1
  fi

  local ours=0 rstatus=0 rout
  rout=$(/usr/bin/python3 "$sandir/reports.py" "$logdir" "$dir") || rstatus=$?
  echo "$rout"
  if [ $rstatus -ne 0 ]; then
    ours=$(sed -n 's/^reports: \([0-9]*\) ours.*/\1/p' <<<"$rout")
    [ -n "$ours" ] || ours=1
  fi

  local secs=$((SECONDS - start))
  echo "$pass $((fail + ours)) $skip $mode: $pass passed, $((fail + ours)) failed, $skip skipped ($ours reports in our code; $secs s; logs in $logdir)" >>"$results"
}

run_valgrind ()
{
  command -v valgrind >/dev/null || die "valgrind is not installed"
  local dir=$buildroot/san-valgrind
  local start=$SECONDS
  build valgrind "$dir"
  # Build the unit test programs only (TESTS empty: nothing runs).
  make -C "$dir/tests" -j"$jobs" check TESTS= >>"$dir/san-build.log" 2>&1 ||
    { tail -n 40 "$dir/san-build.log"; die "valgrind: building the unit tests failed"; }
  local logdir=$dir/valgrind-logs
  rm -rf "$logdir"
  mkdir -p "$logdir"

  local progs=() p
  for p in "$dir"/tests/test-*; do
    [ -x "$p" ] && [ -f "$p" ] || continue
    case $p in *.sh|*.py|*.log|*.trs|*.o|*.c) continue ;; esac
    head -c 4 "$p" | grep -q ELF || continue
    if [ -n "${TESTS:-}" ]; then
      case " $TESTS " in *" $(basename "$p") "*) ;; *) continue ;; esac
    fi
    progs+=("$p")
  done
  [ ${#progs[@]} -gt 0 ] || die "valgrind: no unit test programs in $dir/tests"

  local pass=0 fail=0 name tool vlog rc
  cd "$dir/tests"
  for p in "${progs[@]}"; do
    name=$(basename "$p")
    for tool in memcheck helgrind; do
      if [ $tool = helgrind ]; then
        case $name in test-rangelock|test-control-lines|test-control-server) ;;
          *) continue ;; esac
      fi
      vlog=$logdir/$name.$tool.log
      rc=0
      local opts=(--tool="$tool" --error-exitcode=1 --num-callers=30
                  --suppressions="$sandir/valgrind.supp" --log-file="$vlog")
      if [ $tool = memcheck ]; then
        opts+=(--leak-check=full --show-leak-kinds="definite,indirect,possible"
               --errors-for-leak-kinds="definite,indirect,possible"
               --track-origins=yes)
      fi
      timeout -k 10 600 valgrind "${opts[@]}" "$p" >"$logdir/$name.$tool.out" 2>&1 || rc=$?
      if [ $rc -eq 0 ]; then
        echo "PASS: $name ($tool)"
        pass=$((pass + 1))
      else
        echo "FAIL: $name ($tool), exit $rc"
        tail -n 20 "$logdir/$name.$tool.out"
        cat "$vlog"
        fail=$((fail + 1))
      fi
    done
  done
  local secs=$((SECONDS - start))
  echo "$pass $fail 0 valgrind: $pass passed, $fail failed, 0 skipped ($secs s; logs in $logdir)" >>"$results"
}

mode=${1:-asan}
case $mode in
  asan|tsan) modes=("$mode") ;;
  valgrind) modes=(valgrind) ;;
  all) modes=(asan tsan valgrind) ;;
  -h|--help) sed -n '5,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) die "usage: $0 [asan|tsan|valgrind|all]" ;;
esac

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# Each mode in a subshell: a failed build ends that mode only.
for m in "${modes[@]}"; do
  before=$(wc -l <"$results")
  set +e
  ( set -e; case $m in valgrind) run_valgrind ;; *) run_sanitizer "$m" ;; esac )
  rc=$?
  set -e
  if [ "$(wc -l <"$results")" -eq "$before" ]; then
    echo "0 1 0 $m: 0 passed, 1 failed, 0 skipped (did not run: exit $rc)" >>"$results"
  fi
done

t_pass=0 t_fail=0 t_skip=0
echo
echo "==== sanitizer runs"
while read -r p f s line; do
  echo "$line"
  t_pass=$((t_pass + p)); t_fail=$((t_fail + f)); t_skip=$((t_skip + s))
done <"$results"
echo "sanitizers: $t_pass passed, $t_fail failed, $t_skip skipped"
[ $t_fail -eq 0 ] && [ $t_pass -gt 0 ]
