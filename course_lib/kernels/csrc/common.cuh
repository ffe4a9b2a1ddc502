// Device helpers shared by the kernel files (*.cu). Pure CUDA: no torch headers.
//
// Architectures: every kernel compiles for sm_75 (Turing: Colab's T4) and up. Features that need more are
// behind __CUDA_ARCH__ guards, and the host side (launch.h's Arch) never launches a kernel whose feature is
// absent from the code that was loaded:
//   mma.sync m16n8k16 (v7, v10: tensor cores)             sm_80+
//   griddepcontrol (programmatic dependent launch, v8/v9) sm_90+
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

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

// mma.sync m16n8k16 with fp32 accumulation (v7, v10), for fp16 or bf16 operands; pair() packs two values
// of T into one 32-bit operand register (the first in the low half, the lower column of the fragment).
// Compiled for sm_75 the mma is a trap: the host never launches it there (launch.h's has_mma).
template <typename T>
struct Mma {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "fp16 or bf16 operands");
  static __device__ __forceinline__ uint32_t pair(float a, float b) {
    uint32_t out;
    if constexpr (std::is_same<T, __half>::value) {
      const __half2 h = __floats2half2_rn(a, b);
      out = *reinterpret_cast<const uint32_t*>(&h);
    } else {
      const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
      out = *reinterpret_cast<const uint32_t*>(&h);
    }
    return out;
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if COURSE_HAS_MMA
#define COURSE_MMA_16816(TY)                                                                                   \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, " \
               "{%0,%1,%2,%3};\n"                                                                              \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                 \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
    if constexpr (std::is_same<T, __half>::value) {
      COURSE_MMA_16816("f16");
    } else {
      COURSE_MMA_16816("bf16");
    }
#undef COURSE_MMA_16816
#else
    __trap();  // sm_75 code: the host runs another version instead (launch.h's has_mma)
#endif
  }
};

// A 16-byte load of data read once (the weights): through the non-coherent path, without allocating in L1,
// which keeps L1 for the activations that every row reuses.
__device__ __forceinline__ uint4 load_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// Programmatic dependent launch (v8, v9, v10; sm_90 code, with the launch attribute set by the host): let the next
// kernel in the stream start now, and wait until the previous kernel's writes are visible. No-ops in older code.
__device__ __forceinline__ void pdl_launch_dependents() {
#if COURSE_HAS_PDL
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if COURSE_HAS_PDL
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// kern<<<grid, block, smem, stream>>>(args...), launched with programmatic dependent launch when `pdl` (the caller
// checks has_pdl: the kernel must wait with griddepcontrol.wait, sm_90 code, before it reads what the previous
// kernel in the stream writes).
template <typename... Params, typename... Args>
cudaError_t launch_kernel(bool pdl, void (*kern)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          Args&&... args) {
  if (pdl) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kern, std::forward<Args>(args)...);
  }
  kern<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
}

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
