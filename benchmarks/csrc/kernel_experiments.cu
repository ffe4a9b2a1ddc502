// Benchmark-only CUDA experiments (benchmarks/kernels.py --sweep, --floor, --profile), kept out of the
// learner's build: NF4 GEMV v8 in other configurations than the course's dispatch uses (rows per warp, loads
// in flight, load kinds, activation prefetch, programmatic dependent launch, register budgets), v8 fed by the
// bulk-copy engine (sm_90 only), and a read-floor probe. Every configuration reuses the product's v8 kernel
// template (course_lib/kernels/csrc/gemv_nf4_v8.cuh); sm_90 only.
#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "gemv_nf4_v8.cuh"

namespace course_kernels {
namespace {

void check_cuda(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

bool v8_ok(cudaError_t err) {
  if (err == cudaErrorNotSupported) return false;
  C10_CUDA_CHECK(err);
  return true;
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

// v8 bulk launch: one block per SM with as many stages (2-4) as shared memory allows; false when even two
// stages of 8 rows do not fit (K above ~20000 on an H200) or the pointers are not 16-byte aligned.
template <typename T, int B>
bool launch_v8_bulk(const T* x, const uint8_t* packed, const float* absmax, T* y, int N, int K, int blocksize,
                    cudaStream_t stream, int max_stages = 4) {
  auto kern = gemv_nf4_v8_bulk_kernel<T, B>;
  static int optin[64] = {0};  // 0: not asked yet, -1: unavailable
  static int sm_count[64] = {0};
  const int dev = cached_device();
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

// Benchmark only (benchmarks/kernels.py --sweep): v8 at batch 1, fp16, in other configurations.
torch::Tensor gemv_nf4_v8_variant(torch::Tensor x, torch::Tensor packed, torch::Tensor absmax, int64_t N,
                                  int64_t blocksize, int64_t variant) {
  check_cuda(x, "x");
  check_cuda(packed, "packed");
  check_cuda(absmax, "absmax");
  TORCH_CHECK(x.size(0) == 1 && x.scalar_type() == torch::kFloat16, "the v8 sweep runs batch 1, float16");
  const c10::cuda::CUDAGuard guard(x.device());
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
    case 0: ok = v8_ok(launch_v8<__half, 1, 4, 1, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 1: ok = v8_ok(launch_v8<__half, 1, 4, 1, 0>(xp, p, a, yp, n, K, bs, st)); break;
    case 2: ok = v8_ok(launch_v8<__half, 1, 4, 1, 2>(xp, p, a, yp, n, K, bs, st)); break;
    case 3: ok = v8_ok(launch_v8<__half, 1, 4, 1, 3>(xp, p, a, yp, n, K, bs, st)); break;
    case 4: ok = v8_ok(launch_v8<__half, 1, 4, 2, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 5: ok = v8_ok(launch_v8<__half, 1, 2, 1, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 6: ok = v8_ok(launch_v8<__half, 1, 2, 2, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 7: ok = v8_ok(launch_v8<__half, 1, 8, 1, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 8: ok = v8_ok(launch_v8<__half, 1, 2, 4, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 9: ok = v8_ok(launch_v8<__half, 1, 1, 4, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 10: ok = launch_v8_bulk<__half, 1>(xp, p, a, yp, n, K, bs, st); break;
    case 11: ok = launch_v8_bulk<__half, 1>(xp, p, a, yp, n, K, bs, st, 2); break;  // more room for L1
    case 12: ok = v8_ok(launch_v8<__half, 1, 4, 1, 1, true>(xp, p, a, yp, n, K, bs, st)); break;
    case 13: ok = v8_ok(launch_v8<__half, 1, 4, 2, 1, true>(xp, p, a, yp, n, K, bs, st)); break;
    case 14: ok = v8_ok(launch_v8<__half, 1, 4, 2, 1, false, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 15: ok = v8_ok(launch_v8<__half, 1, 4, 2, 1, false, 2>(xp, p, a, yp, n, K, bs, st)); break;
    case 16: ok = v8_ok(launch_v8<__half, 1, 4, 1, 1, true, 2>(xp, p, a, yp, n, K, bs, st)); break;
    case 17: ok = v8_ok(launch_v8<__half, 1, 8, 1, 1, true>(xp, p, a, yp, n, K, bs, st)); break;
    case 18: ok = v8_ok(launch_v8<__half, 1, 2, 1, 1, true>(xp, p, a, yp, n, K, bs, st)); break;
    case 19: ok = v8_ok(launch_v8<__half, 1, 4, 1, 1, true, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 20: ok = v8_ok(launch_v8<__half, 1, 8, 1, 1, true, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 21: ok = v8_ok(launch_v8<__half, 1, 2, 1, 1, true, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 22: ok = v8_ok(launch_v8<__half, 1, 4, 1, 1, false, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 23: ok = v8_ok(launch_v8<__half, 1, 4, 1, 1, true, 2, 3>(xp, p, a, yp, n, K, bs, st)); break;
    case 24: ok = v8_ok(launch_v8<__half, 1, 4, 1, 1, true, 0, 3>(xp, p, a, yp, n, K, bs, st)); break;
    case 25: ok = v8_ok(launch_v8<__half, 1, 8, 1, 1, true, 2, 2>(xp, p, a, yp, n, K, bs, st)); break;
    case 26: ok = v8_ok(launch_v8<__half, 1, 4, 1, 1, false, 1, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 27: ok = v8_ok(launch_v8<__half, 1, 4, 1, 1, false, 0, 1>(xp, p, a, yp, n, K, bs, st)); break;
    case 28: ok = v8_ok(launch_v8<__half, 1, 8, 1, 1, false, 1, 1>(xp, p, a, yp, n, K, bs, st)); break;
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

}  // namespace
}  // namespace course_kernels

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemv_nf4_v8_variant", &course_kernels::gemv_nf4_v8_variant,
        "NF4 GEMV v8 in other configurations, batch 1 fp16 (variant 0..28)");
  m.def("stream_read", &course_kernels::stream_read, "read a byte buffer once, per-block 32-bit sums (the read floor)");
}
