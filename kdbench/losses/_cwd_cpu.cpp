// The CWD forward on a CPU in one pass over each row: kdbench/losses/_native.py builds it at
// set-up; kdbench/losses/cwd.py uses it for float32 maps when it is there.
//
// For each row r of the (N*C, H*W) maps S and T (float32, contiguous), with t = (T - max T) / tau
// and s = (S - max S) / tau, e = exp(.), Z = sum(e):
//   kl[r]        = sum_j p_T (t - s) + log Z_S - log Z_T        (KL(p_T || p_S) of the row)
//   direction[r] = p_S - p_T                                     (d KL / d s, per element)
// Each row is read from memory once (its exponentials stay in a row buffer in cache); rows are
// independent, so the result does not depend on how rows are split over threads. The vector
// code is ATen's own (at::vec, the exponential PyTorch's softmax uses); no -ffast-math, so the
// arithmetic is evaluated as written (t - s elementwise: a per-row shift cancels exactly).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <vector>

namespace {
using Vec = at::vec::Vectorized<float>;

float row_max(const float* x, int64_t length) {
  float top = x[0];
  int64_t j = 0;
  if (length >= Vec::size()) {
    Vec acc = Vec::loadu(x);
    for (j = Vec::size(); j + Vec::size() <= length; j += Vec::size()) acc = at::vec::maximum(acc, Vec::loadu(x + j));
    top = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, acc);
  }
  for (; j < length; ++j) top = (x[j] > top || std::isnan(x[j])) ? x[j] : top;
  return top;
}

float sum_all(Vec acc) {
  return at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, acc);
}
}  // namespace

std::vector<torch::Tensor> cwd_forward(const torch::Tensor& S, const torch::Tensor& T, double tau,
                                       bool with_direction) {
  TORCH_CHECK(S.dim() == 2 && S.sizes() == T.sizes(), "cwd_forward: two (rows, length) maps of one shape");
  TORCH_CHECK(S.scalar_type() == torch::kFloat32 && T.scalar_type() == torch::kFloat32, "cwd_forward: float32");
  TORCH_CHECK(S.is_contiguous() && T.is_contiguous() && S.device().is_cpu(), "cwd_forward: contiguous CPU maps");
  const int64_t rows = S.size(0), length = S.size(1);
  // Without a backward to feed, the direction goes to a per-thread row buffer and is dropped.
  auto direction = with_direction ? torch::empty_like(S) : torch::empty({0}, S.options());
  auto kl = torch::empty({rows}, S.options().dtype(torch::kFloat64));
  const float* s = S.data_ptr<float>();
  const float* t = T.data_ptr<float>();
  float* d = with_direction ? direction.data_ptr<float>() : nullptr;
  double* k = kl.data_ptr<double>();
  const float inv_tau = static_cast<float>(1.0 / tau);
  const int64_t V = Vec::size();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(2 * length);
    float* e_T = buffer.data();
    for (int64_t r = begin; r < end; ++r) {
      const float* s_r = s + r * length;
      const float* t_r = t + r * length;
      float* d_r = with_direction ? d + r * length : e_T + length;
      const float max_S = row_max(s_r, length), max_T = row_max(t_r, length);
      const Vec v_max_S(max_S), v_max_T(max_T), v_inv(inv_tau);
      Vec v_z_S(0.f), v_z_T(0.f);
      int64_t j = 0;
      for (; j + V <= length; j += V) {
        const Vec a = ((Vec::loadu(t_r + j) - v_max_T) * v_inv).exp_u20();
        const Vec b = ((Vec::loadu(s_r + j) - v_max_S) * v_inv).exp_u20();
        a.store(e_T + j);
        b.store(d_r + j);
        v_z_T = v_z_T + a;
        v_z_S = v_z_S + b;
      }
      float z_T = sum_all(v_z_T), z_S = sum_all(v_z_S);
      for (; j < length; ++j) {
        e_T[j] = std::exp((t_r[j] - max_T) * inv_tau);
        d_r[j] = std::exp((s_r[j] - max_S) * inv_tau);
        z_T += e_T[j];
        z_S += d_r[j];
      }
      const float inv_S = 1.f / z_S, inv_T = 1.f / z_T;
      const Vec v_inv_S(inv_S), v_inv_T(inv_T);
      Vec v_cross(0.f);
      for (j = 0; j + V <= length; j += V) {
        const Vec p_T = Vec::loadu(e_T + j) * v_inv_T;
        const Vec gap = (Vec::loadu(t_r + j) - v_max_T) * v_inv - (Vec::loadu(s_r + j) - v_max_S) * v_inv;
        v_cross = at::vec::fmadd(p_T, gap, v_cross);
        (Vec::loadu(d_r + j) * v_inv_S - p_T).store(d_r + j);
      }
      float cross = sum_all(v_cross);
      for (; j < length; ++j) {
        const float p_T = e_T[j] * inv_T;
        cross += p_T * ((t_r[j] - max_T) * inv_tau - (s_r[j] - max_S) * inv_tau);
        d_r[j] = d_r[j] * inv_S - p_T;
      }
      k[r] = static_cast<double>(cross) + std::log(static_cast<double>(z_S)) - std::log(static_cast<double>(z_T));
    }
  });
  return {kl, direction};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cwd_forward", &cwd_forward, "CWD forward: (KL per row, p_S - p_T or an empty tensor)");
}
