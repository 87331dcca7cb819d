#!/usr/bin/env bash
# Builds the GPU test and benchmark binaries here for the device (portable x86-64-v3 CPU code) into
# .devbuild/, and copies GoogleTest's sources to .deps/ for a fallback build there. Both folders
# are git-ignored: pass them to the device call in `carry`. With --pic also a position-independent
# libblasst.a (.devbuild/libblasst_pic.a, a second build of the library in build-pic), against
# which the device builds only the Python extension (scripts/gpu-check.sh python).
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
if [ "${1:-}" = --pic ]; then
  cmake -S . -B build-pic -DCMAKE_BUILD_TYPE=Release -DBLASST_CPU_ARCH=x86-64-v3 -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DBLASST_BUILD_TESTS=OFF -DBLASST_BUILD_BENCH=OFF -DBLASST_PYTHON=OFF >/dev/null
  cmake --build build-pic -j"$(nproc)" --target blasst
  cp build-pic/libblasst.a .devbuild/libblasst_pic.a
fi
du -sh .devbuild .deps
