// NF4 GEMV v10, tensor cores for batch 1-16: the kernel and its launch, as templates. gemv_nf4_v10.cu instantiates
// the configurations the default dispatch uses and the ones benchmarks/kernels.py --sweep-v10 compares.
#pragma once

#include "gemv_nf4_v8.cuh"  // the byte table and programmatic dependent launch

namespace course_kernels {

// v10: v7's tensor-core GEMV (mma.sync m16n8k16, codes decoded in registers, absmax applied in fp32 per 64-weight
// block), rebuilt around two measurements of v7 on the H100 (benchmarks/results/kernels_h100.md): ~30 us at
// 8192x8192 batch 4 and ~40 us at batch 16 against a 12.6 us floor.
//
// 1. The activations. A v7 block owns 16 rows and all of K, so each of the N / 16 blocks reads the whole of x:
//    at 8192x8192 batch 16 that is 512 x 256 KB = 134 MB from L2, as much as the fp16 weight matrix itself. Here
//    a warp is k-stationary: it owns the 128-wide chunks w, w + W, w + 2W, ... of K and, for each chunk, runs
//    over all TB 16-row tiles of its block with that chunk's activations held in registers. Each block reads x
//    once, whatever its number of rows, and the warps' partial sums meet once, at the end, in shared memory.
// 2. The weight loads. v7 read 8 bytes of a row per lane (32 bytes per row per warp load); here a lane reads 16
//    bytes of row g and 16 of row g + 8 (ld.global.nc without L1 allocation, the 4 lanes of a row cover 64
//    contiguous bytes = 128 weights = two 64-weight absmax blocks), and the loads of the next D tiles (of this
//    chunk or the next) are in flight while the current tile is decoded.
// 3. The absmax. An mma sums over the 16 k of its fragment, held by the 4 lanes of a row, so those 16 k must share
//    one absmax to be scaled after the mma in fp32. Lanes t and t ^ 2 swap halves of their 16 bytes (two
//    shfl.xor): lanes 0 and 1 then hold 8 bytes of block A and 8 of block B each, as do lanes 2 and 3, and four
//    mmas cover block A, four block B. The k order inside the chunk is permuted (a sum does not care): lane t's
//    block-A bytes are weights 16 * perm(t) .. + 15 of the chunk, perm = (0, 2, 1, 3), and its activations are
//    loaded to match.
// 4. The decode table. v8's byte table (a half2 or bf162 pair of codes per packed byte, one copy per lane: one
//    PRMT and one conflict-free LDS per byte), built once per block of TB tiles, not once per 16 rows as in v7;
//    its 64 KB hold the cross-warp reduction at the end.
// Needs K % 64 == 0 (a chunk may be a half chunk at the end of a row) and blocksize % 64 == 0; any N.
//
// Template: NT n-tiles of 8 batch rows (1: batch <= 8, 2: batch <= 16); TB tiles of 16 rows per block (the grid
// is ceil(N / (16 TB)) blocks; the default ranks TB and the warps per block for the shape: gemv_nf4_v10.cu); D
// weight slots per lane (the loads of the next D tiles are in flight); XPF: the next chunk's activations are loaded
// one chunk ahead (registers) instead of at the chunk's start (measured slower: one block per SM); MINB: __launch_bounds__' minimum blocks per SM (register budget); PDL:
// programmatic dependent launch on sm_90 (the table is built before griddepcontrol.wait, every global read after);
// MAXW: the most warps per block (__launch_bounds__; 16 caps registers at 128); PF: an L2 prefetch of the weights
// of the item PF ahead (0: none).
constexpr int V10_LUT_BYTES = 256 * 256;

// The code pair of byte `pos` of `word` for this lane: address (byte << 8) | (lane << 2), one PRMT.
__device__ __forceinline__ uint32_t v10_pair(const char* lut, uint32_t word, uint32_t lane4, int pos) {
  const uint32_t addr = __byte_perm(word, lane4, 0x6504u | (pos << 4));
  return *reinterpret_cast<const uint32_t*>(lut + addr);
}

// Lanes t < 2 keep their low 8 bytes (block A) and send their high 8 bytes to lane t + 2; lanes t >= 2 keep
// their high 8 bytes (block B) and send their low 8 bytes to lane t - 2. part[0] = block A, part[1] = block B.
__device__ __forceinline__ void v10_exchange(const uint4& w, bool low_lane, uint32_t (&part)[2][2]) {
  const uint32_t s0 = low_lane ? w.z : w.x, s1 = low_lane ? w.w : w.y;
  const uint32_t r0 = __shfl_xor_sync(0xffffffffu, s0, 2), r1 = __shfl_xor_sync(0xffffffffu, s1, 2);
  part[0][0] = low_lane ? w.x : r0;
  part[0][1] = low_lane ? w.y : r1;
  part[1][0] = low_lane ? r0 : w.z;
  part[1][1] = low_lane ? r1 : w.w;
}

template <typename T, int NT, int TB, int D, bool XPF, int MINB, bool PDL, int MAXW, int PF>
__global__ void __launch_bounds__(32 * MAXW, MINB) gemv_nf4_v10_kernel(
    const T* __restrict__ x, const uint8_t* __restrict__ packed, const float* __restrict__ absmax, T* __restrict__ y,
    int B, int N, int K, int blocksize, int bs_shift) {
  static_assert(TB % D == 0, "the ring of D weight slots must divide the TB tiles");
  static_assert(MAXW * 16 * TB * 8 * NT * 4 <= V10_LUT_BYTES, "the reduction must fit in the table's memory");
  extern __shared__ uint4 v10_smem[];  // the table, then the reduction [W][TB * 16][8 * NT]
  if constexpr (PDL) pdl_launch_dependents();
  const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP, W = blockDim.x / WARP;
  const int g = lane >> 2, t = lane & 3;
  const bool low_lane = t < 2;
  const int perm = ((t & 1) << 1) | (t >> 1);
  const int row0 = blockIdx.x * TB * 16 + g;  // this lane's row of tile 0 (rows past N: clamped, not stored)
  const int chunks = (K + 127) / 128;
  const int nj = warp < chunks ? (chunks - 1 - warp) / W + 1 : 0;  // this warp's chunks: warp + W * j
  const uint32_t k64 = K / 64, bs64 = blocksize / 64;
  auto block_of = [&](uint32_t i64) { return bs_shift >= 0 ? i64 >> bs_shift : i64 / bs64; };
  const bool pairs = bs_shift == 0 && k64 % 2 == 0;  // the absmax index of block A is even

  // a ring of D slots: the 16 bytes of rows g and g + 8 of one tile for this lane, and their absmax [block A, B]
  uint4 wa[D], wb[D];
  float sa[D][2], sb[D][2];
  auto load_w = [&](int slot, int i, int c) {
    const int ra = min(row0 + 16 * i, N - 1), rb = min(row0 + 16 * i + 8, N - 1);
    const bool half = c * 128 + 64 >= K;  // a half chunk: block B lies past the row's end
    const uint32_t ia = static_cast<uint32_t>(ra) * k64 + 2 * c, ib = static_cast<uint32_t>(rb) * k64 + 2 * c;
    const int64_t off = static_cast<int64_t>(c) * 64 + 16 * t;
    if (!half || low_lane) {
      wa[slot] = load_stream16(packed + static_cast<int64_t>(ra) * (K / 2) + off);
      wb[slot] = load_stream16(packed + static_cast<int64_t>(rb) * (K / 2) + off);
    } else {
      wa[slot] = wb[slot] = make_uint4(0u, 0u, 0u, 0u);
    }
    if (pairs && !half) {  // blocksize 64 and K % 128 == 0: blocks A and B are one aligned float2
      const float2 a2 = __ldg(reinterpret_cast<const float2*>(absmax + ia));
      const float2 b2 = __ldg(reinterpret_cast<const float2*>(absmax + ib));
      sa[slot][0] = a2.x;
      sa[slot][1] = a2.y;
      sb[slot][0] = b2.x;
      sb[slot][1] = b2.y;
    } else {
      sa[slot][0] = __ldg(absmax + block_of(ia));
      sb[slot][0] = __ldg(absmax + block_of(ib));
      sa[slot][1] = half ? 0.f : __ldg(absmax + block_of(ia + 1));
      sb[slot][1] = half ? 0.f : __ldg(absmax + block_of(ib + 1));
    }
  };
  // an L2 prefetch of tile i's 16 bytes of rows g and g + 8 in chunk c (no registers held: the load D items
  // ahead then finds its bytes in L2)
  auto prefetch_w = [&](int i, int c) {
    const int ra = min(row0 + 16 * i, N - 1), rb = min(row0 + 16 * i + 8, N - 1);
    if (c * 128 + 64 < K || low_lane) {
      const int64_t off = static_cast<int64_t>(c) * 64 + 16 * t;
      asm volatile("prefetch.global.L2 [%0];\n" ::"l"(packed + static_cast<int64_t>(ra) * (K / 2) + off));
      asm volatile("prefetch.global.L2 [%0];\n" ::"l"(packed + static_cast<int64_t>(rb) * (K / 2) + off));
    }
  };
  // activations of chunk c for batch row nt * 8 + g: [0..1] the 16 k of block A, [2..3] those of block B
  uint4 xv[NT][4], xn[XPF ? NT : 1][4];
  auto load_x = [&](uint4 (&xd)[NT][4], int c) {
    const bool half = c * 128 + 64 >= K;
    const int k = c * 128 + 16 * perm;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int n = nt * 8 + g;
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
      xd[nt][0] = xd[nt][1] = xd[nt][2] = xd[nt][3] = zero;
      if (n < B) {  // batch rows past B multiply by zeros
        const uint4* xr = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(n) * K + k);
        xd[nt][0] = __ldg(xr);
        xd[nt][1] = __ldg(xr + 1);
        if (!half) {
          xd[nt][2] = __ldg(xr + 8);
          xd[nt][3] = __ldg(xr + 9);
        }
      }
    }
  };

  float acc[TB][NT][4];
