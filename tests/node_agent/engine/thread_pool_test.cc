#include "node_agent/engine/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace kvferry::engine::cpu {
namespace {

TEST(ThreadPoolTest, RunsEveryTaskExactlyOnce) {
  for (uint32_t threads : {1u, 2u, 3u, 4u}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (size_t tasks : {0u, 1u, 2u, 3u, 5u, 17u, 1000u}) {
      std::vector<std::atomic<int>> seen(tasks);
      // Per-thread scratch is safe: a thread index is never used by two threads at once.
      std::vector<std::atomic<int>> inside(threads);
      const std::thread::id caller = std::this_thread::get_id();
      std::atomic<bool> thread0_is_caller = true;
      std::atomic<bool> shared_index = false;
      pool.run(tasks, [&](size_t begin, size_t end, uint32_t thread) {
        ASSERT_LT(thread, threads);
        ASSERT_LT(begin, end);
        if (++inside[thread] != 1) shared_index = true;
        if ((thread == 0) != (std::this_thread::get_id() == caller)) thread0_is_caller = false;
        for (size_t t = begin; t < end; ++t) ++seen[t];
        --inside[thread];
      });
      for (size_t t = 0; t < tasks; ++t) EXPECT_EQ(seen[t], 1) << tasks << " tasks";
      EXPECT_TRUE(thread0_is_caller);
      EXPECT_FALSE(shared_index);
    }
  }
}

// Many short jobs back to back: no wake-up is lost and no job overlaps the next.
TEST(ThreadPoolTest, ManyConsecutiveJobsComplete) {
  ThreadPool pool(3);
  std::atomic<uint64_t> sum = 0;
  for (int job = 0; job < 5000; ++job) {
    pool.run(3, [&](size_t begin, size_t end, uint32_t) {
      for (size_t t = begin; t < end; ++t) sum += t + 1;
    });
  }
  EXPECT_EQ(sum, 5000u * 6u);
}

}  // namespace
}  // namespace kvferry::engine::cpu
