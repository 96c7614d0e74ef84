// A fixed pool of worker threads for the CPU runtime's data-parallel kernels. Workers sleep on a
// condition variable between jobs (no spinning: the agent shares its cores with the transfer
// engine's progress threads), and run() allocates nothing, so a forward pass can call it many
// times per layer.
//
// Work is claimed, not assigned: a job is cut into a few chunks per thread and every thread,
// the caller included, takes chunks until none is left. A worker that the OS has not scheduled
// yet (its core busy with something else) thus delays nothing: the others take its share, and
// run() returns as soon as every chunk is done, whether or not each worker woke up for it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace kvferry::engine::cpu {

// Thread ownership: one thread (the owner) calls run(); workers are named "kvf-engine-N".
// Not re-entrant: a task must not call run() on the same pool.
class ThreadPool {
 public:
  // `threads` counts the caller of run() too, so threads - 1 workers are started; 0 means
  // std::thread::hardware_concurrency().
  explicit ThreadPool(uint32_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  uint32_t size() const { return static_cast<uint32_t>(workers_.size()) + 1; }

  // Calls fn(begin, end, thread) over disjoint, non-empty ranges that together cover
  // [0, tasks), from the calling thread and the workers; `thread` in [0, size()) names the
  // thread making the call (0: the caller), so fn may use per-thread scratch. Returns when every
  // call has returned. A task count of 1 runs on the caller alone.
  template <typename Fn>
  void run(size_t tasks, Fn&& fn) {
    if (tasks == 0) return;
    if (tasks == 1 || workers_.empty()) {
      fn(size_t{0}, tasks, uint32_t{0});
      return;
    }
    using Callable = std::remove_reference_t<Fn>;
    dispatch(
        tasks,
        [](void* callable, size_t begin, size_t end, uint32_t thread) {
          (*static_cast<Callable*>(callable))(begin, end, thread);
        },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using Trampoline = void (*)(void* callable, size_t begin, size_t end, uint32_t thread);
  struct Job {
    Trampoline trampoline = nullptr;
    void* callable = nullptr;
    size_t tasks = 0;
    uint32_t chunks = 0;
  };

  void dispatch(size_t tasks, Trampoline trampoline, void* callable);
  // Claims and runs chunks of `job` (generation `generation`) until none is left.
  void work(const Job& job, uint64_t generation, uint32_t thread);
  void workerLoop(uint32_t thread);

  std::mutex mu_;
  std::condition_variable start_cv_;  // a new job, or stopping
  std::condition_variable done_cv_;   // the job's last chunk finished
  uint64_t generation_ = 0;           // bumped per job, under mu_
  bool stopping_ = false;
  Job job_;  // the current job: written under mu_ with generation_
  // (low 32 bits of the generation) << 32 | next unclaimed chunk. A thread holding an old job's
  // description cannot claim a chunk of a newer one: the generation half differs.
  std::atomic<uint64_t> claim_ = 0;
  std::atomic<uint32_t> completed_ = 0;  // chunks of the current job finished
  std::vector<std::thread> workers_;     // last: joined (in the destructor) before the rest goes
};

}  // namespace kvferry::engine::cpu