#pragma unroll
  for (int i = 0; i < TB; ++i)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][nt][q] = 0.f;

  auto first_loads = [&] {
    if (nj > 0) {
#pragma unroll
      for (int i = 0; i < D; ++i) load_w(i, i, warp);
      load_x(xv, warp);
      if constexpr (XPF) {
        if (nj > 1) load_x(xn, warp + W);
      }
    }
  };
  if constexpr (PDL) {  // the table is built while the previous kernel finishes; no global read before the wait
    v8_build_table<T, false>(v10_smem);
    pdl_wait();
    first_loads();
  } else {  // the first weights and activations are in flight while the table is built
    first_loads();
    v8_build_table<T, false>(v10_smem);
  }
  __syncthreads();
  const char* lut = reinterpret_cast<const char*>(v10_smem);
  const uint32_t lane4 = static_cast<uint32_t>(lane) << 2;

  for (int j = 0; j < nj; ++j) {
    const int c = warp + j * W;
    const int parts = c * 128 + 64 >= K ? 1 : 2;
#pragma unroll
    for (int i = 0; i < TB; ++i) {
      const int slot = i % D;
      uint32_t pa[2][2], pb[2][2];
      v10_exchange(wa[slot], low_lane, pa);
      v10_exchange(wb[slot], low_lane, pb);
      const float s[2][2] = {{sa[slot][0], sb[slot][0]}, {sa[slot][1], sb[slot][1]}};
      // the slot's registers are free: the item D ahead goes in flight (tile i + D, or a tile of the next chunk)
      if (i + D < TB) {
        load_w(slot, i + D, c);
      } else if (j + 1 < nj) {
        load_w(slot, i + D - TB, c + W);
      }
      if constexpr (PF > 0) {  // the item PF ahead: tile (i + PF) % TB of chunk j + (i + PF) / TB
        if (j + (i + PF) / TB < nj) prefetch_w((i + PF) % TB, c + W * ((i + PF) / TB));
      }
#pragma unroll
      for (int part = 0; part < 2; ++part) {
        if (part < parts) {
          float d[NT][4];
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int q = 0; q < 4; ++q) d[nt][q] = 0.f;
#pragma unroll
          for (int m = 0; m < 4; ++m) {  // bytes 2m and 2m + 1 of each row's 8: k 4m .. 4m + 3 of the part
            const int word = m >> 1, pos = 2 * (m & 1);
            const uint32_t a[4] = {v10_pair(lut, pa[part][word], lane4, pos), v10_pair(lut, pb[part][word], lane4, pos),
                                   v10_pair(lut, pa[part][word], lane4, pos + 1),
                                   v10_pair(lut, pb[part][word], lane4, pos + 1)};
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              const uint32_t* xw = reinterpret_cast<const uint32_t*>(&xv[nt][2 * part]);
              Mma<T>::mma(d[nt], a, xw[2 * m], xw[2 * m + 1]);
            }
          }
          // d[nt][0..1]: row g, batch columns nt * 8 + 2t, + 1; d[nt][2..3]: row g + 8
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            acc[i][nt][0] = fmaf(s[part][0], d[nt][0], acc[i][nt][0]);
            acc[i][nt][1] = fmaf(s[part][0], d[nt][1], acc[i][nt][1]);
            acc[i][nt][2] = fmaf(s[part][1], d[nt][2], acc[i][nt][2]);
            acc[i][nt][3] = fmaf(s[part][1], d[nt][3], acc[i][nt][3]);
          }
        }
      }
    }
    if (j + 1 < nj) {
      if constexpr (XPF) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int q = 0; q < 4; ++q) xv[nt][q] = xn[nt][q];
        if (j + 2 < nj) load_x(xn, c + 2 * W);
      } else {
        load_x(xv, c + W);
      }
    }
  }

  // the warps' partial sums meet in shared memory (over the table, which no warp reads any more)
  __syncthreads();
  float* red = reinterpret_cast<float*>(v10_smem);
  constexpr int COLS = 8 * NT, ROWS = 16 * TB;
