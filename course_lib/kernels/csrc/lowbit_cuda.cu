// CUDA kernels of course_lib.kernels (notebook 13). Each is checked against the PyTorch reference in
// course_lib/kernels/reference.py by tests/test_kernels.py and timed by benchmarks/kernels.py.
//
// Layouts (shared with the reference and the C++ twin in lowbit_cpu.cpp):
//   int8 rows : q[M, K] int8, absmax[M] float32; q = rint(x * (127 / absmax)), 0 where absmax == 0.
//   NF4       : packed[N*K/2] uint8 over the flattened weight, high nibble first; absmax per block of
//               `blocksize` consecutive weights (bitsandbytes' layout); w = code[q] * absmax[i / blocksize].
//   int4      : packed[N, K/2] uint8 (high nibble first), scale[N, K/G] float32, zero[N, K/G] uint8;
//               w = (q - zero) * scale.
//   ternary   : packed[N, K/4] uint8, element 4j+k of a row in bits 2k..2k+1 of byte j, code = w + 1.
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace {

constexpr int WARP = 32;

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

__constant__ float c_nf4_code[16];

// ------------------------------------------------------------------------------------------------
// 1. row-wise absmax int8 quantization: one block per row; pass 1 finds max|x|, pass 2 writes codes.
template <typename T, int THREADS>
__global__ void __launch_bounds__(THREADS) quantize_rows_int8_kernel(const T* __restrict__ x, int8_t* __restrict__ q,
                                                                     float* __restrict__ absmax, int K) {
  const int row = blockIdx.x;
  const T* xr = x + static_cast<int64_t>(row) * K;
  int8_t* qr = q + static_cast<int64_t>(row) * K;
  constexpr int VEC = 16 / sizeof(T);  // elements per 16-byte load
  const bool vec_ok = (K % VEC == 0) && (reinterpret_cast<uintptr_t>(xr) % 16 == 0);
  float m = 0.f;
  if (vec_ok) {
    for (int i = threadIdx.x * VEC; i < K; i += THREADS * VEC) {
      uint4 raw = *reinterpret_cast<const uint4*>(xr + i);
      const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int j = 0; j < VEC; ++j) m = fmaxf(m, fabsf(to_float(v[j])));
    }
  } else {
    for (int i = threadIdx.x; i < K; i += THREADS) m = fmaxf(m, fabsf(to_float(xr[i])));
  }
  __shared__ float partial[THREADS / WARP];
  m = warp_max(m);
  if (threadIdx.x % WARP == 0) partial[threadIdx.x / WARP] = m;
  __syncthreads();
  if (threadIdx.x < WARP) {
    float v = threadIdx.x < THREADS / WARP ? partial[threadIdx.x] : 0.f;
    v = warp_max(v);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  const float amax = partial[0];
  if (threadIdx.x == 0) absmax[row] = amax;
  const float inv = amax > 0.f ? __fdiv_rn(127.f, amax) : 0.f;
  if (vec_ok && VEC == 8 && reinterpret_cast<uintptr_t>(qr) % 8 == 0) {
    for (int i = threadIdx.x * VEC; i < K; i += THREADS * VEC) {
      uint4 raw = *reinterpret_cast<const uint4*>(xr + i);
      const T* v = reinterpret_cast<const T*>(&raw);
      char4 lo, hi;
      lo.x = static_cast<int8_t>(rintf(to_float(v[0]) * inv));
      lo.y = static_cast<int8_t>(rintf(to_float(v[1]) * inv));
      lo.z = static_cast<int8_t>(rintf(to_float(v[2]) * inv));
      lo.w = static_cast<int8_t>(rintf(to_float(v[3]) * inv));
      hi.x = static_cast<int8_t>(rintf(to_float(v[4]) * inv));
      hi.y = static_cast<int8_t>(rintf(to_float(v[5]) * inv));
      hi.z = static_cast<int8_t>(rintf(to_float(v[6]) * inv));
      hi.w = static_cast<int8_t>(rintf(to_float(v[7]) * inv));
      uint2 out;
      out.x = *reinterpret_cast<uint32_t*>(&lo);
      out.y = *reinterpret_cast<uint32_t*>(&hi);
      *reinterpret_cast<uint2*>(qr + i) = out;
    }
  } else {
    for (int i = threadIdx.x; i < K; i += THREADS) qr[i] = static_cast<int8_t>(rintf(to_float(xr[i]) * inv));
  }
}

// ------------------------------------------------------------------------------------------------
// 2. dequantization of 4-bit weights. One thread per packed byte pair (4 codes), grid-stride.
template <typename T>
__global__ void dequantize_nf4_kernel(const uint8_t* __restrict__ packed, const float* __restrict__ absmax,
                                      T* __restrict__ out, int64_t n, int blocksize) {
  const int64_t n_bytes = (n + 1) / 2;
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < n_bytes;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint8_t byte = packed[b];
    const int64_t i = 2 * b;
    out[i] = from_float<T>(c_nf4_code[byte >> 4] * absmax[i / blocksize]);
    if (i + 1 < n) out[i + 1] = from_float<T>(c_nf4_code[byte & 15] * absmax[(i + 1) / blocksize]);
  }
}

// The same with 16-byte loads: one thread decodes 16 packed bytes (32 weights sharing one absmax, so
// blocksize % 32 == 0 and n % 32 == 0) and writes them with 16-byte stores. The one-byte version above
// made dequantize-then-cuBLAS (batch > 4) 6x slower than cuBLAS on fp16 weights.
template <typename T>
__global__ void dequantize_nf4_vec_kernel(const uint8_t* __restrict__ packed, const float* __restrict__ absmax,
                                          T* __restrict__ out, int64_t n, int blocksize) {
  __shared__ float code[16];
  if (threadIdx.x < 16) code[threadIdx.x] = c_nf4_code[threadIdx.x];
  __syncthreads();
  const int64_t chunks = n / 32;
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < chunks;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint4 p = __ldg(reinterpret_cast<const uint4*>(packed) + c);
    const float a = __ldg(absmax + (c * 32) / blocksize);
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&p);
    T vals[32];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      vals[2 * j] = from_float<T>(code[bytes[j] >> 4] * a);
      vals[2 * j + 1] = from_float<T>(code[bytes[j] & 15] * a);
    }
    uint4* dst = reinterpret_cast<uint4*>(out + c * 32);
    const uint4* src = reinterpret_cast<const uint4*>(vals);
#pragma unroll
    for (int j = 0; j < static_cast<int>(32 * sizeof(T) / 16); ++j) dst[j] = src[j];
  }
}

template <typename T>
__global__ void dequantize_int4_kernel(const uint8_t* __restrict__ packed, const float* __restrict__ scale,
                                       const uint8_t* __restrict__ zero, T* __restrict__ out, int64_t N, int K,
                                       int group) {
  const int64_t n_bytes = N * (K / 2);
  const int groups = K / group;
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < n_bytes;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = b / (K / 2);
    const int col = static_cast<int>(b % (K / 2)) * 2;
    const int64_t g = row * groups + col / group;  // col and col + 1 share a group (group is even)
    const uint8_t byte = packed[b];
    const float s = scale[g], z = static_cast<float>(zero[g]);
    out[row * K + col] = from_float<T>((static_cast<float>(byte >> 4) - z) * s);
    out[row * K + col + 1] = from_float<T>((static_cast<float>(byte & 15) - z) * s);
  }
}

// ------------------------------------------------------------------------------------------------
// 3. GEMV / small-batch GEMM with 4-bit weights, y[B, N] = x[B, K] @ W[N, K]^T.
//
// v1 "naive": one thread per output element, one byte at a time (correct, slow: uncoalesced).
// v2 "warp": one warp per output row, 16-byte weight loads, codebook in shared memory.
// v3 "fused": one warp per ROWS rows so that each activation load serves ROWS rows, B batch rows per
//    weight load, two 16-byte weight loads per lane in flight, fp32 accumulation, warp-shuffle sum.
template <typename T>
__global__ void gemv_nf4_naive_kernel(const T* __restrict__ x, const uint8_t* __restrict__ packed,
                                      const float* __restrict__ absmax, T* __restrict__ y, int B, int N, int K,
                                      int blocksize) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<int64_t>(B) * N) return;
  const int b = idx / N, n = idx % N;
  float acc = 0.f;
  for (int k = 0; k < K; ++k) {
    const int64_t i = static_cast<int64_t>(n) * K + k;
    const uint8_t byte = packed[i / 2];
    const int code = (i % 2 == 0) ? (byte >> 4) : (byte & 15);
    acc += c_nf4_code[code] * absmax[i / blocksize] * to_float(x[static_cast<int64_t>(b) * K + k]);
  }
  y[idx] = from_float<T>(acc);
}

