// C++ (CPU) kernels of course_lib.kernels: the twins of the CUDA kernels, same layouts (csrc/launch.h). The
// kernels take float32, contiguous inputs; the ops at the end (the CPU implementations of the course_lib::
// custom ops that course_lib/kernels/ops.py defines) convert to float32 and back to x's dtype. Rows run in
// parallel on PyTorch's own thread pool (at::parallel_for), so no OpenMP flags are needed to build.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "nf4_code.h"

#include <array>
#include <cmath>
#include <vector>

namespace {

void check_cpu(const torch::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, name, " has the wrong dtype");
}

std::vector<torch::Tensor> quantize_rows_int8(torch::Tensor x) {
  check_cpu(x, "x", torch::kFloat32);
  TORCH_CHECK(x.dim() == 2, "x must be 2-D");
  const int64_t M = x.size(0), K = x.size(1);
  auto q = torch::empty({M, K}, x.options().dtype(torch::kInt8));
  auto absmax = torch::empty({M}, x.options());
  const float* xp = x.data_ptr<float>();
  int8_t* qp = q.data_ptr<int8_t>();
  float* ap = absmax.data_ptr<float>();
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const float* row = xp + m * K;
      float amax = 0.f;
      for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(row[k]));
      ap[m] = amax;
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      for (int64_t k = 0; k < K; ++k) qp[m * K + k] = static_cast<int8_t>(std::nearbyint(row[k] * inv));
    }
  });
  return {q, absmax};
}

// byte -> (code of the high nibble, code of the low nibble): one lookup per two weights
std::array<float, 512> pair_table() {
  static constexpr float c[16] = COURSE_NF4_CODE;
  std::array<float, 512> table{};
  for (int b = 0; b < 256; ++b) {
    table[2 * b] = c[b >> 4];
    table[2 * b + 1] = c[b & 15];
  }
  return table;
}

torch::Tensor dequantize_nf4(torch::Tensor packed, torch::Tensor absmax, int64_t n, int64_t blocksize) {
  check_cpu(packed, "packed", torch::kUInt8);
  check_cpu(absmax, "absmax", torch::kFloat32);
  const auto table = pair_table();
  auto out = torch::empty({n}, absmax.options());
  const uint8_t* pp = packed.data_ptr<uint8_t>();
  const float* ap = absmax.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t n_bytes = (n + 1) / 2;
  at::parallel_for(0, n_bytes, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t i = 2 * b;
      op[i] = table[2 * pp[b]] * ap[i / blocksize];
      if (i + 1 < n) op[i + 1] = table[2 * pp[b] + 1] * ap[(i + 1) / blocksize];
    }
  });
  return out;
}

torch::Tensor dequantize_int4(torch::Tensor packed, torch::Tensor scale, torch::Tensor zero, int64_t group) {
  check_cpu(packed, "packed", torch::kUInt8);
  check_cpu(scale, "scale", torch::kFloat32);
  check_cpu(zero, "zero", torch::kUInt8);
  const int64_t N = packed.size(0), K = packed.size(1) * 2, groups = K / group;
  auto out = torch::empty({N, K}, scale.options());
  const uint8_t* pp = packed.data_ptr<uint8_t>();
  const float* sp = scale.data_ptr<float>();
  const uint8_t* zp = zero.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t k = 0; k < K; k += 2) {
        const int64_t g = n * groups + k / group;
        const uint8_t byte = pp[n * (K / 2) + k / 2];
        const float s = sp[g], z = static_cast<float>(zp[g]);
        op[n * K + k] = (static_cast<float>(byte >> 4) - z) * s;
        op[n * K + k + 1] = (static_cast<float>(byte & 15) - z) * s;
      }
    }
  });
  return out;
}

// y[B, N] = x[B, K] @ W^T: each weight row is decoded once into a small buffer (one block at a time)
// and used for every activation row, so decoding costs are shared across the batch.
torch::Tensor gemv_nf4(torch::Tensor x, torch::Tensor packed, torch::Tensor absmax, int64_t N, int64_t blocksize) {
  check_cpu(x, "x", torch::kFloat32);
  check_cpu(packed, "packed", torch::kUInt8);
  check_cpu(absmax, "absmax", torch::kFloat32);
  TORCH_CHECK(blocksize % 2 == 0, "blocksize must be even");
  const auto table = pair_table();
  const int64_t B = x.size(0), K = x.size(1);
  TORCH_CHECK((N * K) % blocksize == 0 || K % 2 == 0, "unsupported shape");
  auto y = torch::zeros({B, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const uint8_t* pp = packed.data_ptr<uint8_t>();
  const float* ap = absmax.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> w(K);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t base = n * K;  // flat index of the row's first weight
      for (int64_t k = 0; k < K; ++k) {
        const int64_t i = base + k;
        const uint8_t byte = pp[i / 2];
        w[k] = table[2 * byte + (i & 1)] * ap[i / blocksize];
      }
      for (int64_t b = 0; b < B; ++b) {
        const float* xr = xp + b * K;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < K; ++k) acc += w[k] * xr[k];
        yp[b * N + n] = acc;
      }
    }
  });
  return y;
}