#pragma unroll
  for (int i = 0; i < TB; ++i) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      float* r0 = red + (warp * ROWS + i * 16 + g) * COLS + nt * 8 + 2 * t;
      *reinterpret_cast<float2*>(r0) = make_float2(acc[i][nt][0], acc[i][nt][1]);
      *reinterpret_cast<float2*>(r0 + 8 * COLS) = make_float2(acc[i][nt][2], acc[i][nt][3]);
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < ROWS * B; idx += blockDim.x) {
    const int row = idx % ROWS, b = idx / ROWS;
    const int out_row = blockIdx.x * ROWS + row;
    if (out_row < N) {
      float total = 0.f;
      for (int w = 0; w < W; ++w) total += red[(w * ROWS + row) * COLS + b];
      y[static_cast<int64_t>(b) * N + out_row] = from_float<T>(total);
    }
  }
}

// The blocks of one configuration that are resident at once on the current GPU (SMs x blocks per SM), for blocks
// of `warps` warps; sets the kernel's shared-memory limit on first use. cudaErrorNotSupported where the code or the
// GPU has no mma.sync, or a block does not fit.
template <typename T, int NT, int TB, int D, bool XPF, int MINB, bool PDL, int MAXW, int PF>
cudaError_t v10_wave(int warps, int* wave) {
  auto kern = gemv_nf4_v10_kernel<T, NT, TB, D, XPF, MINB, PDL, MAXW, PF>;
  Arch arch;
  cudaError_t err = current_arch(&arch);
  if (err != cudaSuccess) return err;
  if (!has_mma(arch) || warps < 1 || warps > MAXW) return cudaErrorNotSupported;
  static int cache[64][MAXW + 1] = {};  // by device and warps per block; -1: does not fit
  const int dev = cached_device();
  if (cache[dev][warps] == 0) {
    int occ = 0, sms = 0;
    err = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, V10_LUT_BYTES);
    if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, warps * WARP, V10_LUT_BYTES);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return err;
    }
    cache[dev][warps] = occ > 0 ? occ * sms : -1;
  }
  if (cache[dev][warps] < 0) return cudaErrorNotSupported;
  *wave = cache[dev][warps];
  return cudaSuccess;
}

