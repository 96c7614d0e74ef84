// Token sampling on the device (sampling.cu): one block per sequence reads its logits row and
// writes the chosen token, so decode steps copy a token per sequence to the host, not its logits.
//
// Greedy: the largest logit, the lowest id on ties (NaN counts as -inf). Otherwise the weights
// p_i = exp((logit_i - max) / temperature) are held as 40-bit fixed point (integer sums: the same
// token for the same draw on every run); top_p keeps the tokens whose p is at least the largest
// threshold such that the kept mass reaches top_p of the whole (a radix select over p's bits, so
// ties at the threshold are all kept); the draw picks, walking the kept tokens in id order, the
// one at which the cumulative mass passes uniform × the kept mass.
// Only CUDA code includes this header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace kvferry::engine::cuda {

struct DeviceDraw {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;
  float uniform = 0.0f;  // in [0, 1)
  uint32_t unused = 0;
};

// tokens[b] for b < sequences, from logits rows of `vocab` floats and draws[b].
cudaError_t launchSample(const float* logits, uint32_t vocab, const DeviceDraw* draws,
                         uint32_t sequences, int32_t* tokens, cudaStream_t stream);

}  // namespace kvferry::engine::cuda
