// Shared pieces of the CUDA benchmarks: checked calls, bf16 rounding, graph-replay timing.
#pragma once

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "blasst/convert.hpp"
#include "blasst/npy.hpp"
#include "sparsity_search.hpp"

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

inline float bf16_float(std::uint16_t h) {
  const std::uint32_t b = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// A float32 or float16 .npy file as float32 values with its shape (captured model tensors, e.g.
// scripts/capture_bench_inputs.py); exits with a message on any other dtype or `want_dims` mismatch.
struct FloatArray {
  std::vector<std::int64_t> shape;
  std::vector<float> x;
};
inline FloatArray load_floats(const std::string& path, std::size_t want_dims) {
  const npy::Array a = npy::load(path);
  if ((a.type != npy::Type::f32 && a.type != npy::Type::f16) || a.shape.size() != want_dims) {
    std::fprintf(stderr, "%s: want a %zu-d float32 or float16 array, got %zu-d %s\n", path.c_str(), want_dims,
                 a.shape.size(), npy::to_string(a.type));
    std::exit(2);
  }
  FloatArray f{a.shape, std::vector<float>(static_cast<std::size_t>(a.numel()))};
  convert_row(a.bytes.data(), a.type == npy::Type::f16 ? DType::f16 : DType::f32, f.x.data(), a.numel());
  return f;
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

// SM clock and board power of device 0 through NVML, opened at run time (libnvidia-ml comes with
// the driver; without it the readings are 0 and nothing fails). The H200 runs these benchmarks at
// its power limit, so the clock a case ran at belongs beside its time.
class Nvml {
 public:
  static Nvml& get() {
    static Nvml n;
    return n;
  }
  bool ok() const { return dev_ != nullptr; }
  double sm_mhz() const {
    unsigned v = 0;
    return ok() && clock_(dev_, 1 /* NVML_CLOCK_SM */, &v) == 0 ? v : 0.0;
  }
  double power_w() const {
    unsigned mw = 0;
    return ok() && power_(dev_, &mw) == 0 ? mw * 1e-3 : 0.0;
  }

 private:
  using Init = int (*)();
  using ByPci = int (*)(const char*, void**);
  using Clock = int (*)(void*, int, unsigned*);
  using Power = int (*)(void*, unsigned*);
  Nvml() {
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    auto init = reinterpret_cast<Init>(dlsym(lib, "nvmlInit_v2"));
    auto by_pci = reinterpret_cast<ByPci>(dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
    clock_ = reinterpret_cast<Clock>(dlsym(lib, "nvmlDeviceGetClockInfo"));
    power_ = reinterpret_cast<Power>(dlsym(lib, "nvmlDeviceGetPowerUsage"));
    char bus[32] = {};
    if (!init || !by_pci || !clock_ || !power_ || init() != 0 || cudaDeviceGetPCIBusId(bus, sizeof bus, 0) != cudaSuccess)
      return;
    void* dev = nullptr;
    if (by_pci(bus, &dev) == 0) dev_ = dev;
  }
  void* dev_ = nullptr;
  Clock clock_ = nullptr;
  Power power_ = nullptr;
};

// What the GPU ran at during a timing: the median SM clock and the mean board power over the timed
// replays (0 without NVML).
struct GpuState {
  double sm_mhz = 0, power_w = 0;
};

// Median ms per call over `reps` replays of a graph holding `inner` calls of enqueue(stream).
template <class Enqueue>
double time_graph(cudaStream_t stream, int reps, int inner, Enqueue&& enqueue, double warm_s = 0,
                  GpuState* state = nullptr) {
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
  std::vector<double> t, mhz;
  double watts = 0;
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventRecord(a, stream));
    CK(cudaGraphLaunch(exec, stream));
    CK(cudaEventRecord(b, stream));
    if (state) mhz.push_back(Nvml::get().sm_mhz()), watts += Nvml::get().power_w();  // while it runs
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms / inner);
  }
  if (state) {
    std::sort(mhz.begin(), mhz.end());
    state->sm_mhz = mhz[mhz.size() / 2], state->power_w = watts / reps;
  }
  std::sort(t.begin(), t.end());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return t[t.size() / 2];
}

}  // namespace blasst::bench
