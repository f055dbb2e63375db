#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of everything that reads
# outside bytes: the JSON and line-protocol decoders, rule-file metadata,
# the config loader, and the silence and alerting-state readers.
#
#   scripts/fuzz.sh [--time SECONDS | --runs N] [--decoders] [--dev] [--keep] [TARGET...]
#
# Each target runs for SECONDS (default 30) or N inputs, starting from its
# corpus in fuzz/corpus/TARGET (new finds are kept in a scratch copy, not
# in the repo; `--keep` writes them back). A crash, a hang (>10 s for one
# input) or a blow-up (>2 GiB) fails the script; libFuzzer leaves the
# input in fuzz/artifacts/TARGET/: fix the bug, then copy the input to
# fuzz/regressions/TARGET/, where tests/fuzz_corpus.rs replays it in every
# test run (as it replays the whole corpus).
# `--decoders` builds without the engine crate (much faster) and runs the
# two decoder targets, or those of the TARGETs named. `--dev` builds
# unoptimised (every target in ~14 min on 2 cores instead of ~40; each
# input runs slower): CI runs `--dev --time 10` over all six targets.
# RELIABILITY.md records the long runs (optimised builds).
#
# Needs cargo-fuzz (installed from crates.io when missing) and a C++
# compiler. Builds on the stable toolchain (RUSTC_BOOTSTRAP=1: cargo-fuzz
# passes -Z flags), without a sanitizer: the code is safe Rust, and what
# we look for — panics, stack overflows, hangs, memory blow-ups — libFuzzer
# catches by itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

limit=(-max_total_time=30)
keep=0
decoders=0
features=()
profile=()
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) limit=(-max_total_time="$2"); shift 2 ;;
    --runs) limit=(-runs="$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    --dev) profile=(--dev); shift ;;
    --decoders) features=(--no-default-features); decoders=1; shift ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ] && [ "$decoders" = 1 ]; then
  targets=(json_decoder collectd_decoder influx_decoder)
elif [ ${#targets[@]} -eq 0 ]; then
  targets=(json_decoder collectd_decoder influx_decoder rule_metadata config_loader silence_reader alerting_state_reader)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz >/dev/null
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${TELEMINE_FUZZ_TARGET_DIR:-$HOME/.cache/telemine-fuzz-target}"
scratch="$(mktemp -d)"
# With --keep, what was found is written back even when a run is stopped
# (Ctrl-C) or fails, so a long run's corpus is never lost.
keep_corpus() {
  if [ "$keep" = 1 ]; then
    for t in "${targets[@]}"; do
      if [ -d "$scratch/$t" ]; then
        mkdir -p "fuzz/corpus/$t"
        cp -r "$scratch/$t/." "fuzz/corpus/$t/"
      fi
    done
  fi
  rm -rf "$scratch"
}
trap keep_corpus EXIT

for t in "${targets[@]}"; do
  rm -rf "fuzz/artifacts/$t"
  mkdir -p "$scratch/$t"
  cp -r "fuzz/corpus/$t/." "$scratch/$t/" 2>/dev/null || true
  echo "== fuzz $t (${limit[*]})"
  status=0
  cargo fuzz run --fuzz-dir fuzz --sanitizer none "${profile[@]}" "${features[@]}" "$t" "$scratch/$t" -- \
    "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 \
    >"$scratch/$t.log" 2>&1 || status=$?
  grep -E "^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|thread .* panicked|Test unit written)" "$scratch/$t.log" || true
  if [ "$status" != 0 ] || ls "fuzz/artifacts/$t"/* >/dev/null 2>&1; then
    tail -40 "$scratch/$t.log" >&2
    echo "fuzz.sh: $t failed (exit $status); a failing input is in fuzz/artifacts/$t/ if one was found" >&2
    exit 1
  fi
  if [ "$keep" = 1 ]; then
    cargo fuzz cmin --fuzz-dir fuzz --sanitizer none "${profile[@]}" "${features[@]}" "$t" "$scratch/$t" >/dev/null 2>&1 || true
  fi
done
echo "fuzz.sh: no crash, hang or blow-up in ${targets[*]}"