// Each lane owns 32 consecutive weights (16 packed bytes) per step. With K % 64 == 0 and blocksize 64
// (or any multiple of 32 dividing K), those 32 weights share one absmax.
template <typename T, int B, int ROWS>
__global__ void __launch_bounds__(256) gemv_nf4_fused_kernel(const T* __restrict__ x,
                                                             const uint8_t* __restrict__ packed,
                                                             const float* __restrict__ absmax, T* __restrict__ y,
                                                             int N, int K, int blocksize) {
  __shared__ float code[16];
  if (threadIdx.x < 16) code[threadIdx.x] = c_nf4_code[threadIdx.x];
  __syncthreads();
  const int lane = threadIdx.x % WARP;
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / WARP;
  const int row0 = warp * ROWS;
  if (row0 >= N) return;
  float acc[ROWS][B];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = 0.f;

  const int steps = K / 32;  // 32 weights per lane-step
  for (int s = lane; s < steps; s += WARP) {
    const int k0 = s * 32;
    uint4 w[ROWS];
    float amax[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const int row = min(row0 + r, N - 1);
      const int64_t flat = static_cast<int64_t>(row) * K + k0;
      w[r] = __ldg(reinterpret_cast<const uint4*>(packed + flat / 2));
      amax[r] = __ldg(absmax + flat / blocksize);
    }
    float part[ROWS][B];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) part[r][b] = 0.f;
#pragma unroll
    for (int word = 0; word < 4; ++word) {  // 4 words of 8 codes each
      float v[ROWS][8];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const uint32_t packed_word = reinterpret_cast<const uint32_t*>(&w[r])[word];
#pragma unroll
        for (int j = 0; j < 4; ++j) {  // byte j holds codes 2j (high nibble) and 2j+1 (low nibble)
          const uint32_t byte = (packed_word >> (8 * j)) & 0xffu;
          v[r][2 * j] = code[byte >> 4];
          v[r][2 * j + 1] = code[byte & 15u];
        }
      }
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const uint4 xr = __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(b) * K + k0 + 8 * word));
        const uint32_t* xw = reinterpret_cast<const uint32_t*>(&xr);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 xf = to_float2(xw[j], static_cast<const T*>(nullptr));
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            part[r][b] = fmaf(v[r][2 * j], xf.x, part[r][b]);
            part[r][b] = fmaf(v[r][2 * j + 1], xf.y, part[r][b]);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) acc[r][b] = fmaf(amax[r], part[r][b], acc[r][b]);
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int b = 0; b < B; ++b) {
      const float total = warp_sum(acc[r][b]);
      if (lane == 0 && row0 + r < N) y[static_cast<int64_t>(b) * N + row0 + r] = from_float<T>(total);
    }
}

// v4: the whole block works on ROWS rows. Profiling v3 (ncu, 8192x8192, batch 1) showed a grid too small
// for the GPU: 2048 warps, half a wave, 23% achieved occupancy, DRAM at 41% of peak, the SMs half idle,
// i.e. too few loads in flight, not too many instructions. Here the block's threads split K: each
// thread handles one or two 32-weight steps of all ROWS rows (ROWS independent 16-byte loads issued back
// to back), and the partial sums meet in shared memory. 8192 rows -> 2048 blocks of 256 threads.
// NF4: `scale` is the absmax per `group` (= blocksize) weights of the flattened matrix, `zero` unused;
// the code is looked up in a 16-entry shared-memory table.
// int4: `scale`, `zero` per `group` weights of a row; PRMT (`__byte_perm`) assembles the float 2^23 + q
// from the code byte and the exponent byte 0x4B, and one FADD of -(2^23 + zero) gives q - zero exactly.
template <typename T, int B, int ROWS, bool NF4>
__global__ void __launch_bounds__(256) gemv_4bit_v4_kernel(const T* __restrict__ x, const uint8_t* __restrict__ packed,
                                                           const float* __restrict__ scale,
                                                           const uint8_t* __restrict__ zero, T* __restrict__ y,
                                                           int N, int K, int group) {
  __shared__ float code[16];
  __shared__ float partial[256 / WARP][ROWS * B];
  if (NF4 && threadIdx.x < 16) code[threadIdx.x] = c_nf4_code[threadIdx.x];
  __syncthreads();
  const int row0 = blockIdx.x * ROWS;
  const int groups = K / group;
  const int steps = K / 32;
  float acc[ROWS][B];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = 0.f;
  for (int s = threadIdx.x; s < steps; s += blockDim.x) {
    const int k0 = s * 32;
    uint4 w[ROWS];
    float sc[ROWS], zf[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const int row = min(row0 + r, N - 1);
      const int64_t flat = static_cast<int64_t>(row) * K + k0;
      w[r] = __ldg(reinterpret_cast<const uint4*>(packed + flat / 2));
      if (NF4) {
        sc[r] = __ldg(scale + flat / group);
        zf[r] = 0.f;
      } else {
        const int64_t g = static_cast<int64_t>(row) * groups + k0 / group;
        sc[r] = __ldg(scale + g);
        zf[r] = 8388608.f + static_cast<float>(__ldg(zero + g));
      }
    }
    float part[ROWS][B];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) part[r][b] = 0.f;
#pragma unroll
    for (int word = 0; word < 4; ++word) {
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const uint4 xr = __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(b) * K + k0 + 8 * word));
        const uint32_t* xw = reinterpret_cast<const uint32_t*>(&xr);
#pragma unroll
        for (int j = 0; j < 4; ++j) {  // byte j of a packed word: code 2j (high nibble), 2j+1 (low nibble)
          const float2 xf = to_float2(xw[j], static_cast<const T*>(nullptr));
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            const uint32_t pw = reinterpret_cast<const uint32_t*>(&w[r])[word];
            float ve, vo;
            if (NF4) {
              ve = code[(pw >> (8 * j + 4)) & 15u];
              vo = code[(pw >> (8 * j)) & 15u];
            } else {
              ve = __int_as_float(__byte_perm((pw >> 4) & 0x0F0F0F0Fu, 0x4B000000u, 0x7440 | j)) - zf[r];
              vo = __int_as_float(__byte_perm(pw & 0x0F0F0F0Fu, 0x4B000000u, 0x7440 | j)) - zf[r];
            }
            part[r][b] = fmaf(ve, xf.x, part[r][b]);
            part[r][b] = fmaf(vo, xf.y, part[r][b]);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) acc[r][b] = fmaf(sc[r], part[r][b], acc[r][b]);
  }
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int b = 0; b < B; ++b) {
      const float v = warp_sum(acc[r][b]);
      if (lane == 0) partial[warp][r * B + b] = v;
    }
  __syncthreads();
  if (threadIdx.x < ROWS * B) {
    const int r = threadIdx.x / B, b = threadIdx.x % B;
    float total = 0.f;
    for (int w = 0; w < static_cast<int>(blockDim.x) / WARP; ++w) total += partial[w][threadIdx.x];
    if (row0 + r < N) y[static_cast<int64_t>(b) * N + row0 + r] = from_float<T>(total);
  }
}

// v6: persistent, activations in registers, weights double-buffered. v4's blocks each made one or two
// 16-byte loads per thread and exited, so latency was exposed at every block, and every row re-read
// the activations through L1 (with the codebook lookups, L1/TEX at 80%). Here thread t owns the 32-weight
// slice t of EVERY row: its activations are loaded once into registers; the grid is one wave (as many
// blocks as fit on the GPU), each block walks chunks of R rows with the next chunk's weights already in
// flight while it computes the current one, and the warps' partial sums meet in double-buffered shared
// memory (one __syncthreads per chunk). Needs K / 32 <= 512 (K <= 16384); larger K uses v4.
// Measured (H200, benchmarks/results/kernels_h200.md): no faster than v4 at batch 1, slower at 3-4.
template <typename T, int B, int R, bool NF4>
__global__ void __launch_bounds__(512) gemv_4bit_v6_kernel(const T* __restrict__ x, const uint8_t* __restrict__ packed,
                                                           const float* __restrict__ scale,
                                                           const uint8_t* __restrict__ zero, T* __restrict__ y,
                                                           int N, int K, int group) {
  __shared__ float code[16];
  __shared__ float partial[2][512 / WARP][R * B];
  if (NF4 && threadIdx.x < 16) code[threadIdx.x] = c_nf4_code[threadIdx.x];
  const int steps = K / 32, groups = K / group;
  const bool active = static_cast<int>(threadIdx.x) < steps;
  const int k0 = active ? threadIdx.x * 32 : 0;
  uint4 xr[B][4];
#pragma unroll
  for (int b = 0; b < B; ++b)
#pragma unroll
    for (int word = 0; word < 4; ++word)
      xr[b][word] = active ? __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(b) * K + k0 + 8 * word))
                           : make_uint4(0u, 0u, 0u, 0u);
  __syncthreads();
  const int chunks = (N + R - 1) / R;
  uint4 w[R], wn[R];
  float sc[R], scn[R], zf[R], zfn[R];
  auto load = [&](int c, uint4 (&wd)[R], float (&sd)[R], float (&zd)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int row = min(c * R + r, N - 1);
      const int64_t flat = static_cast<int64_t>(row) * K + k0;
      wd[r] = active ? __ldg(reinterpret_cast<const uint4*>(packed + flat / 2)) : make_uint4(0u, 0u, 0u, 0u);
      if (NF4) {
        sd[r] = active ? __ldg(scale + flat / group) : 0.f;
        zd[r] = 0.f;
      } else {
        const int64_t g = static_cast<int64_t>(row) * groups + k0 / group;
        sd[r] = active ? __ldg(scale + g) : 0.f;
        zd[r] = 8388608.f + (active ? static_cast<float>(__ldg(zero + g)) : 0.f);
      }
    }
  };
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, warps = blockDim.x / WARP;
  int buf = 0;
  if (static_cast<int>(blockIdx.x) < chunks) load(blockIdx.x, w, sc, zf);
  for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int next = c + gridDim.x;
    if (next < chunks) load(next, wn, scn, zfn);
    float part[R][B];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) part[r][b] = 0.f;
