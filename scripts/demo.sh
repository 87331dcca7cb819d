#!/usr/bin/env bash
# Builds blasst and runs its main job on generated inputs: causal prefill with 4K tokens, 32 query
# and 8 KV heads, head dim 128, dense against BLASST at several scale factors on the CPU engine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target blasst_cli
./build/blasst info
./build/blasst bench --phase prefill --seq-len 4096 "$@"
