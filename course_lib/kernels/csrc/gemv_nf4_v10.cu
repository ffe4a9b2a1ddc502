// 3. NF4 GEMV v10 (tensor cores, batch 1-16 per launch): the configurations the default dispatch chooses from, and
// the ones benchmarks/kernels.py --sweep-v10 compares (fp16 only).
#include "gemv_nf4_v10.cuh"

namespace course_kernels {
namespace {

// One configuration of gemv_nf4_v10_kernel (see gemv_nf4_v10.cuh): n-tiles, tiles per block, weight slots,
// activations one chunk ahead, minimum blocks per SM, programmatic dependent launch, most warps per block,
// L2 prefetch distance.
template <int NT, int TB, int D, bool XPF, int MINB, bool PDL, int MAXW, int PF>
struct V10Config {
  static constexpr int tiles() { return TB; }
  static constexpr int max_warps() { return MAXW; }
  template <typename T>
  static cudaError_t wave(int warps, int* w) {
    return v10_wave<T, NT, TB, D, XPF, MINB, PDL, MAXW, PF>(warps, w);
  }
  template <typename T>
  static cudaError_t launch(const T* x, const uint8_t* packed, const float* absmax, T* y, int B, int N, int K, int bs,
                            int warps, cudaStream_t s) {
    return launch_v10<T, NT, TB, D, XPF, MINB, PDL, MAXW, PF>(x, packed, absmax, y, B, N, K, bs, warps, s);
  }
};
// The default's candidates (each measured in the first --sweep-v10 on an H100: configurations 0-2, 6-8, 11-12)
//                        NT TB  D  XPF   MINB PDL   MAXW PF
using V10n1t2 = V10Config<1, 2, 2, false, 0, false, 8, 0>;
using V10n1t4 = V10Config<1, 4, 2, false, 0, false, 8, 0>;
using V10n1t8 = V10Config<1, 8, 2, false, 0, false, 8, 0>;
using V10n2t2 = V10Config<2, 2, 2, false, 0, false, 8, 0>;
using V10n2t4 = V10Config<2, 4, 2, false, 2, false, 8, 0>;
using V10n2t8 = V10Config<2, 8, 2, false, 0, false, 8, 0>;
using V10n1t2pdl = V10Config<1, 2, 2, false, 0, true, 8, 0>;
using V10n2t2pdl = V10Config<2, 2, 2, false, 0, true, 8, 0>;
// 16 warps per block (registers capped at 128), a candidate only at 16 warps: configurations 3 and 9, measured in the
// second sweep 7-20% faster than 8 warps where 2-tile blocks fit one per SM (4096 rows: 8 warps left each SM half
// empty)
using V10n1t2w16 = V10Config<1, 2, 2, false, 0, false, 16, 0>;
using V10n2t2w16 = V10Config<2, 2, 2, false, 0, false, 16, 0>;

// The sweep's configurations, in the order of gemv_nf4_v10_config's `config` (float16). 4, 5 and 10 (L2 prefetch)
// were not faster than 0, 1 and 6 in the second sweep.
template <typename F>
cudaError_t with_v10_config(int config, F&& f) {
  switch (config) {
    case 0: return f(V10n1t2{});
    case 1: return f(V10n1t4{});
    case 2: return f(V10n1t8{});
    case 3: return f(V10n1t2w16{});
    case 4: return f(V10Config<1, 2, 2, false, 0, false, 8, 4>{});
    case 5: return f(V10Config<1, 4, 2, false, 0, false, 8, 4>{});
    case 6: return f(V10n2t2{});
    case 7: return f(V10n2t4{});
    case 8: return f(V10n2t8{});
    case 9: return f(V10n2t2w16{});
    case 10: return f(V10Config<2, 2, 2, false, 0, false, 8, 4>{});
    case 11: return f(V10n1t2pdl{});
    case 12: return f(V10n2t2pdl{});
    default: return cudaErrorInvalidValue;
  }
}
constexpr int kV10Configs = 13;

// The launch shape of one candidate (configuration, warps per block) for N rows, and how it ranks, from the first
// sweep (H100): one wave first (every block resident: a second, partial wave left most SMs idle, e.g. 11008 rows
// with 8 warps per block), then the fewest 16-row tiles on the busiest SM (blocks spread evenly; 1 or 2 blocks per
// SM cost the time of 2), then the most warps per SM up to 16 (loads in flight: 4 warps per SM ran 1.5x slower
// than 8), then the fewest tiles per block.
struct V10Choice {
  bool ok = false;
  int multi_wave = 1, tiles_per_sm = 1 << 30, warps_per_sm = 0, blocks_per_sm = 0, tb = 0, warps = 0, index = -1;
  bool better_than(const V10Choice& o) const {
    if (!o.ok) return ok;
    if (multi_wave != o.multi_wave) return multi_wave < o.multi_wave;
    if (tiles_per_sm != o.tiles_per_sm) return tiles_per_sm < o.tiles_per_sm;
    if (std::min(warps_per_sm, 16) != std::min(o.warps_per_sm, 16)) return warps_per_sm > o.warps_per_sm;
    return tb < o.tb;
  }
};

inline int v10_sm_count() {
  static int sms[64] = {};
  const int dev = cached_device();
  if (sms[dev] == 0 && cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    sms[dev] = 0;
    return 1;
  }
  return sms[dev];
}

template <typename T, typename C>
cudaError_t v10_rank(int index, int N, int K, V10Choice* best, int min_warps = 1) {
  const int chunks = (K + 127) / 128;
  for (int w : {16, 8, 4, chunks < 4 ? chunks : 0}) {  // fewer than 4 warps only where K has fewer chunks
    if (w < min_warps || w > C::max_warps() || w > chunks) continue;
    int slots = 0;
    const cudaError_t err = C::template wave<T>(w, &slots);
    if (err == cudaErrorNotSupported) continue;
    if (err != cudaSuccess) return err;
    const int sms = v10_sm_count(), per_sm = std::max(1, slots / std::max(sms, 1));
    const int tiles = (N + 15) / 16, blocks = (tiles + C::tiles() - 1) / C::tiles();
    const int blocks_per_sm = (blocks + sms - 1) / sms;
    V10Choice c;
    c.ok = true;
    c.multi_wave = blocks > slots;
    c.tiles_per_sm = blocks_per_sm * C::tiles();
    c.warps_per_sm = std::min(blocks_per_sm, per_sm) * w;
    c.blocks_per_sm = blocks_per_sm;
    c.tb = C::tiles();
    c.warps = w;
    c.index = index;
    if (c.better_than(*best)) *best = c;
  }
  return cudaSuccess;
}

// The default: for batch <= 8 one n-tile, else two; tiles per block and warps per block by the ranking above
// (benchmarks/kernels.py --sweep-v10 measured every candidate; benchmarks/results/kernels_h100.md). Where it picks 2
// tiles and 8 warps per block with at least 2 blocks per SM, the launch is programmatic (C2P, sm_90): measured
// 0.2-0.8 us faster there (8192x8192 batch 1-16; 11008 and 14336 rows), slower with one block per SM (4096 rows).
// C2W (16 warps) is ranked last, so that it wins only where it fills the SMs with more warps than C2, C4 and C8.
template <typename T, typename C2, typename C2P, typename C4, typename C8, typename C2W>
cudaError_t launch_ranked(const T* x, const uint8_t* packed, const float* absmax, T* y, int B, int N, int K, int bs,
                          cudaStream_t s) {
  V10Choice best;
  cudaError_t err = v10_rank<T, C2>(2, N, K, &best);
  if (err == cudaSuccess) err = v10_rank<T, C4>(4, N, K, &best);
  if (err == cudaSuccess) err = v10_rank<T, C8>(8, N, K, &best);
  if (err == cudaSuccess) err = v10_rank<T, C2W>(3, N, K, &best, 16);
  if (err != cudaSuccess) return err;
  if (!best.ok) return cudaErrorNotSupported;
  if (best.index == 3) return C2W::template launch<T>(x, packed, absmax, y, B, N, K, bs, best.warps, s);
  if (best.index == 2 && best.warps == 8 && best.blocks_per_sm >= 2)
    return C2P::template launch<T>(x, packed, absmax, y, B, N, K, bs, best.warps, s);
  if (best.index == 2) return C2::template launch<T>(x, packed, absmax, y, B, N, K, bs, best.warps, s);
  if (best.index == 4) return C4::template launch<T>(x, packed, absmax, y, B, N, K, bs, best.warps, s);
  return C8::template launch<T>(x, packed, absmax, y, B, N, K, bs, best.warps, s);
}

template <typename T>
cudaError_t dispatch_v10(const T* x, const uint8_t* packed, const float* absmax, T* y, int B, int N, int K, int bs,
                         cudaStream_t s) {
  if (B <= 8)
    return launch_ranked<T, V10n1t2, V10n1t2pdl, V10n1t4, V10n1t8, V10n1t2w16>(x, packed, absmax, y, B, N, K, bs, s);
  return launch_ranked<T, V10n2t2, V10n2t2pdl, V10n2t4, V10n2t8, V10n2t2w16>(x, packed, absmax, y, B, N, K, bs, s);
}

}  // namespace

cudaError_t gemv_nf4_v10(DType t, const void* x, const uint8_t* packed, const float* absmax, void* y, int B, int N,
                         int K, int blocksize, cudaStream_t s) {
  return dispatch_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for (int b0 = 0; b0 < B; b0 += 16) {  // 16 batch rows per launch
      const cudaError_t err =
          dispatch_v10<T>(static_cast<const T*>(x) + static_cast<int64_t>(b0) * K, packed, absmax,
                          static_cast<T*>(y) + static_cast<int64_t>(b0) * N, std::min(16, B - b0), N, K, blocksize, s);
      if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
  });
}

int gemv_nf4_v10_configs() { return kV10Configs; }

cudaError_t gemv_nf4_v10_config(DType t, int config, const void* x, const uint8_t* packed, const float* absmax,
                                void* y, int B, int N, int K, int blocksize, int warps, cudaStream_t s) {
  if (t != DType::kFloat16) return cudaErrorInvalidValue;
  return with_v10_config(config, [&](auto cfg) {
    return decltype(cfg)::template launch<__half>(static_cast<const __half*>(x), packed, absmax,
                                                  static_cast<__half*>(y), B, N, K, blocksize, warps, s);
  });
}

}  // namespace course_kernels
