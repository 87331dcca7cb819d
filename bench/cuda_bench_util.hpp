// Shared pieces of the CUDA benchmarks: checked calls, bf16 rounding, graph-replay timing.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CK(call)                                                                                  \
  do {                                                                                            \
    cudaError_t e_ = (call);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

namespace blasst::bench {

inline std::uint16_t bf16_bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7fffu + ((b >> 16) & 1u);
  return static_cast<std::uint16_t>(b >> 16);
}

// One line about device 0 and the CUDA versions (the first line of every benchmark's output),
// with `extra` appended.
inline void print_gpu(const char* extra) {
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  int driver = 0, runtime = 0;
  CK(cudaDriverGetVersion(&driver));
  CK(cudaRuntimeGetVersion(&runtime));
  std::printf("GPU %s, %d SMs, CUDA runtime %d, driver %d%s\n", prop.name, prop.multiProcessorCount, runtime, driver,
              extra);
}

// Median ms per call over `reps` replays of a graph holding `inner` calls of enqueue(stream).
template <class Enqueue>
double time_graph(cudaStream_t stream, int reps, int inner, Enqueue&& enqueue, double warm_s = 0) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < inner; ++i) enqueue(stream);
  CK(cudaStreamEndCapture(stream, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  CK(cudaGraphLaunch(exec, stream));
  // warm_s: replay for that long first, so that the timed replays see the clocks of a GPU that has
  // been busy (at its power limit, a cool one runs faster for a while and flatters the case timed
  // first after an idle spell).
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < warm_s) {
    CK(cudaGraphLaunch(exec, stream));
    CK(cudaStreamSynchronize(stream));
  }
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventRecord(a, stream));
    CK(cudaGraphLaunch(exec, stream));
    CK(cudaEventRecord(b, stream));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms / inner);
  }
  std::sort(t.begin(), t.end());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return t[t.size() / 2];
}

}  // namespace blasst::bench
