#!/usr/bin/env bash
# Builds the GPU test and benchmark binaries here for the device (portable x86-64-v3 CPU code) into
# .devbuild/, and copies GoogleTest's sources to .deps/ for a fallback build there. Both folders
# are git-ignored: pass them to the device call in `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-dev -DCMAKE_BUILD_TYPE=Release -DBLASST_CPU_ARCH=x86-64-v3 -DBLASST_BUILD_BENCH=ON >/dev/null
cmake --build build-dev -j"$(nproc)" --target blasst_cuda_tests blasst_cuda_decode_bench blasst_cuda_prefill_bench blasst_cli
rm -rf .devbuild && mkdir -p .devbuild/tests .devbuild/bench
cp build-dev/tests/blasst_cuda_tests .devbuild/tests/
cp build-dev/bench/blasst_cuda_decode_bench build-dev/bench/blasst_cuda_prefill_bench .devbuild/bench/
cp build-dev/blasst build-dev/libblasst.a .devbuild/
if [ -d /usr/src/googletest ] && [ ! -d .deps/googletest ]; then
  mkdir -p .deps && cp -r /usr/src/googletest .deps/googletest
fi
du -sh .devbuild .deps
