#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20), on the stable toolchain.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(event_decode cel_filter template_render apply_parse retry_after url_policy)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
# Builds go to a directory outside the checkout, so that CI's fresh clones on the same machine
# build incrementally: a cold build of every dependency with coverage instrumentation takes
# minutes on two cores.
target_dir="${OUTBOX_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay-fuzz}"
# -s none: no sanitizer (AddressSanitizer needs a nightly compiler; safe Rust does not need it),
# so cargo-fuzz runs on the stable toolchain. --dev: an unoptimised build, much faster to build.
cargo fuzz build -s none --dev --target-dir "$target_dir"
for target in "${targets[@]}"; do
    mkdir -p "target/corpus/$target"
    echo "fuzz: $target for ${seconds}s"
    # New inputs go to target/corpus (not committed); seeds/ is read only.
    cargo fuzz run -s none --dev --target-dir "$target_dir" "$target" "target/corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