#pragma unroll
    for (int word = 0; word < 4; ++word)
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const uint32_t* xw = reinterpret_cast<const uint32_t*>(&xr[b][word]);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 xf = to_float2(xw[j], static_cast<const T*>(nullptr));
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const uint32_t pw = reinterpret_cast<const uint32_t*>(&w[r])[word];
            float ve, vo;
            if (NF4) {
              ve = code[(pw >> (8 * j + 4)) & 15u];
              vo = code[(pw >> (8 * j)) & 15u];
            } else {
              ve = __int_as_float(__byte_perm((pw >> 4) & 0x0F0F0F0Fu, 0x4B000000u, 0x7440 | j)) - zf[r];
              vo = __int_as_float(__byte_perm(pw & 0x0F0F0F0Fu, 0x4B000000u, 0x7440 | j)) - zf[r];
            }
            part[r][b] = fmaf(ve, xf.x, part[r][b]);
            part[r][b] = fmaf(vo, xf.y, part[r][b]);
          }
        }
      }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const float v = warp_sum(sc[r] * part[r][b]);
        if (lane == 0) partial[buf][warp][r * B + b] = v;
      }
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < R * B) {
      const int r = threadIdx.x / B, b = threadIdx.x % B;
      float total = 0.f;
      for (int i = 0; i < warps; ++i) total += partial[buf][i][threadIdx.x];
      if (c * R + r < N) y[static_cast<int64_t>(b) * N + c * R + r] = from_float<T>(total);
    }
    buf ^= 1;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      w[r] = wn[r];
      sc[r] = scn[r];
      zf[r] = zfn[r];
    }
  }
}

// v7: tensor cores at small batch. v4 and v6 both land near 22 us at 8192x8192 on an H200 (41% of the
// copy bandwidth) and grow with the batch: about five instructions per weight and batch row (shift, mask,
// table load, address, FMA; an estimate, not profiled). Here one `mma.sync.m16n8k16` (fp16/bf16 inputs,
// fp32 accumulation) does 256 multiply-adds of a 16-row tile, so what is left per weight is decoding:
// one shared-memory load per packed byte (a 256-entry table of code pairs, copied 32 times so that lane
// l only reads bank l: no bank conflicts). k is permuted inside a tile (the sum does not care): lane (g, t)
// loads 8 contiguous bytes of rows g and g + 8 and the matching 16 activations of batch row g, so the 4
// lanes of a row cover exactly one absmax block of 64 weights: the mma sums the codes (each rounded once to
// x's dtype), and the absmax is applied in fp32 to that sum. A block's 8 warps split K for one 16-row tile and
// meet in shared memory. Batch up to 8 per n-tile, NT tiles. Needs K % 64 == 0 and blocksize % 64 == 0.
template <typename T> struct Mma;
template <> struct Mma<__half> {
  static __device__ __forceinline__ uint32_t pair(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <> struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pair(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

template <typename T, int NT>
__global__ void __launch_bounds__(256) gemv_nf4_mma_kernel(const T* __restrict__ x, const uint8_t* __restrict__ packed,
                                                           const float* __restrict__ absmax, T* __restrict__ y,
                                                           int B, int N, int K, int blocksize) {
  __shared__ uint32_t table[256][WARP];          // table[byte][lane] = (code[byte >> 4], code[byte & 15])
  __shared__ float red[8][16][8 * NT];
  for (int i = threadIdx.x; i < 256 * WARP; i += blockDim.x) {
    const int byte = i / WARP;
    table[byte][i % WARP] = Mma<T>::pair(c_nf4_code[byte >> 4], c_nf4_code[byte & 15]);
  }
  __syncthreads();
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  const int g = lane / 4, t4 = lane % 4;
  const int r0 = min(blockIdx.x * 16 + g, N - 1), r1 = min(blockIdx.x * 16 + g + 8, N - 1);
  const int iters = K / 64;  // one iteration = 64 weights of each of the 16 rows = one absmax block per row
  float d[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) d[nt][i] = 0.f;
  auto load_w = [&](int it, uint2& wa, uint2& wb, float& sa, float& sb) {
    const int k = it * 64 + t4 * 16;
    const int64_t fa = static_cast<int64_t>(r0) * K + k, fb = static_cast<int64_t>(r1) * K + k;
    wa = __ldg(reinterpret_cast<const uint2*>(packed + fa / 2));
    wb = __ldg(reinterpret_cast<const uint2*>(packed + fb / 2));
    sa = __ldg(absmax + fa / blocksize);
    sb = __ldg(absmax + fb / blocksize);
  };
  uint2 wa, wb, wan, wbn;
  float sa, sb, san, sbn;
  int it = warp;
  if (it < iters) load_w(it, wa, wb, sa, sb);
  for (; it < iters; it += 8) {
    if (it + 8 < iters) load_w(it + 8, wan, wbn, san, sbn);
    const int k = it * 64 + t4 * 16;
    uint4 xv[NT][2];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int n = nt * 8 + g;
#pragma unroll
      for (int j = 0; j < 2; ++j)
        xv[nt][j] = n < B ? __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(n) * K + k + 8 * j))
                          : make_uint4(0u, 0u, 0u, 0u);
    }
    float c[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) c[nt][i] = 0.f;
    const uint32_t pa[2] = {wa.x, wa.y}, pb[2] = {wb.x, wb.y};
#pragma unroll
    for (int step = 0; step < 4; ++step) {  // bytes 2*step, 2*step+1 of each row's 8
      const int word = step / 2, shift = 16 * (step % 2);
      const uint32_t ba = pa[word] >> shift, bb = pb[word] >> shift;
      const uint32_t a[4] = {table[ba & 0xFFu][lane], table[bb & 0xFFu][lane], table[(ba >> 8) & 0xFFu][lane],
                             table[(bb >> 8) & 0xFFu][lane]};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint32_t* xw = reinterpret_cast<const uint32_t*>(&xv[nt][0]);
        Mma<T>::mma(c[nt], a, xw[2 * step], xw[2 * step + 1]);
      }
    }
    // the codes' sum for this absmax block, scaled in fp32: c[..][0..1] are row g, c[..][2..3] row g + 8
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      d[nt][0] = fmaf(sa, c[nt][0], d[nt][0]);
      d[nt][1] = fmaf(sa, c[nt][1], d[nt][1]);
      d[nt][2] = fmaf(sb, c[nt][2], d[nt][2]);
      d[nt][3] = fmaf(sb, c[nt][3], d[nt][3]);
    }
    wa = wan; wb = wbn; sa = san; sb = sbn;
  }
  // d[nt][0..1]: row g, batch columns nt*8 + 2*t4 + {0,1}; d[nt][2..3]: row g + 8, same columns.
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    red[warp][g][nt * 8 + 2 * t4] = d[nt][0];
    red[warp][g][nt * 8 + 2 * t4 + 1] = d[nt][1];
    red[warp][g + 8][nt * 8 + 2 * t4] = d[nt][2];
    red[warp][g + 8][nt * 8 + 2 * t4 + 1] = d[nt][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 16 * 8 * NT; i += blockDim.x) {
    const int row = i / (8 * NT), n = i % (8 * NT);
    const int out_row = blockIdx.x * 16 + row;
    if (n < B && out_row < N) {
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < 8; ++w) total += red[w][row][n];
      y[static_cast<int64_t>(n) * N + out_row] = from_float<T>(total);
    }
  }
}

// v8: bandwidth first, batch 1-4. v4 and v6 both stalled near 21.5 us at 8192x8192 (42% of the copy
// bandwidth) with different grids, which pointed at the decode, not at latency: one shared-memory table load
// per 4-bit code (LDS runs at one warp per clock per SM: 8 us for 8192x8192 on an H200 by itself) plus a
// shift, a mask and an fp32 FMA per weight, about five instructions per weight in all (~10 us of issue).
// Here a packed BYTE (two codes) is decoded by one PRMT and one LDS: a 256-entry table of code pairs as
// half2, one copy per lane (lane l reads word l of a 256-byte row: no bank conflicts) so that the address
// (byte << 8) | (lane << 2) is a single __byte_perm; the pair is multiplied with the two activations by one
// HFMA2 (fp16: chains of 8 products in half precision, then fp32; bf16: the pair is widened to fp32 and two
// fp32 FMAs follow, bf16's 8-bit mantissa being too short for half-precision chains). About 2 instructions
// per weight for fp16 (3 for bf16). The absmax stays fp32 and is applied once per 32 weights.
// Work: one warp owns R consecutive rows (each activation load serves R rows), its lanes stride over K in
// 16-byte steps (32 weights, one absmax); a warp's (unit, chunk-of-U-steps) items are software-pipelined:
// the next item's weights and absmaxes are in flight while the current one is decoded. The grid is one
// balanced wave: every warp gets the same number of R-row units, and all warps are resident at once
// (the 64 KB table limits a 256-thread block to 3 per SM), so the table is built once per block, after the
// first loads are issued. LD selects the weight load: 0 __ldg, 1 ld.global.nc.L1::no_allocate (weights
// bypass L1, which keeps the activations), 2 __ldcs (evict-first), 3 as 1 with an L2 256-byte prefetch hint.
constexpr int V8_THREADS = 256;
constexpr int V8_LUT_BYTES = 256 * 256;

template <int LD>
__device__ __forceinline__ uint4 v8_load(const uint8_t* p) {
  uint4 v;
  if (LD == 1) {
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  } else if (LD == 2) {
    v = __ldcs(reinterpret_cast<const uint4*>(p));
  } else if (LD == 3) {
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  } else {
    v = __ldg(reinterpret_cast<const uint4*>(p));
  }
  return v;
}

