// The CUDA implementations of the course_lib:: custom ops (schemas and fake implementations in
// course_lib/kernels/ops.py): argument checks that need no device-to-host copy, output allocation, the choice
// of kernel version for this GPU, and calls of the launchers in launch.h. Host code only: the kernels live in
// the .cu files, which include no torch header.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "launch.h"

namespace {

namespace ck = course_kernels;

// Numbers enter error messages as strings: streaming an integer into TORCH_CHECK's message goes through the
// C++ library's locale facets, which crashed (SIGSEGV) where the extension's libstdc++ differed from torch's
// (seen on the GPU machine); std::to_string does not use them.
std::string num(int64_t v) { return std::to_string(v); }

std::string shape_of(const at::Tensor& t) {
  std::string out = "[";
  for (int64_t d = 0; d < t.dim(); ++d) out += (d ? ", " : "") + num(t.size(d));
  return out + "]";
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA error ", cudaGetErrorString(err));
}

void check_cuda(const at::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
}

void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* name) {
  TORCH_CHECK(a.device() == b.device(), name, " is on ", b.device(), " but x (or packed) is on ", a.device());
}

ck::DType dtype_of(at::ScalarType t, const char* op, bool allow_float) {
  if (t == at::kHalf) return ck::DType::kFloat16;
  if (t == at::kBFloat16) return ck::DType::kBFloat16;
  TORCH_CHECK(allow_float && t == at::kFloat, op, ": dtype must be float16 or bfloat16",
              allow_float ? " or float32" : "", ", got ", t);
  return ck::DType::kFloat32;
}

ck::Arch arch_here() {
  ck::Arch arch;
  check_launch(ck::current_arch(&arch), "course_lib kernels");
  return arch;
}

// Batch sizes with a compiled kernel; other sizes are padded with zero rows up to the next one.
int padded_batch(int B) {
  for (int c : {1, 2, 3, 4, 8, 16})
    if (B <= c) return c;
  return 16;
}

// Runs `launch(x_chunk, y_chunk, padded_batch)` on chunks of at most 16 rows, padding each chunk.
template <typename F>
at::Tensor batched(const at::Tensor& x, int64_t N, F launch) {
  const int B = x.size(0);
  auto y = at::empty({B, N}, x.options());
  for (int b0 = 0; b0 < B; b0 += 16) {
    const int nb = std::min(16, B - b0);
    const int padded = padded_batch(nb);
    at::Tensor xc = x.narrow(0, b0, nb);
    if (padded != nb) {
      auto xp = at::zeros({padded, x.size(1)}, x.options());
      xp.narrow(0, 0, nb).copy_(xc);
      xc = xp;
    }
    const bool direct = padded == nb && B <= 16;
    auto yc = direct ? y : at::empty({padded, N}, x.options());
    launch(xc, yc, padded);
    if (!direct) y.narrow(0, b0, nb).copy_(yc.narrow(0, 0, nb));
  }
  return y;
}

std::tuple<at::Tensor, at::Tensor> quantize_rows_int8(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2, "x must be 2-D, got ", x.dim(), " dimensions");
  TORCH_CHECK(x.is_cuda() && x.is_contiguous(), "x must be a contiguous CUDA tensor");
  const auto t = dtype_of(x.scalar_type(), "quantize_rows_int8", true);
  const c10::cuda::CUDAGuard guard(x.device());
  const int M = x.size(0), K = x.size(1);
  auto q = at::empty({M, K}, x.options().dtype(at::kChar));
  auto absmax = at::empty({M}, x.options().dtype(at::kFloat));
  check_launch(ck::quantize_rows_int8(t, x.data_ptr(), q.data_ptr<int8_t>(), absmax.data_ptr<float>(), M, K,
                                      c10::cuda::getCurrentCUDAStream()),
               "quantize_rows_int8");
  return {q, absmax};
}

