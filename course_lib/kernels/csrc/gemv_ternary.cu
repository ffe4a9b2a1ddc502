// 4. ternary GEMV.
#include "common.cuh"

namespace course_kernels {
namespace {

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

template <typename T, int B, int R>
void launch_ternary(const T* x, const uint8_t* packed, float scale, T* y, int N, int K, cudaStream_t s) {
  gemv_ternary_kernel<T, B, R><<<(N + R - 1) / R, std::min(256, (K / 64 + WARP - 1) / WARP * WARP), 0, s>>>(
      x, packed, scale, y, N, K);
}

}  // namespace

cudaError_t gemv_ternary(DType t, const void* x, const uint8_t* packed, float scale, void* y, int B, int N, int K,
                         cudaStream_t s) {
  return dispatch_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* xp = static_cast<const T*>(x);
    T* yp = static_cast<T*>(y);
    switch (B) {
      case 1: launch_ternary<T, 1, 4>(xp, packed, scale, yp, N, K, s); break;
      case 2: launch_ternary<T, 2, 4>(xp, packed, scale, yp, N, K, s); break;
      case 3: launch_ternary<T, 3, 2>(xp, packed, scale, yp, N, K, s); break;
      case 4: launch_ternary<T, 4, 2>(xp, packed, scale, yp, N, K, s); break;
      case 8: launch_ternary<T, 8, 2>(xp, packed, scale, yp, N, K, s); break;
      case 16: launch_ternary<T, 16, 1>(xp, packed, scale, yp, N, K, s); break;
      default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
  });
}

}  // namespace course_kernels
