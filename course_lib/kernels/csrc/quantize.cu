// 1. row-wise absmax int8 quantization and 2. dequantization of 4-bit weights (NF4, int4).
#include "common.cuh"

namespace course_kernels {
namespace {


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

}  // namespace

cudaError_t quantize_rows_int8(DType t, const void* x, int8_t* q, float* absmax, int M, int K, cudaStream_t s) {
  if (M == 0) return cudaSuccess;
  return dispatch_dtype<true>(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    quantize_rows_int8_kernel<T, 256><<<M, 256, 0, s>>>(static_cast<const T*>(x), q, absmax, K);
    return cudaGetLastError();
  });
}

cudaError_t dequantize_nf4(DType t, const uint8_t* packed, const float* absmax, void* out, int64_t n, int blocksize,
                           cudaStream_t s) {
  const bool vec = n % 32 == 0 && blocksize % 32 == 0;
  return dispatch_dtype<true>(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (vec)
      dequantize_nf4_vec_kernel<T><<<grid_for(n / 32, 256), 256, 0, s>>>(packed, absmax, static_cast<T*>(out), n,
                                                                         blocksize);
    else
      dequantize_nf4_kernel<T><<<grid_for((n + 1) / 2, 256), 256, 0, s>>>(packed, absmax, static_cast<T*>(out), n,
                                                                          blocksize);
    return cudaGetLastError();
  });
}

cudaError_t dequantize_int4(DType t, const uint8_t* packed, const float* scale, const uint8_t* zero, void* out,
                            int64_t N, int K, int group, cudaStream_t s) {
  return dispatch_dtype<true>(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    dequantize_int4_kernel<T><<<grid_for(N * K / 2, 256), 256, 0, s>>>(packed, scale, zero, static_cast<T*>(out), N,
                                                                       K, group);
    return cudaGetLastError();
  });
}

}  // namespace course_kernels
