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
  m.def("gemv_nf4", &gemv_nf4, "NF4 weight GEMV / small-batch GEMM; version 1 naive, 2 warp per row, 3 rows per warp, 4 rows per block, 6 persistent (CUDA)");
  m.def("gemv_int4", &gemv_int4, "int4 weight GEMV with groups; version 4 rows per block, 6 persistent (CUDA)");
  m.def("gemv_ternary", &gemv_ternary, "ternary weight GEMV with additions only (CUDA)");
}
