// NF4 GEMV v8 (and v9), the byte-table decode: the kernel and its launch, as templates. gemv_nf4_v8.cu instantiates
// the configurations the course uses; benchmarks/csrc/ instantiates other ones for the sweep.
#pragma once

#include "common.cuh"

namespace course_kernels {


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
    v = load_stream16(p);
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

// The 256 x 32 table of code pairs (row b, word l: P's pair (code[b >> 4], code[b & 15]); v8 keeps fp16 codes for
// both dtypes, v10 uses x's type for its mma): 8 16-byte stores per row, rotated so that the 8 lanes of a
// quarter-warp hit 8 different columns. v8's 256 threads write one row each; blocks of other sizes (v10) loop.
template <typename P = __half, bool ONE_ROW_PER_THREAD = true>
__device__ __forceinline__ void v8_build_table(uint4* lut) {
  for (int b = threadIdx.x; b < 256; b += blockDim.x) {
    const uint32_t v = Mma<P>::pair(c_nf4_code[b >> 4], c_nf4_code[b & 15]);
    const uint4 v4 = make_uint4(v, v, v, v);
#pragma unroll
    for (int c = 0; c < 8; ++c) lut[b * 16 + ((c + b) & 7)] = v4;
    if (ONE_ROW_PER_THREAD) break;
  }
}

// Two launch-side options, measured by benchmarks/kernels.py --sweep (results file): XPF loads an item's
// activations together with its weights, one item ahead, instead of right before the decode (the activation
// loads are L1 hits, but their latency was exposed once per item); PDL is programmatic dependent launch
// (sm_90+, with the launch attribute set by launch_v8): the kernel lets the next kernel in the stream start
// at once and waits for the previous one only where it must (griddepcontrol.wait), so that the launch, the
// table build and, with PDL = 2, the first weight loads overlap the previous kernel's tail. PDL = 1 waits
// before any global read (always correct); PDL = 2 reads the first weights before the wait, which is correct
// only when the previous kernel does not write the weights (inference with fixed weights).

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

// v8 launch: one balanced wave of 256-thread blocks (see the kernel). cudaErrorNotSupported when a block cannot
// get the 64 KB table on this GPU (the caller then runs v4).
template <typename T, int B, int R, int U, int LD, bool XPF = false, int PDL = 0, int MINB = 0>
cudaError_t launch_v8(const T* x, const uint8_t* packed, const float* absmax, T* y, int N, int K, int blocksize,
               cudaStream_t stream) {
  auto kern = gemv_nf4_v8_kernel<T, B, R, U, LD, XPF, PDL, MINB>;
  static int per_sm[64] = {0};  // blocks per SM for each device; 0: not asked yet, -1: the table does not fit
  static int sm_count[64] = {0};
  const int dev = cached_device();
  Arch arch;
  cudaError_t err = current_arch(&arch);
  if (err != cudaSuccess) return err;
  if (per_sm[dev] == 0) {
    int occ = 0;
    if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, V8_LUT_BYTES) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, V8_THREADS, V8_LUT_BYTES) != cudaSuccess ||
        occ < 1) {
      (void)cudaGetLastError();
      occ = -1;
    }
    err = cudaDeviceGetAttribute(&sm_count[dev], cudaDevAttrMultiProcessorCount, dev);
    if (err != cudaSuccess) return err;
    per_sm[dev] = occ;
  }
  if (per_sm[dev] < 0) return cudaErrorNotSupported;
  const int bs32 = blocksize / 32;
  const int shift = (bs32 & (bs32 - 1)) == 0 ? __builtin_ctz(bs32) : -1;
  const int units = (N + R - 1) / R;
  const int max_warps = sm_count[dev] * per_sm[dev] * (V8_THREADS / WARP);
  const int upw = (units + max_warps - 1) / max_warps;   // units per warp, the same for every warp
  const int warps = (units + upw - 1) / upw;
  const int blocks = (warps + V8_THREADS / WARP - 1) / (V8_THREADS / WARP);
  // the attribute only where the loaded code waits (griddepcontrol.wait is sm_90 code)
  return launch_kernel(PDL > 0 && has_pdl(arch), kern, dim3(blocks), dim3(V8_THREADS), V8_LUT_BYTES, stream, x, packed,
                       absmax, y, N, K, blocksize, shift, upw);
}

}  // namespace course_kernels