// 32 weights (16 packed bytes) times B activation rows: part[b] = sum code[q_i] * x[b][i], absmax not applied.
template <typename T, int B>
__device__ __forceinline__ void v8_dot(const uint4& wv, const uint4 (&xv)[B][4], const char* lut, uint32_t lane4,
                                       float (&part)[B]) {
#pragma unroll
  for (int b = 0; b < B; ++b) part[b] = 0.f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    __half2 h[B];
#pragma unroll
    for (int b = 0; b < B; ++b) h[b] = __float2half2_rn(0.f);
#pragma unroll
    for (int wi = 0; wi < 2; ++wi) {
      const int word = 2 * half + wi;
      const uint32_t pw = reinterpret_cast<const uint32_t*>(&wv)[word];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t addr = __byte_perm(pw, lane4, 0x6504u | (j << 4));  // (byte j << 8) | (lane << 2)
        const uint32_t pair = *reinterpret_cast<const uint32_t*>(lut + addr);
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const uint32_t xw = reinterpret_cast<const uint32_t*>(&xv[b][word])[j];
          if constexpr (std::is_same<T, __half>::value) {
            h[b] = __hfma2(*reinterpret_cast<const __half2*>(&pair), *reinterpret_cast<const __half2*>(&xw), h[b]);
          } else {
            const float2 wf = __half22float2(*reinterpret_cast<const __half2*>(&pair));
            const float2 xf = to_float2(xw, static_cast<const T*>(nullptr));
            part[b] = fmaf(wf.x, xf.x, part[b]);
            part[b] = fmaf(wf.y, xf.y, part[b]);
          }
        }
      }
    }
    if constexpr (std::is_same<T, __half>::value) {
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const float2 f = __half22float2(h[b]);
        part[b] += f.x + f.y;
      }
    }
  }
}

// The 256 x 32 table of code pairs (row b, word l: half2(code[b >> 4], code[b & 15])); threads 0..255 write one
// row each, 8 16-byte stores rotated so that the 8 lanes of a quarter-warp hit 8 different columns.
__device__ __forceinline__ void v8_build_table(uint4* lut) {
  const int b = threadIdx.x;
  if (b >= 256) return;
  __half2 h = __floats2half2_rn(c_nf4_code[b >> 4], c_nf4_code[b & 15]);  // fp16 codes for both dtypes
  const uint32_t v = *reinterpret_cast<uint32_t*>(&h);
  const uint4 v4 = make_uint4(v, v, v, v);
#pragma unroll
  for (int c = 0; c < 8; ++c) lut[b * 16 + ((c + b) & 7)] = v4;
}

// Two launch-side options, measured by benchmarks/kernels.py --sweep (results file): XPF loads an item's
// activations together with its weights, one item ahead, instead of right before the decode (the activation
// loads are L1 hits, but their latency was exposed once per item); PDL is programmatic dependent launch
// (sm_90+, with the launch attribute set by launch_v8): the kernel lets the next kernel in the stream start
// at once and waits for the previous one only where it must (griddepcontrol.wait), so that the launch, the
// table build and, with PDL = 2, the first weight loads overlap the previous kernel's tail. PDL = 1 waits
// before any global read (always correct); PDL = 2 reads the first weights before the wait, which is correct
// only when the previous kernel does not write the weights (inference with fixed weights).
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// The activations of step s (32 values of K, as four 16-byte words) for each of the B batch rows.
template <typename T, int B>
__device__ __forceinline__ void v8_load_x(const T* __restrict__ x, int K, int s, uint4 (&xv)[B][4]) {
#pragma unroll
  for (int b = 0; b < B; ++b)
#pragma unroll
    for (int word = 0; word < 4; ++word)
      xv[b][word] = __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(b) * K + 32 * s + 8 * word));
}

// MINB is __launch_bounds__' minimum blocks per SM. 0 emits nothing, and ptxas then keeps registers low (R4 U1:
// 80). 1 lets ptxas spend registers freely (R4 U1: 124, for a longer schedule of loads). 2-3 force 2-3 blocks per
// SM into the register file (R4 U1 with x prefetched: 80 registers, which spills).
template <typename T, int B, int R, int U, int LD, bool XPF = false, int PDL = 0, int MINB = 0>
__global__ void __launch_bounds__(V8_THREADS, MINB) gemv_nf4_v8_kernel(const T* __restrict__ x,
                                                                  const uint8_t* __restrict__ packed,
                                                                  const float* __restrict__ absmax, T* __restrict__ y,
                                                                  int N, int K, int blocksize, int bs_shift,
                                                                  int units_per_warp) {
  extern __shared__ uint4 v8_lut[];  // 256 rows of 256 bytes; row b, word l: half2(code[b >> 4], code[b & 15])
  if constexpr (PDL > 0) pdl_launch_dependents();
  const int lane = threadIdx.x % WARP;
  const int warp_id = blockIdx.x * (V8_THREADS / WARP) + threadIdx.x / WARP;
  const int units = (N + R - 1) / R;
  const int unit0 = warp_id * units_per_warp;
  const int my_units = max(0, min(units_per_warp, units - unit0));
  const int steps = K / 32;                      // 16-byte steps per row
  const int chunks = (steps + WARP * U - 1) / (WARP * U);
  const int items = my_units * chunks;
  const int bs32 = blocksize / 32;               // steps per absmax block
  constexpr int XU = XPF ? U : 1;                // activation buffers per item (unused without XPF)

  uint4 wA[R][U], wB[R][U];
  float aA[R][U], aB[R][U];
  uint4 xA[XU][B][4], xB[XU][B][4];
  int ld_unit = unit0, ld_chunk = 0;
  auto load_x = [&](uint4 (&xd)[XU][B][4], int chunk) {
#pragma unroll
    for (int u = 0; u < XU; ++u) {
      v8_load_x<T, B>(x, K, min(lane + WARP * (chunk * U + u), steps - 1), xd[u]);
    }
  };
  auto load = [&](uint4 (&wd)[R][U], float (&ad)[R][U], uint4 (&xd)[XU][B][4], bool with_x) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int row = min(ld_unit * R + r, N - 1);
      const uint8_t* prow = packed + static_cast<int64_t>(row) * (K / 2);
      const int64_t arow = static_cast<int64_t>(row) * steps;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int s = lane + WARP * (ld_chunk * U + u);
        if (s < steps) {
          wd[r][u] = v8_load<LD>(prow + 16 * s);
          const int64_t blk = bs_shift >= 0 ? (arow + s) >> bs_shift : (arow + s) / bs32;
          ad[r][u] = __ldg(absmax + blk);
        } else {
          wd[r][u] = make_uint4(0u, 0u, 0u, 0u);
          ad[r][u] = 0.f;
        }
      }
    }
    if constexpr (XPF) {
      if (with_x) load_x(xd, ld_chunk);
    }
    if (++ld_chunk == chunks) { ld_chunk = 0; ++ld_unit; }
  };
  // Without PDL (or with PDL = 2) the first weights are in flight while the table is built.
  if constexpr (PDL != 1) {
    if (items > 0) load(wA, aA, xA, PDL == 0);
  }
  v8_build_table(v8_lut);
  if constexpr (PDL > 0) pdl_wait();  // the previous kernel's writes (x, y, and with PDL = 1 the weights) are visible
  if constexpr (PDL == 1) {
    if (items > 0) load(wA, aA, xA, true);
  }
  if constexpr (PDL == 2 && XPF) {
    if (items > 0) load_x(xA, 0);
  }
  __syncthreads();
  const char* lut = reinterpret_cast<const char*>(v8_lut);
  const uint32_t lane4 = static_cast<uint32_t>(lane) << 2;

  float acc[R][B];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = 0.f;
  int cp_unit = unit0, cp_chunk = 0;
  auto compute = [&](const uint4 (&wd)[R][U], const float (&ad)[R][U], const uint4 (&xd)[XU][B][4]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int s = lane + WARP * (cp_chunk * U + u);
      if (s < steps) {
        uint4 xv[B][4];
        if constexpr (XPF) {
#pragma unroll
          for (int b = 0; b < B; ++b)
#pragma unroll
            for (int word = 0; word < 4; ++word) xv[b][word] = xd[u][b][word];
        } else {
          v8_load_x<T, B>(x, K, s, xv);
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float part[B];
          v8_dot<T, B>(wd[r][u], xv, lut, lane4, part);
#pragma unroll
          for (int b = 0; b < B; ++b) acc[r][b] = fmaf(ad[r][u], part[b], acc[r][b]);
        }
      }
    }
    if (++cp_chunk == chunks) {
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const float total = warp_sum(acc[r][b]);
          acc[r][b] = 0.f;
          const int row = cp_unit * R + r;
          if (lane == 0 && row < N) y[static_cast<int64_t>(b) * N + row] = from_float<T>(total);
        }
      cp_chunk = 0;
      ++cp_unit;
    }
  };
  for (int it = 0; it < items; it += 2) {
    if (it + 1 < items) load(wB, aB, xB, true);
    compute(wA, aA, xA);
    if (it + 1 >= items) break;
    if (it + 2 < items) load(wA, aA, xA, true);
    compute(wB, aB, xB);
  }
}

// v8 "bulk": the same decode, fed by the copy engine. The register-fed v8 above reached only ~2.4 TB/s of
// incremental bandwidth (ncu: 41% of DRAM peak, issue slots 32% busy, 4 warps per scheduler waiting on their
// loads). Here each block (one per SM, 16 warps) streams tiles of 8 rows (8 x K/2 bytes of codes and, when
// K % blocksize == 0, the tile's absmaxes) into a ring of 2-4 shared-memory stages with cp.async.bulk
// completing on an mbarrier, so that up to 3 tiles (~100 KB per SM for K = 8192) are in flight in large
// contiguous pieces without holding registers. A warp owns 4 rows of the tile (one activation load serves
// them) and every 8th 32-step block of K; it reads the codes from shared memory and decodes them as above;
// one __syncthreads per tile frees its stage and publishes the partial sums.
constexpr int V8B_THREADS = 512;
constexpr int V8B_ROWS = 8;

__device__ __forceinline__ uint32_t v8_smem(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void v8_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  }
}