at::Tensor dequantize_nf4(const at::Tensor& packed, const at::Tensor& absmax, int64_t n, int64_t blocksize,
                          at::ScalarType dtype) {
  check_cuda(packed, "packed", at::kByte);
  check_cuda(absmax, "absmax", at::kFloat);
  check_same_device(packed, absmax, "absmax");
  TORCH_CHECK(blocksize >= 2 && blocksize % 2 == 0, "blocksize must be even and >= 2, got ", num(blocksize));
  TORCH_CHECK(packed.numel() == (n + 1) / 2, "packed must hold ceil(n / 2) = ", num((n + 1) / 2), " bytes, got ",
              num(packed.numel()));
  TORCH_CHECK(absmax.numel() == (n + blocksize - 1) / blocksize, "absmax must hold ceil(n / blocksize) values");
  const auto t = dtype_of(dtype, "dequantize_nf4", true);
  const c10::cuda::CUDAGuard guard(packed.device());
  auto out = at::empty({n}, packed.options().dtype(dtype));
  check_launch(ck::dequantize_nf4(t, packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(), out.data_ptr(), n,
                                  static_cast<int>(blocksize), c10::cuda::getCurrentCUDAStream()),
               "dequantize_nf4");
  return out;
}

at::Tensor dequantize_int4(const at::Tensor& packed, const at::Tensor& scale, const at::Tensor& zero, int64_t group,
                           at::ScalarType dtype) {
  check_cuda(packed, "packed", at::kByte);
  check_cuda(scale, "scale", at::kFloat);
  check_cuda(zero, "zero", at::kByte);
  check_same_device(packed, scale, "scale");
  check_same_device(packed, zero, "zero");
  const int64_t N = packed.size(0), K = packed.size(1) * 2;
  TORCH_CHECK(packed.dim() == 2 && group >= 2 && group % 2 == 0 && K % group == 0,
              "group_size must be even and divide K = ", num(K), ", got ", num(group));
  TORCH_CHECK(scale.numel() == N * (K / group) && zero.numel() == N * (K / group),
              "scale and zero must have shape [N, K / group_size]");
  const auto t = dtype_of(dtype, "dequantize_int4", true);
  const c10::cuda::CUDAGuard guard(packed.device());
  auto out = at::empty({N, K}, packed.options().dtype(dtype));
  check_launch(ck::dequantize_int4(t, packed.data_ptr<uint8_t>(), scale.data_ptr<float>(), zero.data_ptr<uint8_t>(),
                                   out.data_ptr(), N, static_cast<int>(K), static_cast<int>(group),
                                   c10::cuda::getCurrentCUDAStream()),
               "dequantize_int4");
  return out;
}

void check_gemv_x(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda() && x.is_contiguous(), op, ": x must be a contiguous CUDA tensor");
  TORCH_CHECK(x.dim() == 2 && x.size(0) >= 1, op, ": x must be 2-D [batch, in_features], got ", shape_of(x));
}

bool tensor_core_shape(const ck::Arch& arch, int K, int64_t blocksize) {
  return ck::has_mma(arch) && K % 64 == 0 && blocksize % 64 == 0;
}

// The default version for this GPU and batch (version 0). Where the code and the GPU have mma.sync (sm_80+) and the
// shape suits tensor cores: v10 at batch 1-16 in bf16 (1.2-1.8x v4 and v8 at batch 1-2, which widen to fp32), in
// fp16 from batch 2, and at batch 1 from 10240 rows and with at most 4096 rows of at least 4096 values (few blocks:
// v10 splits each row over 16 warps), where it measured faster than v8; v7 above batch 16 (v10 would read the
// weights once per 16 rows). Elsewhere v8 below batch 4 in fp16 (v4 in bf16, where v8's fp32 widening was not
// faster everywhere) and v4 from batch 4 (above batch 4 it dequantizes, then calls cuBLAS). Measurements: H100,
// benchmarks/results/kernels_h100.md.
int64_t default_nf4_version(const ck::Arch& arch, int B, int N, int K, int blocksize, bool fp16) {
  if (tensor_core_shape(arch, K, blocksize)) {
    if (B > 16) return 7;
    const bool v10_batch1 = N >= 10240 || (N <= 4096 && K >= 4096);
    if (!fp16 || B >= 2 || v10_batch1) return 10;
  }
  if (B >= 4) return 4;
  return fp16 ? 8 : 4;
}

