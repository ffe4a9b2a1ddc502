// 3. GEMV kernels v1-v7 (v8/v9: gemv_nf4_v8.cu), NF4 and int4.
#include "common.cuh"

namespace course_kernels {
namespace {

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

// Launch helpers for v2-v6: the kernel for (batch B, rows per warp or block R).
template <typename T, int B, int R>
void launch_fused(const T* x, const uint8_t* packed, const float* absmax, T* y, int N, int K, int bs, cudaStream_t s) {
  gemv_nf4_fused_kernel<T, B, R><<<grid_for(static_cast<int64_t>(N + R - 1) / R * WARP, 256), 256, 0, s>>>(
      x, packed, absmax, y, N, K, bs);
}
// v4: one block per R rows; threads = the number of 32-weight steps of a row, rounded up to a warp, at most 256.
template <typename T, int B, int R, bool NF4>
void launch_v4(const T* x, const uint8_t* packed, const float* scale, const uint8_t* zero, T* y, int N, int K,
               int group, cudaStream_t s) {
  gemv_4bit_v4_kernel<T, B, R, NF4><<<(N + R - 1) / R, std::min(256, (K / 32 + WARP - 1) / WARP * WARP), 0, s>>>(
      x, packed, scale, zero, y, N, K, group);
}
// v6: one wave of blocks (as many as the occupancy calculator says fit), each of K / 32 threads rounded up to a warp.
template <typename T, int B, int R, bool NF4>
cudaError_t launch_v6(const T* x, const uint8_t* packed, const float* scale, const uint8_t* zero, T* y, int N, int K,
                      int group, cudaStream_t s) {
  auto kern = gemv_4bit_v6_kernel<T, B, R, NF4>;
  static int sms[64] = {0};
  const int dev = cached_device();
  cudaError_t err = cudaSuccess;
  if (sms[dev] == 0) err = cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, dev);
  const int threads = (K / 32 + WARP - 1) / WARP * WARP;
  int per_sm = 0;
  if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, threads, 0);
  if (err != cudaSuccess) return err;
  const int blocks = std::max(1, std::min((N + R - 1) / R, sms[dev] * std::max(per_sm, 1)));
  kern<<<blocks, threads, 0, s>>>(x, packed, scale, zero, y, N, K, group);
  return cudaSuccess;
}

// v4 (and v6) at batch B <= 4 with the rows per block that measured best; R8 is v5.
template <typename T, bool NF4>
cudaError_t launch_v4_v6(int version, const T* x, const uint8_t* packed, const float* scale, const uint8_t* zero,
                         T* y, int B, int N, int K, int group, cudaStream_t s) {
  if (version == 6 && K / 32 <= 512) {
    switch (B) {  // 2 rows spill at batch 3-4 (128 registers)
      case 1: return launch_v6<T, 1, 4, NF4>(x, packed, scale, zero, y, N, K, group, s);
      case 2: return launch_v6<T, 2, 4, NF4>(x, packed, scale, zero, y, N, K, group, s);
      case 3: return launch_v6<T, 3, 1, NF4>(x, packed, scale, zero, y, N, K, group, s);
      default: return launch_v6<T, 4, 1, NF4>(x, packed, scale, zero, y, N, K, group, s);
    }
  }
  if (NF4 && version == 5) {  // v4 with 8 rows per block: twice the loads in flight per thread
    switch (B) {
      case 1: launch_v4<T, 1, 8, NF4>(x, packed, scale, zero, y, N, K, group, s); break;
      case 2: launch_v4<T, 2, 8, NF4>(x, packed, scale, zero, y, N, K, group, s); break;
      case 3: launch_v4<T, 3, 4, NF4>(x, packed, scale, zero, y, N, K, group, s); break;
      default: launch_v4<T, 4, 4, NF4>(x, packed, scale, zero, y, N, K, group, s); break;
    }
    return cudaGetLastError();
  }
  switch (B) {
    case 1: launch_v4<T, 1, 4, NF4>(x, packed, scale, zero, y, N, K, group, s); break;
    case 2: launch_v4<T, 2, 4, NF4>(x, packed, scale, zero, y, N, K, group, s); break;
    case 3: launch_v4<T, 3, 2, NF4>(x, packed, scale, zero, y, N, K, group, s); break;
    default: launch_v4<T, 4, 2, NF4>(x, packed, scale, zero, y, N, K, group, s); break;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t gemv_nf4_naive(DType t, const void* x, const uint8_t* packed, const float* absmax, void* y, int B, int N,
                           int K, int blocksize, cudaStream_t s) {
  return dispatch_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    gemv_nf4_naive_kernel<T><<<grid_for(static_cast<int64_t>(B) * N, 256), 256, 0, s>>>(
        static_cast<const T*>(x), packed, absmax, static_cast<T*>(y), B, N, K, blocksize);
    return cudaGetLastError();
  });
}