template <typename T, int B>
__global__ void __launch_bounds__(V8B_THREADS, 1) gemv_nf4_v8_bulk_kernel(const T* __restrict__ x,
                                                                          const uint8_t* __restrict__ packed,
                                                                          const float* __restrict__ absmax,
                                                                          T* __restrict__ y, int N, int K,
                                                                          int blocksize, int bs_shift, int stages,
                                                                          int stage_bytes) {
  extern __shared__ uint4 v8_lut[];
  char* stage0 = reinterpret_cast<char*>(v8_lut) + V8_LUT_BYTES;
  uint64_t* bars = reinterpret_cast<uint64_t*>(stage0 + static_cast<int64_t>(stages) * stage_bytes);
  float* red = reinterpret_cast<float*>(bars + 4);  // [2][16 warps][4 rows][B]
  const int tiles = (N + V8B_ROWS - 1) / V8B_ROWS;
  const int my_tiles = tiles > static_cast<int>(blockIdx.x) ? (tiles - 1 - blockIdx.x) / gridDim.x + 1 : 0;
  const int row_bytes = K / 2, steps = K / 32, bs32 = blocksize / 32;
  const bool am_rows = K % blocksize == 0;  // a row's absmaxes are its own: they travel with the tile
  const int am_per_row = am_rows ? K / blocksize : 0;
  auto tile_am_bytes = [&](int rows) {
    const int bytes = rows * am_per_row * 4;
    return bytes % 16 == 0 ? bytes : 0;  // 0: read the absmaxes from global memory for this tile
  };
  auto issue = [&](int it) {  // thread 0
    const int r0 = (blockIdx.x + it * gridDim.x) * V8B_ROWS;
    const int rows = min(V8B_ROWS, N - r0);
    const uint32_t wbytes = rows * row_bytes, abytes = tile_am_bytes(rows);
    char* st = stage0 + static_cast<int64_t>(it % stages) * stage_bytes;
    const uint32_t bar = v8_smem(bars + it % stages);
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(bar), "r"(wbytes + abytes) : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                 :: "r"(v8_smem(st)), "l"(packed + static_cast<int64_t>(r0) * row_bytes), "r"(wbytes), "r"(bar)
                 : "memory");
    if (abytes)
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                   :: "r"(v8_smem(st + V8B_ROWS * row_bytes)), "l"(absmax + static_cast<int64_t>(r0) * am_per_row),
                      "r"(abytes), "r"(bar)
                   : "memory");
  };
  if (threadIdx.x == 0) {
    for (int i = 0; i < stages; ++i)
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" :: "r"(v8_smem(bars + i)) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    for (int it = 0; it < min(stages, my_tiles); ++it) issue(it);
  }
  v8_build_table(v8_lut);
  __syncthreads();
  const char* lut = reinterpret_cast<const char*>(v8_lut);
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
  const uint32_t lane4 = static_cast<uint32_t>(lane) << 2;
  const int g = warp / 8, kp = warp % 8;  // rows 4g..4g+3 of the tile; 32-step blocks kp, kp + 8, ... of K
  for (int it = 0; it < my_tiles; ++it) {
    v8_wait(v8_smem(bars + it % stages), (it / stages) & 1);
    const int r0 = (blockIdx.x + it * gridDim.x) * V8B_ROWS;
    const int rows = min(V8B_ROWS, N - r0);
    const bool am_smem = tile_am_bytes(rows) > 0;
    const char* st = stage0 + static_cast<int64_t>(it % stages) * stage_bytes;
    const float* am_st = reinterpret_cast<const float*>(st + V8B_ROWS * row_bytes);
    float acc[4][B];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) acc[r][b] = 0.f;
    if (4 * g < rows) {
      for (int s = lane + WARP * kp; s < steps; s += 8 * WARP) {
        uint4 xv[B][4];  // one activation load serves the warp's 4 rows
        v8_load_x<T, B>(x, K, s, xv);
        const int sb = bs_shift >= 0 ? s >> bs_shift : s / bs32;
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int jr = 4 * g + r;
          if (jr < rows) {
            const uint4 wv = *reinterpret_cast<const uint4*>(st + jr * row_bytes + 16 * s);
            const int64_t flat = static_cast<int64_t>(r0 + jr) * steps + s;
            const float am = am_smem ? am_st[jr * am_per_row + sb]
                                     : __ldg(absmax + (bs_shift >= 0 ? flat >> bs_shift : flat / bs32));
            float part[B];
            v8_dot<T, B>(wv, xv, lut, lane4, part);
#pragma unroll
            for (int b = 0; b < B; ++b) acc[r][b] = fmaf(am, part[b], acc[r][b]);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const float v = warp_sum(acc[r][b]);
        if (lane == 0) red[((it & 1) * (V8B_THREADS / WARP) + warp) * 4 * B + r * B + b] = v;
      }
    __syncthreads();  // the stage is free, the partial sums are visible
    if (static_cast<int>(threadIdx.x) < V8B_ROWS * B) {
      const int jj = threadIdx.x / B, b = threadIdx.x % B;
      if (jj < rows) {
        const float* rp = red + ((it & 1) * (V8B_THREADS / WARP) + (jj / 4) * 8) * 4 * B + (jj % 4) * B + b;
        float total = 0.f;
#pragma unroll
        for (int k8 = 0; k8 < 8; ++k8) total += rp[k8 * 4 * B];
        y[static_cast<int64_t>(b) * N + r0 + jj] = from_float<T>(total);
      }
    }
    if (threadIdx.x == 0 && it + stages < my_tiles) issue(it + stages);
  }
}

// ------------------------------------------------------------------------------------------------
// 4. ternary GEMV: additions and subtractions only, with v4's block structure (a block's threads split
// K for ROWS rows). A thread owns 64 weights (16 packed bytes) per row and step.
template <typename T, int B, int ROWS>
__global__ void __launch_bounds__(256) gemv_ternary_kernel(const T* __restrict__ x, const uint8_t* __restrict__ packed,
                                                           float scale, T* __restrict__ y, int N, int K) {
  __shared__ float partial[256 / WARP][ROWS * B];
  const int row0 = blockIdx.x * ROWS;
  const int steps = K / 64;
  float acc[ROWS][B];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = 0.f;
  for (int s = threadIdx.x; s < steps; s += blockDim.x) {
    const int k0 = s * 64;
    uint4 w[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const int row = min(row0 + r, N - 1);
      w[r] = __ldg(reinterpret_cast<const uint4*>(packed + (static_cast<int64_t>(row) * K + k0) / 4));
    }
#pragma unroll
    for (int word = 0; word < 4; ++word) {  // 16 weights per 32-bit word
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // 8 weights = one 16-byte activation load
#pragma unroll
        for (int b = 0; b < B; ++b) {
          const uint4 xr = __ldg(reinterpret_cast<const uint4*>(x + static_cast<int64_t>(b) * K + k0 + 16 * word + 8 * half));
          const uint32_t* xw = reinterpret_cast<const uint32_t*>(&xr);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 xf = to_float2(xw[j], static_cast<const T*>(nullptr));
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
              const uint32_t pw = reinterpret_cast<const uint32_t*>(&w[r])[word];
              const int e = 8 * half + 2 * j;  // element index within the word (0..15)
              const uint32_t c0 = (pw >> (2 * e)) & 3u, c1 = (pw >> (2 * e + 2)) & 3u;
              // code 2 -> +x, code 0 -> -x, code 1 -> nothing: selects and adds, no multiplies
              float a = acc[r][b];
              a += (c0 == 2u) ? xf.x : 0.f;
              a -= (c0 == 0u) ? xf.x : 0.f;
              a += (c1 == 2u) ? xf.y : 0.f;
              a -= (c1 == 0u) ? xf.y : 0.f;
              acc[r][b] = a;
            }
          }
        }
      }
    }
  }
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int b = 0; b < B; ++b) {
      const float v = warp_sum(acc[r][b]);
      if (lane == 0) partial[warp][r * B + b] = v;
    }
  __syncthreads();
  if (threadIdx.x < ROWS * B) {
    const int r = threadIdx.x / B, b = threadIdx.x % B;
    float total = 0.f;
    for (int w = 0; w < static_cast<int>(blockDim.x) / WARP; ++w) total += partial[w][threadIdx.x];
    if (row0 + r < N) y[static_cast<int64_t>(b) * N + row0 + r] = from_float<T>(total * scale);
  }
}

// ------------------------------------------------------------------------------------------------
// host side
void check_cuda(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

int grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535LL * 8));
}

// The 16 NF4 values live in constant memory, uploaded once per device (an upload is a synchronous
// copy, which would also break CUDA-graph capture if it happened on every call).
void upload_code(const torch::Tensor& code) {
  static bool uploaded[64] = {false};
  const int dev = c10::cuda::current_device();
  TORCH_CHECK(code.numel() == 16 && code.scalar_type() == torch::kFloat32, "code must be 16 float32 values");
  if (dev < 64 && uploaded[dev]) return;
  auto cpu = code.to(torch::kCPU).contiguous();
  C10_CUDA_CHECK(cudaMemcpyToSymbol(c_nf4_code, cpu.data_ptr<float>(), 16 * sizeof(float)));
  if (dev < 64) uploaded[dev] = true;
}

#define DISPATCH_HALF_TYPES(dtype, NAME, ...)                                                  \
  [&] {                                                                                        \
    if (dtype == torch::kFloat16) { using scalar_t = __half; return __VA_ARGS__(); }           \
    if (dtype == torch::kBFloat16) { using scalar_t = __nv_bfloat16; return __VA_ARGS__(); }   \
    TORCH_CHECK(false, NAME, ": activations must be float16 or bfloat16");                     \
  }()

#define DISPATCH_ALL_TYPES(dtype, NAME, ...)                                                   \
  [&] {                                                                                        \
    if (dtype == torch::kFloat32) { using scalar_t = float; return __VA_ARGS__(); }            \
    if (dtype == torch::kFloat16) { using scalar_t = __half; return __VA_ARGS__(); }           \
    if (dtype == torch::kBFloat16) { using scalar_t = __nv_bfloat16; return __VA_ARGS__(); }   \
    TORCH_CHECK(false, NAME, ": dtype must be float32, float16 or bfloat16");                  \
  }()