at::Tensor gemv_nf4(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& absmax, int64_t N,
                    int64_t blocksize, int64_t version) {
  check_gemv_x(x, "gemv_nf4");
  check_cuda(packed, "packed", at::kByte);
  check_cuda(absmax, "absmax", at::kFloat);
  check_same_device(x, packed, "packed");
  check_same_device(x, absmax, "absmax");
  const int B = x.size(0), K = x.size(1);
  TORCH_CHECK(K % 32 == 0 && blocksize % 32 == 0, "gemv_nf4 (CUDA) needs K % 32 == 0 and blocksize % 32 == 0, got K = ",
              num(K), ", blocksize = ", num(blocksize));
  TORCH_CHECK(packed.numel() == N * K / 2, "packed must hold N * K / 2 = ", num(N * K / 2), " bytes, got ",
              num(packed.numel()));
  TORCH_CHECK(absmax.numel() == (N * K + blocksize - 1) / blocksize, "absmax must hold ceil(N * K / blocksize) values");
  TORCH_CHECK(version >= 0 && version <= 10, "version must be 0 (the default) or 1..10, got ", num(version));
  const auto t = dtype_of(x.scalar_type(), "gemv_nf4", false);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto arch = arch_here();
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int n = static_cast<int>(N), bs = static_cast<int>(blocksize);
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const float* a = absmax.data_ptr<float>();
  if (version == 0) version = default_nf4_version(arch, B, n, K, bs, x.scalar_type() == at::kHalf);
  if (version == 1) {
    auto y = at::empty({B, N}, x.options());
    check_launch(ck::gemv_nf4_naive(t, x.data_ptr(), p, a, y.data_ptr(), B, n, K, bs, stream), "gemv_nf4 v1");
    return y;
  }
  if (version == 10) {
    if (tensor_core_shape(arch, K, blocksize)) {
      auto y = at::empty({B, N}, x.options());
      const cudaError_t err = ck::gemv_nf4_v10(t, x.data_ptr(), p, a, y.data_ptr(), B, n, K, bs, stream);
      if (err != cudaErrorNotSupported) {
        check_launch(err, "gemv_nf4 v10");
        return y;
      }
    }
    // no tensor-core code for this GPU or shape: what the default runs without tensor cores
    version = default_nf4_version(ck::Arch{75, 75}, B, n, K, bs, x.scalar_type() == at::kHalf);
  }
  if (version == 7) {
    if (tensor_core_shape(arch, K, blocksize)) {
      auto y = at::empty({B, N}, x.options());
      check_launch(ck::gemv_nf4_mma(t, x.data_ptr(), p, a, y.data_ptr(), B, n, K, bs, stream), "gemv_nf4 v7");
      return y;
    }
    version = 4;  // no tensor-core code for this GPU or shape
  }
  if ((version == 8 || version == 9) && B <= 4) {
    auto y = at::empty({B, N}, x.options());
    const cudaError_t err = ck::gemv_nf4_v8(t, x.data_ptr(), p, a, y.data_ptr(), B, n, K, bs, version == 9, stream);
    if (err != cudaErrorNotSupported) {
      check_launch(err, "gemv_nf4 v8");
      return y;
    }
    version = 4;  // no room for the 64 KB table on this GPU
  }
  if (version >= 4 && B > 4) {
    // Above batch 4 the CUDA-core kernels lose to a tensor-core GEMM: dequantize once, then cuBLAS.
    auto w = dequantize_nf4(packed, absmax, N * K, blocksize, x.scalar_type()).view({N, K});
    return at::matmul(x, w.t());
  }
  TORCH_CHECK(version != 2 || B == 1, "gemv_nf4 version 2 handles batch 1 only, got batch ", num(B));
  return batched(x, N, [&](const at::Tensor& xc, at::Tensor& yc, int pb) {
    check_launch(ck::gemv_nf4_rows(t, static_cast<int>(version), xc.data_ptr(), p, a, yc.data_ptr(), pb, n, K, bs,
                                   stream),
                 "gemv_nf4");
  });
}

at::Tensor gemv_int4(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale, const at::Tensor& zero,
                     int64_t group, int64_t version) {
  check_gemv_x(x, "gemv_int4");
  check_cuda(packed, "packed", at::kByte);
  check_cuda(scale, "scale", at::kFloat);
  check_cuda(zero, "zero", at::kByte);
  check_same_device(x, packed, "packed");
  check_same_device(x, scale, "scale");
  check_same_device(x, zero, "zero");
  const int B = x.size(0), K = x.size(1), N = packed.size(0);
  TORCH_CHECK(packed.dim() == 2 && packed.size(1) * 2 == K, "packed must have shape [N, K / 2] with K = ", num(K));
  TORCH_CHECK(group % 32 == 0 && K % group == 0, "gemv_int4 (CUDA) needs group_size % 32 == 0 dividing K, got ",
              num(group));
  TORCH_CHECK(version == 0 || version == 4 || version == 6, "version must be 0 (the default), 4 or 6, got ", num(version));
  const auto t = dtype_of(x.scalar_type(), "gemv_int4", false);
  const c10::cuda::CUDAGuard guard(x.device());
  if (B > 4) {
    auto w = dequantize_int4(packed, scale, zero, group, x.scalar_type());
    return at::matmul(x, w.t());
  }
  auto stream = c10::cuda::getCurrentCUDAStream();
  return batched(x, N, [&](const at::Tensor& xc, at::Tensor& yc, int pb) {
    check_launch(ck::gemv_int4_rows(t, version == 6 ? 6 : 4, xc.data_ptr(), packed.data_ptr<uint8_t>(),
                                    scale.data_ptr<float>(), zero.data_ptr<uint8_t>(), yc.data_ptr(), pb, N, K,
                                    static_cast<int>(group), stream),
                 "gemv_int4");
  });
}

