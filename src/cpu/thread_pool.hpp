// A small persistent thread pool: parallel_for hands out indices dynamically, the caller works too.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace blasst::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i, worker) for every i in [0, n); worker is in [0, size()). The first exception
  // thrown by any call is rethrown here after all workers stopped.
  void parallel_for(std::int64_t n, const std::function<void(std::int64_t, int)>& fn);

 private:
  void work(int worker);
  void run_items(int worker);

  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(std::int64_t, int)>* fn_ = nullptr;
  std::int64_t n_ = 0;
  std::int64_t next_ = 0;
  std::uint64_t generation_ = 0;
  int busy_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

// The engine's shared pool, sized by num_threads().
ThreadPool& pool();

}  // namespace blasst::cpu