std::vector<torch::Tensor> quantize_rows_int8(torch::Tensor x) {
  check_cuda(x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be 2-D");
  const c10::cuda::CUDAGuard guard(x.device());
  const int M = x.size(0), K = x.size(1);
  auto q = torch::empty({M, K}, x.options().dtype(torch::kInt8));
  auto absmax = torch::empty({M}, x.options().dtype(torch::kFloat32));
  if (M == 0) return {q, absmax};
  auto stream = c10::cuda::getCurrentCUDAStream();
  DISPATCH_ALL_TYPES(x.scalar_type(), "quantize_rows_int8", [&] {
    quantize_rows_int8_kernel<scalar_t, 256><<<M, 256, 0, stream>>>(
        reinterpret_cast<const scalar_t*>(x.data_ptr()), q.data_ptr<int8_t>(), absmax.data_ptr<float>(), K);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {q, absmax};
}

torch::Tensor dequantize_nf4(torch::Tensor packed, torch::Tensor absmax, int64_t n, int64_t blocksize,
                             torch::Tensor code, at::ScalarType dtype) {
  check_cuda(packed, "packed");
  check_cuda(absmax, "absmax");
  const c10::cuda::CUDAGuard guard(packed.device());
  upload_code(code);
  auto out = torch::empty({n}, packed.options().dtype(dtype));
  auto stream = c10::cuda::getCurrentCUDAStream();
  const bool vec = n % 32 == 0 && blocksize % 32 == 0;
  DISPATCH_ALL_TYPES(dtype, "dequantize_nf4", [&] {
    if (vec) {
      dequantize_nf4_vec_kernel<scalar_t><<<grid_for(n / 32, 256), 256, 0, stream>>>(
          packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(), reinterpret_cast<scalar_t*>(out.data_ptr()), n,
          static_cast<int>(blocksize));
      return;
    }
    dequantize_nf4_kernel<scalar_t><<<grid_for((n + 1) / 2, 256), 256, 0, stream>>>(
        packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(), reinterpret_cast<scalar_t*>(out.data_ptr()), n,
        static_cast<int>(blocksize));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

torch::Tensor dequantize_int4(torch::Tensor packed, torch::Tensor scale, torch::Tensor zero, int64_t group,
                              at::ScalarType dtype) {
  check_cuda(packed, "packed");
  check_cuda(scale, "scale");
  check_cuda(zero, "zero");
  const c10::cuda::CUDAGuard guard(packed.device());
  const int64_t N = packed.size(0), K = packed.size(1) * 2;
  auto out = torch::empty({N, K}, packed.options().dtype(dtype));
  auto stream = c10::cuda::getCurrentCUDAStream();
  DISPATCH_ALL_TYPES(dtype, "dequantize_int4", [&] {
    dequantize_int4_kernel<scalar_t><<<grid_for(N * K / 2, 256), 256, 0, stream>>>(
        packed.data_ptr<uint8_t>(), scale.data_ptr<float>(), zero.data_ptr<uint8_t>(),
        reinterpret_cast<scalar_t*>(out.data_ptr()), N, static_cast<int>(K), static_cast<int>(group));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// Batch sizes with a compiled kernel; other sizes are padded with zero rows up to the next one.
int padded_batch(int B) {
  for (int c : {1, 2, 3, 4, 8, 16}) if (B <= c) return c;
  return 16;
}

// Runs `launch(x_chunk, y_chunk, B_template)` on chunks of at most 16 rows, padding each chunk.
template <typename F>
torch::Tensor batched(const torch::Tensor& x, int64_t N, F launch) {
  const int B = x.size(0);
  auto y = torch::empty({B, N}, x.options());
  for (int b0 = 0; b0 < B; b0 += 16) {
    const int nb = std::min(16, B - b0);
    const int padded = padded_batch(nb);
    torch::Tensor xc = x.narrow(0, b0, nb);
    if (padded != nb) {
      auto xp = torch::zeros({padded, x.size(1)}, x.options());
      xp.narrow(0, 0, nb).copy_(xc);
      xc = xp;
    }
    auto yc = (padded == nb && B <= 16) ? y : torch::empty({padded, N}, x.options());
    launch(xc, yc, padded);
    if (!(padded == nb && B <= 16)) y.narrow(0, b0, nb).copy_(yc.narrow(0, 0, nb));
  }
  return y;
}

#define SWITCH_BATCH(PB, LAUNCH)                 \
  switch (PB) {                                  \
    case 1: LAUNCH(1, 4); break;                 \
    case 2: LAUNCH(2, 4); break;                 \
    case 3: LAUNCH(3, 2); break;                 \
    case 4: LAUNCH(4, 2); break;                 \
    case 8: LAUNCH(8, 2); break;                 \
    default: LAUNCH(16, 1); break;               \
  }

// Kernel launches by (batch, rows per warp); they use the variables of the calling scope.
#define LAUNCH_NF4(BB, RR)                                                                               \
  gemv_nf4_fused_kernel<scalar_t, BB, RR><<<grid_for((N + RR - 1) / RR * WARP, 256), 256, 0, stream>>>( \
      xp, packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(), yp, N, K, blocksize)
// v4: one block per RR rows; threads = the number of 32-weight steps of a row, rounded up to a warp, at most 256.
#define LAUNCH_V4(BB, RR, IS_NF4, SCALE, ZERO, GROUP)                                                       \
  gemv_4bit_v4_kernel<scalar_t, BB, RR, IS_NF4>                                                            \
      <<<static_cast<int>((N + RR - 1) / RR), std::min(256, (K / 32 + WARP - 1) / WARP * WARP), 0, stream>>>( \
          xp, packed.data_ptr<uint8_t>(), SCALE, ZERO, yp, N, K, GROUP)
// v6: one wave of blocks (as many as the occupancy calculator says fit), each of K / 32 threads
// rounded up to a warp.
template <typename Kernel>
int one_wave(Kernel kernel, int threads, int chunks) {
  static int sms = 0;
  if (sms == 0) C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  return std::max(1, std::min(chunks, sms * std::max(per_sm, 1)));
}
#define LAUNCH_V6(BB, RR, IS_NF4, SCALE, ZERO, GROUP)                                                       \
  do {                                                                                                     \
    auto kern = gemv_4bit_v6_kernel<scalar_t, BB, RR, IS_NF4>;                                             \
    const int threads = (K / 32 + WARP - 1) / WARP * WARP;                                                 \
    kern<<<one_wave(kern, threads, static_cast<int>((N + RR - 1) / RR)), threads, 0, stream>>>(            \
        xp, packed.data_ptr<uint8_t>(), SCALE, ZERO, yp, N, K, GROUP);                                     \
  } while (0)
#define LAUNCH_T(BB, RR)                                                                                     \
  gemv_ternary_kernel<scalar_t, BB, RR>                                                                    \
      <<<static_cast<int>((N + RR - 1) / RR), std::min(256, (K / 64 + WARP - 1) / WARP * WARP), 0, stream>>>( \
          xp, packed.data_ptr<uint8_t>(), static_cast<float>(scale), yp, N, K)

// v8 launch: one balanced wave of 256-thread blocks (see the kernel). Returns false when a block cannot get
// the 64 KB table on this GPU; the caller then runs v4.
template <typename T, int B, int R, int U, int LD, bool XPF = false, int PDL = 0, int MINB = 0>
bool launch_v8(const T* x, const uint8_t* packed, const float* absmax, T* y, int N, int K, int blocksize,
               cudaStream_t stream) {
  auto kern = gemv_nf4_v8_kernel<T, B, R, U, LD, XPF, PDL, MINB>;
  static int per_sm[64] = {0};  // blocks per SM for each device; 0: not asked yet, -1: the table does not fit
  static int sm_count[64] = {0};
  static int major[64] = {0};
  const int dev = std::min(c10::cuda::current_device(), static_cast<c10::DeviceIndex>(63));
  if (per_sm[dev] == 0) {
    int occ = 0;
    if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, V8_LUT_BYTES) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, V8_THREADS, V8_LUT_BYTES) != cudaSuccess ||
        occ < 1) {
      (void)cudaGetLastError();
      occ = -1;
    }
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count[dev], cudaDevAttrMultiProcessorCount, dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major[dev], cudaDevAttrComputeCapabilityMajor, dev));
    per_sm[dev] = occ;
  }
  if (per_sm[dev] < 0) return false;
  const int bs32 = blocksize / 32;
  const int shift = (bs32 & (bs32 - 1)) == 0 ? __builtin_ctz(bs32) : -1;
  const int units = (N + R - 1) / R;
  const int max_warps = sm_count[dev] * per_sm[dev] * (V8_THREADS / WARP);
  const int upw = (units + max_warps - 1) / max_warps;   // units per warp, the same for every warp
  const int warps = (units + upw - 1) / upw;
  const int blocks = (warps + V8_THREADS / WARP - 1) / (V8_THREADS / WARP);
  if (PDL > 0 && major[dev] >= 9) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(V8_THREADS);
    cfg.dynamicSmemBytes = V8_LUT_BYTES;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    C10_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kern, x, packed, absmax, y, N, K, blocksize, shift, upw));
  } else {
    kern<<<blocks, V8_THREADS, V8_LUT_BYTES, stream>>>(x, packed, absmax, y, N, K, blocksize, shift, upw);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// v8 bulk launch: one block per SM with as many stages (2-4) as shared memory allows; false when even two
// stages of 8 rows do not fit (K above ~20000 on an H200) or the pointers are not 16-byte aligned.
template <typename T, int B>
bool launch_v8_bulk(const T* x, const uint8_t* packed, const float* absmax, T* y, int N, int K, int blocksize,
                    cudaStream_t stream, int max_stages = 4) {
  auto kern = gemv_nf4_v8_bulk_kernel<T, B>;
  static int optin[64] = {0};  // 0: not asked yet, -1: unavailable
  static int sm_count[64] = {0};
  const int dev = std::min(c10::cuda::current_device(), static_cast<c10::DeviceIndex>(63));
  if (optin[dev] == 0) {
    int bytes = 0, major = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count[dev], cudaDevAttrMultiProcessorCount, dev));
    if (major < 9 || cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      bytes = -1;
    }
    optin[dev] = bytes;
  }
  if (optin[dev] < 0) return false;
  if (reinterpret_cast<uintptr_t>(packed) % 16 || reinterpret_cast<uintptr_t>(absmax) % 16) return false;
  const int am_bytes = K % blocksize == 0 ? V8B_ROWS * (K / blocksize) * 4 : 0;
  const int stage_bytes = (V8B_ROWS * (K / 2) + am_bytes + 15) / 16 * 16;
  const int tail = 4 * 8 + 2 * (V8B_THREADS / WARP) * 4 * B * 4;  // mbarriers, partial sums
  const int stages = std::min(max_stages, (optin[dev] - V8_LUT_BYTES - tail) / stage_bytes);
  if (stages < 2) return false;
  const int bs32 = blocksize / 32;
  const int shift = (bs32 & (bs32 - 1)) == 0 ? __builtin_ctz(bs32) : -1;
  const int tiles = (N + V8B_ROWS - 1) / V8B_ROWS;
  const size_t smem = V8_LUT_BYTES + static_cast<size_t>(stages) * stage_bytes + tail;
  kern<<<std::min(tiles, sm_count[dev]), V8B_THREADS, smem, stream>>>(x, packed, absmax, y, N, K, blocksize, shift,
                                                                      stages, stage_bytes);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// v8's dispatch: the register-fed kernel with the rows per warp (R) and steps per item (U) that the sweep in
// benchmarks/kernels.py --sweep measured fastest on the H200 (benchmarks/results/kernels_h200.md): more rows
// per warp for tall matrices (each activation load serves more rows), fewer where N is small so that a wave
// still has ~2000 warps. The bulk-copy kernel measured slower everywhere (same file) and is reached only
// through gemv_nf4_v8_variant. bf16 keeps fewer registers (its fp32 widening needs more: R4 U2 would take
// 147 registers, one block per SM).
//
// early_weights is v9: at batch 1 in fp16 with 6144 <= N < 12288, where the sweep measured it faster both back
// to back and after a kernel that writes x (8192x8192: 15.4 us against v8's 16.5, and 15.2 against 15.4), v8 R4 U1
// with the activations prefetched and programmatic dependent launch with the first weights read before
// griddepcontrol.wait. Only the caller knows that the kernel before it in the stream does not write the
// weights, so the default never picks it; elsewhere v9 runs v8.
template <typename T>
bool gemv_nf4_v8(const T* x, const uint8_t* packed, const float* absmax, T* y, int B, int N, int K, int bs,
                 cudaStream_t st, bool early_weights = false) {
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

// Benchmark only (benchmarks/kernels.py --sweep): v8 at batch 1, fp16, in other configurations.
torch::Tensor gemv_nf4_v8_variant(torch::Tensor x, torch::Tensor packed, torch::Tensor absmax, int64_t N,
                                  int64_t blocksize, torch::Tensor code, int64_t variant) {
  check_cuda(x, "x");
  check_cuda(packed, "packed");
  check_cuda(absmax, "absmax");
  TORCH_CHECK(x.size(0) == 1 && x.scalar_type() == torch::kFloat16, "the v8 sweep runs batch 1, float16");
  const c10::cuda::CUDAGuard guard(x.device());
  upload_code(code);
  const int K = x.size(1);
  TORCH_CHECK(K % 32 == 0 && blocksize % 32 == 0, "v8 needs K % 32 == 0 and blocksize % 32 == 0");
  auto y = torch::empty({1, N}, x.options());
  auto st = c10::cuda::getCurrentCUDAStream();
  const auto* xp = reinterpret_cast<const __half*>(x.data_ptr());
  auto* yp = reinterpret_cast<__half*>(y.data_ptr());
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const float* a = absmax.data_ptr<float>();
  const int n = static_cast<int>(N), bs = static_cast<int>(blocksize);
  bool ok = false;
  switch (variant) {
    case 0: ok = launch_v8<__half, 1, 4, 1, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 1: ok = launch_v8<__half, 1, 4, 1, 0>(xp, p, a, yp, n, K, bs, st); break;
    case 2: ok = launch_v8<__half, 1, 4, 1, 2>(xp, p, a, yp, n, K, bs, st); break;
    case 3: ok = launch_v8<__half, 1, 4, 1, 3>(xp, p, a, yp, n, K, bs, st); break;
    case 4: ok = launch_v8<__half, 1, 4, 2, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 5: ok = launch_v8<__half, 1, 2, 1, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 6: ok = launch_v8<__half, 1, 2, 2, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 7: ok = launch_v8<__half, 1, 8, 1, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 8: ok = launch_v8<__half, 1, 2, 4, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 9: ok = launch_v8<__half, 1, 1, 4, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 10: ok = launch_v8_bulk<__half, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 11: ok = launch_v8_bulk<__half, 1>(xp, p, a, yp, n, K, bs, st, 2); break;  // more room for L1
    case 12: ok = launch_v8<__half, 1, 4, 1, 1, true>(xp, p, a, yp, n, K, bs, st); break;
    case 13: ok = launch_v8<__half, 1, 4, 2, 1, true>(xp, p, a, yp, n, K, bs, st); break;
    case 14: ok = launch_v8<__half, 1, 4, 2, 1, false, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 15: ok = launch_v8<__half, 1, 4, 2, 1, false, 2>(xp, p, a, yp, n, K, bs, st); break;
    case 16: ok = launch_v8<__half, 1, 4, 1, 1, true, 2>(xp, p, a, yp, n, K, bs, st); break;
    case 17: ok = launch_v8<__half, 1, 8, 1, 1, true>(xp, p, a, yp, n, K, bs, st); break;
    case 18: ok = launch_v8<__half, 1, 2, 1, 1, true>(xp, p, a, yp, n, K, bs, st); break;
    case 19: ok = launch_v8<__half, 1, 4, 1, 1, true, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 20: ok = launch_v8<__half, 1, 8, 1, 1, true, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 21: ok = launch_v8<__half, 1, 2, 1, 1, true, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 22: ok = launch_v8<__half, 1, 4, 1, 1, false, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 23: ok = launch_v8<__half, 1, 4, 1, 1, true, 2, 3>(xp, p, a, yp, n, K, bs, st); break;
    case 24: ok = launch_v8<__half, 1, 4, 1, 1, true, 0, 3>(xp, p, a, yp, n, K, bs, st); break;
    case 25: ok = launch_v8<__half, 1, 8, 1, 1, true, 2, 2>(xp, p, a, yp, n, K, bs, st); break;
    case 26: ok = launch_v8<__half, 1, 4, 1, 1, false, 1, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 27: ok = launch_v8<__half, 1, 4, 1, 1, false, 0, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 28: ok = launch_v8<__half, 1, 8, 1, 1, false, 1, 1>(xp, p, a, yp, n, K, bs, st); break;
    default: TORCH_CHECK(false, "variant must be 0..28");
  }
  TORCH_CHECK(ok, "v8 cannot run on this GPU (64 KB of shared memory per block)");
  return y;
}

// Benchmark only (benchmarks/kernels.py --floor): the read floor. Streams a byte buffer once with the loads
// v8 uses (16-byte ld.global.nc.L1::no_allocate, U of them in flight per thread, one resident wave) and does
// the least possible work on them (a 32-bit sum, one per block, so that the loads cannot be removed). Its time
// for the NF4 weights' bytes is what any kernel that must read them pays, launch and ramp included.
template <int U>
__global__ void __launch_bounds__(512) stream_read_kernel(const uint8_t* __restrict__ data, int64_t n16,
                                                          uint32_t* __restrict__ block_sums) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  uint32_t acc = 0;
  for (; i + (U - 1) * stride < n16; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = v8_load<1>(data + 16 * (i + u * stride));
#pragma unroll
    for (int u = 0; u < U; ++u) acc += v[u].x + v[u].y + v[u].z + v[u].w;
  }
  for (; i < n16; i += stride) {
    const uint4 v = v8_load<1>(data + 16 * i);
    acc += v.x + v.y + v.z + v.w;
  }
#pragma unroll
  for (int o = WARP / 2; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  __shared__ uint32_t warp_sums[512 / WARP];
  if (threadIdx.x % WARP == 0) warp_sums[threadIdx.x / WARP] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t total = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x / WARP); ++w) total += warp_sums[w];
    block_sums[blockIdx.x] = total;
  }
}

