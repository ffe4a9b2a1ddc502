// 3. NF4 GEMV v8 and v9 (batch 1-4): the configurations the default dispatch uses.
#include "gemv_nf4_v8.cuh"

namespace course_kernels {
namespace {

// v8's dispatch: the register-fed kernel with the rows per warp (R) and steps per item (U) that the sweep in
// benchmarks/kernels.py --sweep measured fastest on the H200 (benchmarks/results/kernels_h200.md): more rows
// per warp for tall matrices (each activation load serves more rows), fewer where N is small so that a wave
// still has ~2000 warps. The bulk-copy experiment measured slower everywhere (same file); it lives with the
// sweep's other configurations in benchmarks/csrc/. bf16 keeps fewer registers (its fp32 widening needs more: R4 U2 would take
// 147 registers, one block per SM).
//
// early_weights is v9: at batch 1 in fp16 with 6144 <= N < 12288, where the sweep measured it faster both back
// to back and after a kernel that writes x (8192x8192: 15.4 us against v8's 16.5, and 15.2 against 15.4), v8 R4 U1
// with the activations prefetched and programmatic dependent launch with the first weights read before
// griddepcontrol.wait. Only the caller knows that the kernel before it in the stream does not write the
// weights, so the default never picks it; elsewhere v9 runs v8.
template <typename T>
cudaError_t dispatch_v8(const T* x, const uint8_t* packed, const float* absmax, T* y, int B, int N, int K, int bs,
                        cudaStream_t st, bool early_weights) {
  constexpr bool f16 = std::is_same<T, __half>::value;
  switch (B) {
    case 1:
      if (!f16) return N >= 6144 ? launch_v8<T, 1, 4, 1, 1>(x, packed, absmax, y, N, K, bs, st)
                                 : launch_v8<T, 1, 2, 1, 1>(x, packed, absmax, y, N, K, bs, st);
      if (early_weights && N >= 6144 && N < 12288)
        return launch_v8<T, 1, 4, 1, 1, true, 2>(x, packed, absmax, y, N, K, bs, st);
      if (N >= 12288) return launch_v8<T, 1, 8, 1, 1>(x, packed, absmax, y, N, K, bs, st);
      if (N >= 6144)  // free registers (MINB 1) and PDL = 1 (always correct)
        return launch_v8<T, 1, 4, 1, 1, false, 1, 1>(x, packed, absmax, y, N, K, bs, st);
      if (K <= 8192) return launch_v8<T, 1, 4, 2, 1>(x, packed, absmax, y, N, K, bs, st);
      return launch_v8<T, 1, 2, 2, 1>(x, packed, absmax, y, N, K, bs, st);
    case 2:
      return N >= 6144 ? launch_v8<T, 2, 4, 1, 1>(x, packed, absmax, y, N, K, bs, st)
                       : launch_v8<T, 2, 2, 1, 1>(x, packed, absmax, y, N, K, bs, st);
    case 3:
      return launch_v8<T, 3, 2, 1, 1>(x, packed, absmax, y, N, K, bs, st);
    default:
      return launch_v8<T, 4, 2, 1, 1>(x, packed, absmax, y, N, K, bs, st);
  }
}

}  // namespace

cudaError_t gemv_nf4_v8(DType t, const void* x, const uint8_t* packed, const float* absmax, void* y, int B, int N,
                        int K, int blocksize, bool early_weights, cudaStream_t s) {
  if (B < 1 || B > 4 || K % 32 || blocksize % 32) return cudaErrorInvalidValue;
  return dispatch_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return dispatch_v8<T>(static_cast<const T*>(x), packed, absmax, static_cast<T*>(y), B, N, K, blocksize, s,
                          early_weights);
  });
}

}  // namespace course_kernels