torch::Tensor gemv_int4(torch::Tensor x, torch::Tensor packed, torch::Tensor scale, torch::Tensor zero,
                        int64_t group) {
  check_cpu(x, "x", torch::kFloat32);
  check_cpu(packed, "packed", torch::kUInt8);
  check_cpu(scale, "scale", torch::kFloat32);
  check_cpu(zero, "zero", torch::kUInt8);
  const int64_t B = x.size(0), K = x.size(1), N = packed.size(0), groups = K / group;
  auto y = torch::zeros({B, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const uint8_t* pp = packed.data_ptr<uint8_t>();
  const float* sp = scale.data_ptr<float>();
  const uint8_t* zp = zero.data_ptr<uint8_t>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> w(K);
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t k = 0; k < K; k += 2) {
        const int64_t g = n * groups + k / group;
        const uint8_t byte = pp[n * (K / 2) + k / 2];
        const float s = sp[g], z = static_cast<float>(zp[g]);
        w[k] = (static_cast<float>(byte >> 4) - z) * s;
        w[k + 1] = (static_cast<float>(byte & 15) - z) * s;
      }
      for (int64_t b = 0; b < B; ++b) {
        const float* xr = xp + b * K;
        float acc = 0.f;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < K; ++k) acc += w[k] * xr[k];
        yp[b * N + n] = acc;
      }
    }
  });
  return y;
}

// Ternary weights: a sum of the activations where w = +1 minus the sum where w = -1; no multiplies
// by weights (the only multiply is the per-tensor scale at the end).
torch::Tensor gemv_ternary(torch::Tensor x, torch::Tensor packed, double scale) {
  check_cpu(x, "x", torch::kFloat32);
  check_cpu(packed, "packed", torch::kUInt8);
  const int64_t B = x.size(0), K = x.size(1), N = packed.size(0);
  auto y = torch::zeros({B, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const uint8_t* pp = packed.data_ptr<uint8_t>();
  float* yp = y.data_ptr<float>();
  const float s = static_cast<float>(scale);
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> codes(K);  // the row's codes, decoded once and reused for every batch row
    for (int64_t n = begin; n < end; ++n) {
      const uint8_t* row = pp + n * (K / 4);
      for (int64_t j = 0; j < K / 4; ++j)
        for (int k = 0; k < 4; ++k) codes[4 * j + k] = (row[j] >> (2 * k)) & 3;
      for (int64_t b = 0; b < B; ++b) {
        const float* xr = xp + b * K;
        float plus = 0.f, minus = 0.f;
#pragma omp simd reduction(+ : plus, minus)
        for (int64_t k = 0; k < K; ++k) {
          plus += (codes[k] == 2) ? xr[k] : 0.f;
          minus += (codes[k] == 0) ? xr[k] : 0.f;
        }
        yp[b * N + n] = (plus - minus) * s;
      }
    }
  });
  return y;
}

// ------------------------------------------------------------------------------------------------
// the ops: float32 in, the caller's dtype out
torch::Tensor f32(const torch::Tensor& t) { return t.to(torch::kFloat32).contiguous(); }

std::tuple<torch::Tensor, torch::Tensor> quantize_rows_int8_op(const torch::Tensor& x) {
  auto out = quantize_rows_int8(f32(x));
  return {out[0], out[1]};
}

torch::Tensor dequantize_nf4_op(const torch::Tensor& packed, const torch::Tensor& absmax, int64_t n, int64_t blocksize,
                                at::ScalarType dtype) {
  return dequantize_nf4(packed.contiguous(), absmax.contiguous(), n, blocksize).to(dtype);
}

torch::Tensor dequantize_int4_op(const torch::Tensor& packed, const torch::Tensor& scale, const torch::Tensor& zero,
                                 int64_t group, at::ScalarType dtype) {
  return dequantize_int4(packed.contiguous(), scale.contiguous(), zero.contiguous(), group).to(dtype);
}

torch::Tensor gemv_nf4_op(const torch::Tensor& x, const torch::Tensor& packed, const torch::Tensor& absmax, int64_t N,
                          int64_t blocksize, int64_t /*version: CUDA only*/) {
  return gemv_nf4(f32(x), packed.contiguous(), absmax.contiguous(), N, blocksize).to(x.scalar_type());
}

torch::Tensor gemv_int4_op(const torch::Tensor& x, const torch::Tensor& packed, const torch::Tensor& scale,
                           const torch::Tensor& zero, int64_t group, int64_t /*version: CUDA only*/) {
  return gemv_int4(f32(x), packed.contiguous(), scale.contiguous(), zero.contiguous(), group).to(x.scalar_type());
}

torch::Tensor gemv_ternary_op(const torch::Tensor& x, const torch::Tensor& packed, double scale) {
  return gemv_ternary(f32(x), packed.contiguous(), scale).to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(course_lib, CPU, m) {
  m.impl("quantize_rows_int8", &quantize_rows_int8_op);
  m.impl("dequantize_nf4", &dequantize_nf4_op);
  m.impl("dequantize_int4", &dequantize_int4_op);
  m.impl("gemv_nf4", &gemv_nf4_op);
  m.impl("gemv_int4", &gemv_int4_op);
  m.impl("gemv_ternary", &gemv_ternary_op);
}