// The warps per block: `warps` (0: 8), at most MAXW, and at most one per 128-wide chunk of K (a warp without a
// chunk would idle).
inline int v10_warps(int K, int warps, int max_warps) {
  return std::max(1, std::min({warps > 0 ? warps : 8, max_warps, (K + 127) / 128}));
}

// v10 launch for 1 <= B <= 8 * NT batch rows: ceil(N / (16 TB)) blocks of v10_warps(K, warps, MAXW) warps.
// cudaErrorNotSupported where the code or the GPU has no mma.sync or the shape is not handled.
template <typename T, int NT, int TB, int D, bool XPF, int MINB, bool PDL, int MAXW, int PF>
cudaError_t launch_v10(const T* x, const uint8_t* packed, const float* absmax, T* y, int B, int N, int K,
                       int blocksize, int warps, cudaStream_t stream) {
  if (K % 64 || K < 64 || blocksize % 64 || blocksize < 64 || B < 1 || B > 8 * NT || N < 1)
    return cudaErrorNotSupported;
  warps = v10_warps(K, warps, MAXW);
  int wave = 0;
  cudaError_t err = v10_wave<T, NT, TB, D, XPF, MINB, PDL, MAXW, PF>(warps, &wave);  // checks the GPU, smem limit
  if (err != cudaSuccess) return err;
  Arch arch;
  err = current_arch(&arch);
  if (err != cudaSuccess) return err;
  auto kern = gemv_nf4_v10_kernel<T, NT, TB, D, XPF, MINB, PDL, MAXW, PF>;
  const int grid = (N + 16 * TB - 1) / (16 * TB);
  const int bs64 = blocksize / 64;
  const int shift = (bs64 & (bs64 - 1)) == 0 ? __builtin_ctz(bs64) : -1;
  // the attribute only where the loaded code waits (griddepcontrol is sm_90 code)
  return launch_kernel(PDL && has_pdl(arch), kern, dim3(grid), dim3(warps * WARP), V10_LUT_BYTES, stream, x, packed,
                       absmax, y, B, N, K, blocksize, shift);
}

}  // namespace course_kernels
