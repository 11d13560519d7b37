#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this). Needs no GPU: GPU tests skip
# with a visible message. Installs what the tests need (NVRTC wheels and PyTorch for the CPU;
# PostgreSQL and Chromium through scripts/test-services.sh where present).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --tools-only --with-torch
if [[ -f scripts/test-services.sh ]]; then
  # shellcheck source=/dev/null
  source scripts/test-services.sh
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== ksmith tasks check (every reference compiled with NVRTC)"
cargo run --quiet --bin ksmith -- tasks check
echo "== ksmith tasks launches (every reference plan resolved at 20 held-out and all corner shapes; nothing an H100 would refuse)"
cargo run --quiet --bin ksmith -- tasks launches --heldout 20 --corners --hints-only > /dev/null
echo "== ksmith tasks spec (every spec.py run by PyTorch on the CPU: smallest shape, every input matters, outputs finite under stress, 2 held-out shapes)"
PYTHONPATH="$PWD/tools/torch" cargo run --quiet --bin ksmith -- tasks spec --heldout 2
echo "== ksmith tasks emulate (every reference kernel run by the PTX emulator on a small held-out shape, strict protocol against spec.py)"
PYTHONPATH="$PWD/tools/torch" cargo run --quiet --bin ksmith -- tasks emulate
echo "== ksmith --arch sm_90a tasks emulate (the references with a wgmma main loop, on that path)"
mapfile -t wgmma_tasks < <(grep -l 'wgmma.mma_async' tasks/*/*/reference.cu | xargs -n1 dirname | xargs -n1 basename)
PYTHONPATH="$PWD/tools/torch" cargo run --quiet --bin ksmith -- --arch sm_90a tasks emulate --heldout 2 --max-bytes 16M "${wgmma_tasks[@]}"
