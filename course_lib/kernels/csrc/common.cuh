// Device helpers shared by the kernel files (*.cu). Pure CUDA: no torch headers.
//
// Architectures: every kernel compiles for sm_75 (Turing: Colab's T4) and up. Features that need more are
// behind __CUDA_ARCH__ guards, and the host side (launch.h's Arch) never launches a kernel whose feature is
// absent from the code that was loaded:
//   mma.sync m16n8k16 (v7, tensor cores)                  sm_80+
//   griddepcontrol (programmatic dependent launch, v8/v9) sm_90+
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "launch.h"
#include "nf4_code.h"

namespace course_kernels {

constexpr int WARP = 32;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define COURSE_HAS_MMA 1
#else
#define COURSE_HAS_MMA 0
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define COURSE_HAS_PDL 1
#else
#define COURSE_HAS_PDL 0
#endif

// Each translation unit holds its own copy, initialized at compile time: nothing to upload.
static __constant__ float c_nf4_code[16] = COURSE_NF4_CODE;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = WARP / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = WARP / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// 2 x 16-bit floats packed in one 32-bit word -> float2
__device__ __forceinline__ float2 to_float2(uint32_t word, const __half*) {
  __half2 h = *reinterpret_cast<__half2*>(&word);
  return __half22float2(h);
}
__device__ __forceinline__ float2 to_float2(uint32_t word, const __nv_bfloat16*) {
  __nv_bfloat162 h = *reinterpret_cast<__nv_bfloat162*>(&word);
  return __bfloat1622float2(h);
}
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

inline int grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535LL * 8));
}

// The current device's index, clamped to the per-device caches' 64 slots.
inline int cached_device() {
  int dev = 0;
  (void)cudaGetDevice(&dev);
  return std::min(dev, 63);
}

// Calls f.template operator()<T>() with T the element type of `t` (float only where allow_float).
template <bool allow_float = false, typename F>
cudaError_t dispatch_dtype(DType t, F&& f) {
  if (t == DType::kFloat16) return f(static_cast<__half*>(nullptr));
  if (t == DType::kBFloat16) return f(static_cast<__nv_bfloat16*>(nullptr));
  if constexpr (allow_float) {
    if (t == DType::kFloat32) return f(static_cast<float*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

}  // namespace course_kernels
