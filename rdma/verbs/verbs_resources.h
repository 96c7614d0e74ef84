// Move-only RAII owners for ibv_* objects and VERBS_CHECK. Teardown order matters in verbs
// (QPs before the CQs and SRQ they use, MRs and QPs before their PD, everything before the
// device context): owners that depend on each other are declared in that order, so members are
// destroyed in reverse. Destructors never throw and ignore errors (nothing can be done then).
#pragma once

#include <infiniband/verbs.h>

#include <cerrno>
#include <memory>

#include "common/status.h"

namespace kvferry::rdma::verbs {

template <typename T, int (*Destroy)(T*)>
struct VerbsDeleter {
  void operator()(T* p) const {
    if (p != nullptr) Destroy(p);
  }
};

inline int freeDeviceList(ibv_device** list) {
  ibv_free_device_list(list);
  return 0;
}

using DeviceList = std::unique_ptr<ibv_device*, VerbsDeleter<ibv_device*, freeDeviceList>>;
using Context = std::unique_ptr<ibv_context, VerbsDeleter<ibv_context, ibv_close_device>>;
using ProtectionDomain = std::unique_ptr<ibv_pd, VerbsDeleter<ibv_pd, ibv_dealloc_pd>>;
using CompChannel =
    std::unique_ptr<ibv_comp_channel, VerbsDeleter<ibv_comp_channel, ibv_destroy_comp_channel>>;
using CompletionQueue = std::unique_ptr<ibv_cq, VerbsDeleter<ibv_cq, ibv_destroy_cq>>;
using SharedReceiveQueue = std::unique_ptr<ibv_srq, VerbsDeleter<ibv_srq, ibv_destroy_srq>>;
using QueuePair = std::unique_ptr<ibv_qp, VerbsDeleter<ibv_qp, ibv_destroy_qp>>;
using MemoryRegion = std::unique_ptr<ibv_mr, VerbsDeleter<ibv_mr, ibv_dereg_mr>>;

}  // namespace kvferry::rdma::verbs

// Verbs calls report failure as NULL + errno, or as a non-zero return that is itself the errno.
// VERBS_CHECK(ibv_modify_qp(...)) returns IO_ERROR "ibv_modify_qp(...): <strerror>" on failure.
#define VERBS_CHECK(call)                                              \
  do {                                                                 \
    int kvf_rc_ = (call);                                              \
    if (kvf_rc_ != 0) {                                                \
      return ::kvferry::ioError(#call, kvf_rc_ > 0 ? kvf_rc_ : errno); \
    }                                                                  \
  } while (0)
