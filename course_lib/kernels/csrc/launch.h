// The CUDA kernels' host-side entry points: plain C++ over raw pointers and a stream, no torch types, so that
// the kernel sources (*.cu) compile without torch's headers (tests/library/test_kernels_build.py compiles them for
// every supported architecture on a machine without a GPU). bindings.cpp wraps them as torch custom ops.
//
// Every function returns cudaSuccess, the launch's error, or cudaErrorNotSupported when that kernel cannot run
// on this GPU or build (the caller then picks another version).
//
// Layouts (shared with the PyTorch reference in course_lib/kernels/ops.py and the C++ twin in lowbit_cpu.cpp):
//   int8 rows : q[M, K] int8, absmax[M] float32; q = rint(x * (127 / absmax)), 0 where absmax == 0.
//   NF4       : packed[N*K/2] uint8 over the flattened weight, high nibble first; absmax per block of
//               `blocksize` consecutive weights (bitsandbytes' layout); w = code[q] * absmax[i / blocksize].
//   int4      : packed[N, K/2] uint8 (high nibble first), scale[N, K/G] float32, zero[N, K/G] uint8;
//               w = (q - zero) * scale.
//   ternary   : packed[N, K/4] uint8, element 4j+k of a row in bits 2k..2k+1 of byte j, code = w + 1.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace course_kernels {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// What runs on the current device: `device` is its compute capability (75 for a T4, 90 for an H100) and `code`
// the virtual architecture the loaded kernels were compiled for (the PTX the driver JIT-compiled, or the
// machine code picked for this device): 75 when an H100 runs a "7.5+PTX" build. A feature needs both.
struct Arch {
  int device;
  int code;
};
cudaError_t current_arch(Arch* arch);
inline bool has_mma(const Arch& a) { return a.device >= 80 && a.code >= 80; }   // mma.sync m16n8k16 (v7, v10)
inline bool has_pdl(const Arch& a) { return a.device >= 90 && a.code >= 90; }   // programmatic dependent launch

// 1. row-wise absmax int8: x [M, K] float32/float16/bfloat16 -> q [M, K], absmax [M]
cudaError_t quantize_rows_int8(DType t, const void* x, int8_t* q, float* absmax, int M, int K, cudaStream_t s);

// 2. dequantization to `t`: NF4 (n weights, flattened) and int4 ([N, K])
cudaError_t dequantize_nf4(DType t, const uint8_t* packed, const float* absmax, void* out, int64_t n, int blocksize,
                           cudaStream_t s);
cudaError_t dequantize_int4(DType t, const uint8_t* packed, const float* scale, const uint8_t* zero, void* out,
                            int64_t N, int K, int group, cudaStream_t s);

// 3. W4A16 GEMV / small-batch GEMM, y[B, N] = x[B, K] @ W.T, x and y float16 or bfloat16.
// v1: one thread per output, any B.
cudaError_t gemv_nf4_naive(DType t, const void* x, const uint8_t* packed, const float* absmax, void* y, int B, int N,
                           int K, int blocksize, cudaStream_t s);
// v2 (B == 1), v3 (B in 1, 2, 3, 4, 8, 16), v4, v5, v6 (B <= 4): the caller pads B to a compiled size.
cudaError_t gemv_nf4_rows(DType t, int version, const void* x, const uint8_t* packed, const float* absmax, void* y,
                          int B, int N, int K, int blocksize, cudaStream_t s);
// v7: tensor cores (sm_80+ code), any B; needs K % 64 == 0 and blocksize % 64 == 0.
cudaError_t gemv_nf4_mma(DType t, const void* x, const uint8_t* packed, const float* absmax, void* y, int B, int N,
                         int K, int blocksize, cudaStream_t s);
// v10: tensor cores, any B (16 per launch), the activations read once per block; needs K % 64 == 0 and
// blocksize % 64 == 0, sm_80+ code on an sm_80+ GPU (else cudaErrorNotSupported).
cudaError_t gemv_nf4_v10(DType t, const void* x, const uint8_t* packed, const float* absmax, void* y, int B, int N,
                         int K, int blocksize, cudaStream_t s);
// v10 in one of its gemv_nf4_v10_configs() development configurations (float16, B <= 8 or 16 by configuration;
// warps 0: the launch's own choice), for benchmarks/kernels.py --sweep-v10.
int gemv_nf4_v10_configs();
cudaError_t gemv_nf4_v10_config(DType t, int config, const void* x, const uint8_t* packed, const float* absmax,
                                void* y, int B, int N, int K, int blocksize, int warps, cudaStream_t s);
// v8 (B <= 4): byte-table decode; early_weights is v9 (see gemv_nf4_v8.cu).
cudaError_t gemv_nf4_v8(DType t, const void* x, const uint8_t* packed, const float* absmax, void* y, int B, int N,
                        int K, int blocksize, bool early_weights, cudaStream_t s);
// int4 with groups: v4 or v6, B <= 4 (padded by the caller to 1, 2, 3 or 4).
cudaError_t gemv_int4_rows(DType t, int version, const void* x, const uint8_t* packed, const float* scale,
                           const uint8_t* zero, void* y, int B, int N, int K, int group, cudaStream_t s);

// 4. ternary GEMV (additions only), B in 1, 2, 3, 4, 8, 16; K % 64 == 0.
cudaError_t gemv_ternary(DType t, const void* x, const uint8_t* packed, float scale, void* y, int B, int N, int K,
                         cudaStream_t s);

}  // namespace course_kernels