torch::Tensor stream_read(torch::Tensor data, int64_t unroll) {
  check_cuda(data, "data");
  TORCH_CHECK(data.scalar_type() == torch::kUInt8 && data.is_contiguous(), "data must be a contiguous uint8 tensor");
  TORCH_CHECK(data.numel() % 16 == 0 && reinterpret_cast<uintptr_t>(data.data_ptr()) % 16 == 0,
              "data must hold a multiple of 16 bytes, 16-byte aligned");
  const c10::cuda::CUDAGuard guard(data.device());
  int dev = data.get_device(), sms = 0, per_sm = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  auto kern = unroll == 8 ? stream_read_kernel<8> : unroll == 4 ? stream_read_kernel<4> : stream_read_kernel<1>;
  TORCH_CHECK(unroll == 1 || unroll == 4 || unroll == 8, "unroll must be 1, 4 or 8");
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, 512, 0));
  const int64_t n16 = data.numel() / 16;
  const int blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(sms * per_sm, (n16 + 511) / 512)));
  auto sums = torch::empty({blocks}, data.options().dtype(torch::kInt32));
  kern<<<blocks, 512, 0, c10::cuda::getCurrentCUDAStream()>>>(data.data_ptr<uint8_t>(), n16,
                                                              reinterpret_cast<uint32_t*>(sums.data_ptr<int32_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return sums;
}

torch::Tensor gemv_nf4(torch::Tensor x, torch::Tensor packed, torch::Tensor absmax, int64_t N, int64_t blocksize,
                       torch::Tensor code, int64_t version) {
  check_cuda(x, "x");
  check_cuda(packed, "packed");
  check_cuda(absmax, "absmax");
  const c10::cuda::CUDAGuard guard(x.device());
  upload_code(code);
  const int K = x.size(1);
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (version == 1) {
    const int B = x.size(0);
    auto y = torch::empty({B, N}, x.options());
    DISPATCH_HALF_TYPES(x.scalar_type(), "gemv_nf4", [&] {
      gemv_nf4_naive_kernel<scalar_t><<<grid_for(static_cast<int64_t>(B) * N, 256), 256, 0, stream>>>(
          reinterpret_cast<const scalar_t*>(x.data_ptr()), packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(),
          reinterpret_cast<scalar_t*>(y.data_ptr()), B, N, K, blocksize);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
  }
  const int B = x.size(0);
  if (version == 7 && K % 64 == 0 && blocksize % 64 == 0) {
    auto y = torch::empty({B, N}, x.options());
    DISPATCH_HALF_TYPES(x.scalar_type(), "gemv_nf4", [&] {
      for (int b0 = 0; b0 < B; b0 += 16) {
        const int nb = std::min(16, B - b0);
        const auto* xp = reinterpret_cast<const scalar_t*>(x.data_ptr()) + static_cast<int64_t>(b0) * K;
        auto* yp = reinterpret_cast<scalar_t*>(y.data_ptr()) + static_cast<int64_t>(b0) * N;
        const int grid = static_cast<int>((N + 15) / 16);
        if (nb <= 8)
          gemv_nf4_mma_kernel<scalar_t, 1><<<grid, 256, 0, stream>>>(xp, packed.data_ptr<uint8_t>(),
              absmax.data_ptr<float>(), yp, nb, N, K, static_cast<int>(blocksize));
        else
          gemv_nf4_mma_kernel<scalar_t, 2><<<grid, 256, 0, stream>>>(xp, packed.data_ptr<uint8_t>(),
              absmax.data_ptr<float>(), yp, nb, N, K, static_cast<int>(blocksize));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
    return y;
  }
  if ((version == 8 || version == 9) && B <= 4) {
    auto y = torch::empty({B, N}, x.options());
    bool ok = false;
    DISPATCH_HALF_TYPES(x.scalar_type(), "gemv_nf4", [&] {
      ok = gemv_nf4_v8<scalar_t>(reinterpret_cast<const scalar_t*>(x.data_ptr()), packed.data_ptr<uint8_t>(),
                                 absmax.data_ptr<float>(), reinterpret_cast<scalar_t*>(y.data_ptr()), B,
                                 static_cast<int>(N), K, static_cast<int>(blocksize), stream, version == 9);
    });
    if (ok) return y;
    version = 4;  // no room for the 64 KB table on this GPU
  }
  if (version >= 4 && B > 4) {
    // Above batch 4 the CUDA-core kernel loses to a tensor-core GEMM: dequantize once, then cuBLAS.
    auto w = dequantize_nf4(packed, absmax, N * K, blocksize, code, x.scalar_type()).view({N, K});
    return torch::matmul(x, w.t());
  }
  return batched(x, N, [&](const torch::Tensor& xc, torch::Tensor& yc, int pb) {
    DISPATCH_HALF_TYPES(x.scalar_type(), "gemv_nf4", [&] {
      const auto* xp = reinterpret_cast<const scalar_t*>(xc.data_ptr());
      auto* yp = reinterpret_cast<scalar_t*>(yc.data_ptr());
      const float* am = absmax.data_ptr<float>();
      const uint8_t* none = nullptr;
      const int bs = static_cast<int>(blocksize);
      if (version == 2) {
        TORCH_CHECK(pb == 1, "gemv_nf4 version 2 handles batch 1 only");
        LAUNCH_NF4(1, 1);
      } else if (version == 3) {
        SWITCH_BATCH(pb, LAUNCH_NF4)
      } else if (version == 6 && K / 32 <= 512) {
        switch (pb) {
          case 1: LAUNCH_V6(1, 4, true, am, none, bs); break;
          case 2: LAUNCH_V6(2, 4, true, am, none, bs); break;
          case 3: LAUNCH_V6(3, 1, true, am, none, bs); break;  // 2 rows spill at batch 3-4 (128 registers)
          default: LAUNCH_V6(4, 1, true, am, none, bs); break;
        }
      } else if (version == 5) {  // v4 with 8 rows per block: twice the loads in flight per thread
        switch (pb) {
          case 1: LAUNCH_V4(1, 8, true, am, none, bs); break;
          case 2: LAUNCH_V4(2, 8, true, am, none, bs); break;
          case 3: LAUNCH_V4(3, 4, true, am, none, bs); break;
          default: LAUNCH_V4(4, 4, true, am, none, bs); break;
        }
      } else {
        switch (pb) {
          case 1: LAUNCH_V4(1, 4, true, am, none, bs); break;
          case 2: LAUNCH_V4(2, 4, true, am, none, bs); break;
          case 3: LAUNCH_V4(3, 2, true, am, none, bs); break;
          default: LAUNCH_V4(4, 2, true, am, none, bs); break;
        }
      }
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

torch::Tensor gemv_int4(torch::Tensor x, torch::Tensor packed, torch::Tensor scale, torch::Tensor zero,
                        int64_t group, int64_t version) {
  check_cuda(x, "x");
  check_cuda(packed, "packed");
  check_cuda(scale, "scale");
  check_cuda(zero, "zero");
  const c10::cuda::CUDAGuard guard(x.device());
  const int K = x.size(1);
  const int N = packed.size(0);
  const int B = x.size(0);
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (B > 4) {
    auto w = dequantize_int4(packed, scale, zero, group, x.scalar_type());
    return torch::matmul(x, w.t());
  }
  return batched(x, N, [&](const torch::Tensor& xc, torch::Tensor& yc, int pb) {
    DISPATCH_HALF_TYPES(x.scalar_type(), "gemv_int4", [&] {
      const auto* xp = reinterpret_cast<const scalar_t*>(xc.data_ptr());
      auto* yp = reinterpret_cast<scalar_t*>(yc.data_ptr());
      const float* sp = scale.data_ptr<float>();
      const uint8_t* zp = zero.data_ptr<uint8_t>();
      const int g = static_cast<int>(group);
      if (version == 6 && K / 32 <= 512) {
        switch (pb) {
          case 1: LAUNCH_V6(1, 4, false, sp, zp, g); break;
          case 2: LAUNCH_V6(2, 4, false, sp, zp, g); break;
          case 3: LAUNCH_V6(3, 1, false, sp, zp, g); break;  // 2 rows spill at batch 3-4 (128 registers)
          default: LAUNCH_V6(4, 1, false, sp, zp, g); break;
        }
        return;
      }
      switch (pb) {
        case 1: LAUNCH_V4(1, 4, false, sp, zp, g); break;
        case 2: LAUNCH_V4(2, 4, false, sp, zp, g); break;
        case 3: LAUNCH_V4(3, 2, false, sp, zp, g); break;
        default: LAUNCH_V4(4, 2, false, sp, zp, g); break;
      }
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

torch::Tensor gemv_ternary(torch::Tensor x, torch::Tensor packed, double scale) {
  check_cuda(x, "x");
  check_cuda(packed, "packed");
  const c10::cuda::CUDAGuard guard(x.device());
  const int K = x.size(1);
  const int N = packed.size(0);
  auto stream = c10::cuda::getCurrentCUDAStream();
  return batched(x, N, [&](const torch::Tensor& xc, torch::Tensor& yc, int pb) {
    DISPATCH_HALF_TYPES(x.scalar_type(), "gemv_ternary", [&] {
      const auto* xp = reinterpret_cast<const scalar_t*>(xc.data_ptr());
      auto* yp = reinterpret_cast<scalar_t*>(yc.data_ptr());
      SWITCH_BATCH(pb, LAUNCH_T)
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("quantize_rows_int8", &quantize_rows_int8, "row-wise absmax int8 quantization (CUDA)");
  m.def("dequantize_nf4", &dequantize_nf4, "NF4 dequantization (CUDA)");
  m.def("dequantize_int4", &dequantize_int4, "int4 dequantization with groups (CUDA)");
  m.def("gemv_nf4", &gemv_nf4, "NF4 weight GEMV / small-batch GEMM; version 1 naive, 2 warp per row, 3 rows per warp, 4 rows per block, 6 persistent, 7 tensor cores, 8 byte-table decode (CUDA)");
  m.def("gemv_nf4_v8_variant", &gemv_nf4_v8_variant, "NF4 GEMV v8 in other configurations, batch 1 fp16 (benchmark only)");
  m.def("stream_read", &stream_read, "read a byte buffer once, per-block 32-bit sums (benchmark only: the read floor)");
  m.def("gemv_int4", &gemv_int4, "int4 weight GEMV with groups; version 4 rows per block, 6 persistent (CUDA)");
  m.def("gemv_ternary", &gemv_ternary, "ternary weight GEMV with additions only (CUDA)");
}