cudaError_t gemv_nf4_rows(DType t, int version, const void* x, const uint8_t* packed, const float* absmax, void* y,
                          int B, int N, int K, int blocksize, cudaStream_t s) {
  return dispatch_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* xp = static_cast<const T*>(x);
    T* yp = static_cast<T*>(y);
    if (version == 2) {
      if (B != 1) return cudaErrorInvalidValue;
      launch_fused<T, 1, 1>(xp, packed, absmax, yp, N, K, blocksize, s);
      return cudaGetLastError();
    }
    if (version == 3) {
      switch (B) {
        case 1: launch_fused<T, 1, 4>(xp, packed, absmax, yp, N, K, blocksize, s); break;
        case 2: launch_fused<T, 2, 4>(xp, packed, absmax, yp, N, K, blocksize, s); break;
        case 3: launch_fused<T, 3, 2>(xp, packed, absmax, yp, N, K, blocksize, s); break;
        case 4: launch_fused<T, 4, 2>(xp, packed, absmax, yp, N, K, blocksize, s); break;
        case 8: launch_fused<T, 8, 2>(xp, packed, absmax, yp, N, K, blocksize, s); break;
        case 16: launch_fused<T, 16, 1>(xp, packed, absmax, yp, N, K, blocksize, s); break;
        default: return cudaErrorInvalidValue;
      }
      return cudaGetLastError();
    }
    if (B > 4) return cudaErrorInvalidValue;
    return launch_v4_v6<T, true>(version, xp, packed, absmax, nullptr, yp, B, N, K, blocksize, s);
  });
}

cudaError_t gemv_nf4_mma(DType t, const void* x, const uint8_t* packed, const float* absmax, void* y, int B, int N,
                         int K, int blocksize, cudaStream_t s) {
  Arch arch;
  cudaError_t err = current_arch(&arch);
  if (err != cudaSuccess) return err;
  if (!has_mma(arch) || K % 64 || blocksize % 64) return cudaErrorNotSupported;
  return dispatch_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const int grid = (N + 15) / 16;
    for (int b0 = 0; b0 < B; b0 += 16) {
      const int nb = std::min(16, B - b0);
      const T* xp = static_cast<const T*>(x) + static_cast<int64_t>(b0) * K;
      T* yp = static_cast<T*>(y) + static_cast<int64_t>(b0) * N;
      if (nb <= 8)
        gemv_nf4_mma_kernel<T, 1><<<grid, 256, 0, s>>>(xp, packed, absmax, yp, nb, N, K, blocksize);
      else
        gemv_nf4_mma_kernel<T, 2><<<grid, 256, 0, s>>>(xp, packed, absmax, yp, nb, N, K, blocksize);
      const cudaError_t e = cudaGetLastError();
      if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
  });
}

cudaError_t gemv_int4_rows(DType t, int version, const void* x, const uint8_t* packed, const float* scale,
                           const uint8_t* zero, void* y, int B, int N, int K, int group, cudaStream_t s) {
  if (B > 4) return cudaErrorInvalidValue;
  return dispatch_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return launch_v4_v6<T, false>(version, static_cast<const T*>(x), packed, scale, zero, static_cast<T*>(y), B, N, K,
                                  group, s);
  });
}

}  // namespace course_kernels
