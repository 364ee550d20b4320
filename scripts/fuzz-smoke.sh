#!/usr/bin/env bash
# Runs every cargo-fuzz target for a few seconds (default 10) from its seed
# corpus: a quick check by hand that the targets build and find nothing new.
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`). Not part of CI,
# which stays on stable. Usage: scripts/fuzz-smoke.sh [seconds] [target...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-10}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for target in "${targets[@]}"; do
  echo "== $target (${seconds}s)"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 |
    grep -E '^(stat::number_of_executed_units|Done|==|thread .* panicked)|SUMMARY' || true
  # grep's status hides cargo's: check the pipeline's first command.
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "$target FAILED: see fuzz/artifacts/$target/"; exit 1; }
done
echo "all ${#targets[@]} targets ran ${seconds}s without a finding"