at::Tensor gemv_ternary(const at::Tensor& x, const at::Tensor& packed, double scale) {
  check_gemv_x(x, "gemv_ternary");
  check_cuda(packed, "packed", at::kByte);
  check_same_device(x, packed, "packed");
  const int K = x.size(1), N = packed.size(0);
  TORCH_CHECK(packed.dim() == 2 && packed.size(1) * 4 == K && K % 64 == 0,
              "gemv_ternary (CUDA) needs packed [N, K / 4] and K % 64 == 0, got K = ", num(K));
  const auto t = dtype_of(x.scalar_type(), "gemv_ternary", false);
  const c10::cuda::CUDAGuard guard(x.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  return batched(x, N, [&](const at::Tensor& xc, at::Tensor& yc, int pb) {
    check_launch(ck::gemv_ternary(t, xc.data_ptr(), packed.data_ptr<uint8_t>(), static_cast<float>(scale),
                                  yc.data_ptr(), pb, N, K, stream),
                 "gemv_ternary");
  });
}

// v10 in one of its development configurations (benchmarks/kernels.py --sweep-v10; float16 only): the kernel
// as configured, with no fallback, so that a configuration that cannot run here raises.
at::Tensor gemv_nf4_v10_config(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& absmax, int64_t N,
                               int64_t blocksize, int64_t config, int64_t warps) {
  check_gemv_x(x, "gemv_nf4_v10_config");
  check_cuda(x, "x", at::kHalf);
  check_cuda(packed, "packed", at::kByte);
  check_cuda(absmax, "absmax", at::kFloat);
  const int B = x.size(0), K = x.size(1);
  TORCH_CHECK(packed.numel() == N * K / 2 && absmax.numel() == (N * K + blocksize - 1) / blocksize,
              "packed and absmax must hold N * K / 2 bytes and ceil(N * K / blocksize) values");
  TORCH_CHECK(config >= 0 && config < ck::gemv_nf4_v10_configs(), "config must be in 0..",
              num(ck::gemv_nf4_v10_configs() - 1), ", got ", num(config));
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty({B, N}, x.options());
  check_launch(ck::gemv_nf4_v10_config(ck::DType::kFloat16, static_cast<int>(config), x.data_ptr(),
                                       packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(), y.data_ptr(), B,
                                       static_cast<int>(N), K, static_cast<int>(blocksize), static_cast<int>(warps),
                                       c10::cuda::getCurrentCUDAStream()),
               "gemv_nf4_v10_config");
  return y;
}

// [compute capability of the current device, architecture of the code that runs there], e.g. [90, 75] for a
// "7.5+PTX" build on an H100.
std::vector<int64_t> cuda_arch() {
  const auto arch = arch_here();
  return {arch.device, arch.code};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(course_lib, m) {
  m.def("cuda_arch() -> int[]", &cuda_arch);
  m.def("gemv_nf4_v10_config(Tensor x, Tensor packed, Tensor absmax, int out_features, int blocksize, int config, "
        "int warps) -> Tensor",
        &gemv_nf4_v10_config);
}

TORCH_LIBRARY_IMPL(course_lib, CUDA, m) {
  m.impl("quantize_rows_int8", &quantize_rows_int8);
  m.impl("dequantize_nf4", &dequantize_nf4);
  m.impl("dequantize_int4", &dequantize_int4);
  m.impl("gemv_nf4", &gemv_nf4);
  m.impl("gemv_int4", &gemv_int4);
  m.impl("gemv_ternary", &gemv_ternary);
}
