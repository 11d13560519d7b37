#!/usr/bin/env bash
# One-time set-up on a fresh CPU-only Debian machine (no root needed unless pip is missing):
#   1. installs NVRTC and the CUDA device headers from PyPI into tools/cuda (git-ignored);
#   2. builds the ksmith binary (release).
# Idempotent: a second run takes seconds. Options: --tools-only (skip the build); --with-torch
# (also PyTorch, CPU use only, into tools/torch: what `ksmith tasks spec` runs spec.py with on a
# machine without a GPU; use it with PYTHONPATH=tools/torch).
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned to CUDA 13.0 to match the driver of the project's GPU machines; a CUBIN built by a
# newer NVRTC is not guaranteed to load on an older driver.
WHEELS=(
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
)
TOOLS=tools/cuda
STAMP="$TOOLS/.ksmith-wheels"
want="${WHEELS[*]}"

say() { printf 'setup: %s\n' "$*" >&2; }

install_wheels() {
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -f "$TOOLS/nvidia/cu13/lib/libnvrtc.so.13" ]]; then
    say "NVRTC and CUDA headers already in $TOOLS"
    return
  fi
  local py
  py=$(command -v python3 || true)
  if [[ -z "$py" ]]; then
    say "python3 is required to fetch the NVRTC wheels from PyPI"
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
      py=$(command -v python3)
    else
      say "install python3 and pip (e.g. apt-get install python3-pip) and run again"; exit 1
    fi
  fi
  if ! "$py" -m pip --version >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      say "installing pip (apt-get install python3-pip)"
      apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
    else
      say "pip is missing: install python3-pip and run again"; exit 1
    fi
  fi
  say "installing ${WHEELS[*]} into $TOOLS"
  local tmp="$TOOLS.tmp.$$"
  rm -rf "$tmp"
  # All wheels in one pip call: they share the nvidia/cu13 tree, and pip --target does not merge
  # into an existing directory. --target installs beside, never into, the system Python, so
  # PEP 668's externally-managed guard does not apply.
  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    "$py" -m pip install --quiet --no-deps --target "$tmp" "${WHEELS[@]}"
  rm -rf "$TOOLS"
  mkdir -p "$(dirname "$TOOLS")"
  mv "$tmp" "$TOOLS"
  printf '%s' "$want" > "$STAMP"
  say "installed $(du -sh "$TOOLS" | cut -f1) into $TOOLS"
}

# The GPU machines run PyTorch 2.11: spec.py is checked on the CPU with the same version. The
# PyPI wheel is the CUDA build (it imports without a GPU and runs on the CPU); its CUDA libraries
# come along as dependencies, about 4.6 GB in all.
TORCH=torch==2.11.0
TORCH_DIR=tools/torch

install_torch() {
  local stamp="$TORCH_DIR/.ksmith-torch"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$TORCH" ]]; then
    say "PyTorch already in $TORCH_DIR"
    return
  fi
  say "installing $TORCH (and its dependencies) into $TORCH_DIR"
  local tmp="$TORCH_DIR.tmp.$$"
  rm -rf "$tmp"
  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    python3 -m pip install --quiet --target "$tmp" "$TORCH"
  rm -rf "$TORCH_DIR"
  mv "$tmp" "$TORCH_DIR"
  printf '%s' "$TORCH" > "$stamp"
  say "installed $(du -sh "$TORCH_DIR" | cut -f1) into $TORCH_DIR"
}

build() {
  if ! command -v cargo >/dev/null; then
    say "cargo (Rust) is required: install it with rustup (https://rustup.rs) and run again"; exit 1
  fi
  say "building ksmith (release)"
  cargo build --release --bin ksmith
  say "done: ./target/release/ksmith"
}

tools_only=0 with_torch=0
for arg in "$@"; do
  case "$arg" in
    --tools-only) tools_only=1 ;;
    --with-torch) with_torch=1 ;;
    *) say "unknown option $arg (known: --tools-only, --with-torch)"; exit 2 ;;
  esac
done

install_wheels
if [[ $with_torch == 1 ]]; then
  install_torch
fi
if [[ $tools_only == 0 ]]; then
  build
fi
