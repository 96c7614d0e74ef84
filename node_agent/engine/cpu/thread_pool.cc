#include "node_agent/engine/cpu/thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <string>

namespace kvferry::engine::cpu {
namespace {

// Chunks per thread: enough to even out unequal progress, few enough that claiming is cheap.
constexpr size_t kChunksPerThread = 4;

uint64_t claimTag(uint64_t generation) { return (generation & 0xffffffffu) << 32; }

}  // namespace

ThreadPool::ThreadPool(uint32_t threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(threads - 1);
  for (uint32_t thread = 1; thread < threads; ++thread) {
    workers_.emplace_back([this, thread] { workerLoop(thread); });
    const std::string name = "kvf-engine-" + std::to_string(thread);
    pthread_setname_np(workers_.back().native_handle(), name.c_str());
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  start_cv_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

void ThreadPool::dispatch(size_t tasks, Trampoline trampoline, void* callable) {
  Job job;
  uint64_t generation;
  {
    std::lock_guard lock(mu_);
    generation = ++generation_;
    job = {trampoline, callable, tasks,
           static_cast<uint32_t>(std::min(tasks, size() * kChunksPerThread))};
    job_ = job;
    completed_.store(0, std::memory_order_relaxed);
    claim_.store(claimTag(generation), std::memory_order_release);
  }
  start_cv_.notify_all();
  work(job, generation, 0);
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] { return completed_.load(std::memory_order_acquire) == job.chunks; });
}

void ThreadPool::work(const Job& job, uint64_t generation, uint32_t thread) {
  const uint64_t tag = claimTag(generation);
  uint64_t claim = claim_.load(std::memory_order_acquire);
  while ((claim & ~uint64_t{0xffffffffu}) == tag && (claim & 0xffffffffu) < job.chunks) {
    if (!claim_.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel)) continue;
    const size_t chunk = claim & 0xffffffffu;
    job.trampoline(job.callable, job.tasks * chunk / job.chunks,
                   job.tasks * (chunk + 1) / job.chunks, thread);
    // The job (and the caller's stack it points into) lives until the last chunk is counted.
    if (completed_.fetch_add(1, std::memory_order_acq_rel) + 1 == job.chunks) {
      std::lock_guard lock(mu_);
      done_cv_.notify_one();
    }
    claim = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::workerLoop(uint32_t thread) {
  uint64_t seen = 0;
  std::unique_lock lock(mu_);
  while (true) {
    start_cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    const Job job = job_;
    lock.unlock();
    work(job, seen, thread);
    lock.lock();
  }
}

}  // namespace kvferry::engine::cpu
