// CPU expand form: y = v ⊙ Σ_k β_k (B_k (u ⊙ x)) with the K bases stacked into one (K·d_out, d_in) matrix,
// so each chunk of rows costs one GEMM and no per-sample weight exists.
//
// Rows are processed in chunks of whole samples (groups), so per-sample sums (da_in, da_out, dβ) are
// accumulated by one task in row order. dB = Σ_t dZ_tᵀ (u ⊙ x)_t sums over every row: it is computed
// per (basis, output tile) over the rows in order. Results do not depend on the thread count.
//   Z = (u ⊙ x) B_flatᵀ;  dv = Σ_t G ⊙ Σ_k β_k Z_k;  dβ_k = Σ_t Σ_o Z_k ⊙ v ⊙ G;
//   dZ_k = β_k (v ⊙ G);  Q = dZ B_flat;  dX = Q ⊙ u;  du = Σ_t Q ⊙ X;  dB_k = Σ_t dZ_kᵀ (u ⊙ x).
#include "blas_threads.h"
#include "forms.h"
#include "loops.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace fdlinear_native::cpu {

namespace {

using portable::add_product;
using portable::dot;
using portable::mix_row;

constexpr int64_t kChunkRows = 128;     // rows per GEMM in the row pass (and minimum rows per group)
constexpr int64_t kBasisGradRows = 512;  // rows per accumulating GEMM in the dB pass

// First sample of every group of whole samples holding >= kChunkRows rows (the last may hold fewer),
// followed by S: group g is samples [firsts[g], firsts[g + 1]).
std::vector<int64_t> sample_groups(const Layout& layout) {
  std::vector<int64_t> firsts{0};
  int64_t rows = 0;
  const int64_t samples = layout.num_samples();
  for (int64_t s = 0; s < samples; ++s) {
    rows += layout.length(s);
    if (rows >= kChunkRows && s + 1 < samples) {
      firsts.push_back(s + 1);
      rows = 0;
    }
  }
  firsts.push_back(samples);
  return firsts;
}

// Walks rows in increasing order and yields the sample of each.
class SampleCursor {
 public:
  SampleCursor(const Layout& layout, int64_t first_row) : layout_(layout), sample_(layout.sample_of(first_row)) {}
  int64_t at(int64_t row) {
    while (layout_.bounds[sample_ + 1] <= row) ++sample_;
    return sample_;
  }

 private:
  const Layout& layout_;
  int64_t sample_;
};

// Rows [first, first + count) of u ⊙ x into out (count, d_in).
template <typename scalar_t, typename acc_t>
void scale_rows(const Layout& layout, const scalar_t* x, const acc_t* a_in, int64_t first, int64_t count,
                scalar_t* out) {
  const int64_t d_in = layout.d_in;
  SampleCursor cursor(layout, first);
  for (int64_t r = 0; r < count; ++r) {
    const acc_t* __restrict__ u = a_in + cursor.at(first + r) * d_in;
    const scalar_t* __restrict__ src = x + (first + r) * d_in;
    scalar_t* __restrict__ dst = out + r * d_in;
    for (int64_t i = 0; i < d_in; ++i) dst[i] = static_cast<scalar_t>(static_cast<acc_t>(src[i]) * u[i]);
  }
}

template <typename scalar_t>
void forward_kernel(const Layout& layout, const Operands& op, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_bases = layout.num_bases, d_in = layout.d_in, d_out = layout.d_out;
  const std::vector<int64_t> groups = sample_groups(layout);
  const at::Tensor stacked = op.bases.view({num_bases * d_out, d_in});
  const scalar_t* x = op.x.const_data_ptr<scalar_t>();
  const scalar_t* bias = op.bias.defined() ? op.bias.const_data_ptr<scalar_t>() : nullptr;
  const acc_t* beta = op.beta.const_data_ptr<acc_t>();
  const acc_t* a_in = op.a_in.const_data_ptr<acc_t>();
  const acc_t* a_out = op.a_out.const_data_ptr<acc_t>();
  scalar_t* out = y.mutable_data_ptr<scalar_t>();
  parallel_tasks(0, static_cast<int64_t>(groups.size()) - 1, [&](int64_t begin, int64_t end) {
    at::Tensor scaled = at::empty({kChunkRows, d_in}, op.x.options());
    at::Tensor per_basis = at::empty({kChunkRows, num_bases * d_out}, op.x.options());
    const scalar_t* z = per_basis.const_data_ptr<scalar_t>();
    std::vector<acc_t> row(d_out);
    for (int64_t g = begin; g < end; ++g) {
      const int64_t last_row = layout.start(groups[g + 1]);
      for (int64_t first = layout.start(groups[g]); first < last_row; first += kChunkRows) {
        const int64_t count = std::min(kChunkRows, last_row - first);
        scale_rows(layout, x, a_in, first, count, scaled.mutable_data_ptr<scalar_t>());
        matmul_into(per_basis.narrow(0, 0, count), scaled.narrow(0, 0, count), stacked.t());
        SampleCursor cursor(layout, first);
        for (int64_t r = 0; r < count; ++r) {
          const int64_t s = cursor.at(first + r);
          mix_row(z + r * num_bases * d_out, d_out, num_bases, beta + s * num_bases, d_out, row.data());
          const acc_t* __restrict__ v = a_out + s * d_out;
          scalar_t* __restrict__ y_row = out + (first + r) * d_out;
          for (int64_t o = 0; o < d_out; ++o) {
            const acc_t value = row[o] * v[o];
            y_row[o] = static_cast<scalar_t>(bias ? value + static_cast<acc_t>(bias[o]) : value);
          }
        }
      }
    }
  });
}

// dB_k[tile] = Σ_t β_k v[tile] G_t[tile] ⊗ (u ⊙ x)_t over all rows in order, per (basis, output tile).
template <typename scalar_t>
void basis_gradient_kernel(const Layout& layout, const Operands& op, const at::Tensor& grad_y,
                           const at::Tensor& scaled_x, at::Tensor& dbases) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_bases = layout.num_bases, d_in = layout.d_in, d_out = layout.d_out;
  const int64_t tile = tile_width(d_out, 4, 256);
  const int64_t tiles = ceil_div(d_out, tile);
  const scalar_t* g = grad_y.const_data_ptr<scalar_t>();
  const acc_t* beta = op.beta.const_data_ptr<acc_t>();
  const acc_t* a_out = op.a_out.const_data_ptr<acc_t>();
  parallel_tasks(0, num_bases * tiles, [&](int64_t begin, int64_t end) {
    at::Tensor lhs = at::empty({kBasisGradRows, tile}, op.x.options());
    at::Tensor product;
    if constexpr (!std::is_same_v<scalar_t, acc_t>) product = at::empty({tile, d_in}, op.x.options());
    for (int64_t task = begin; task < end; ++task) {
      const int64_t k = task / tiles, o0 = (task % tiles) * tile, width = std::min(tile, d_out - o0);
      at::Tensor target = dbases.select(0, k).narrow(0, o0, width);
      for (int64_t first = 0; first < layout.rows; first += kBasisGradRows) {
        const int64_t count = std::min(kBasisGradRows, layout.rows - first);
        scalar_t* a = lhs.mutable_data_ptr<scalar_t>();
        SampleCursor cursor(layout, first);
        for (int64_t r = 0; r < count; ++r) {
          const int64_t s = cursor.at(first + r);
          const acc_t b = beta[s * num_bases + k];
          const acc_t* __restrict__ v = a_out + s * d_out + o0;
          const scalar_t* __restrict__ g_row = g + (first + r) * d_out + o0;
          scalar_t* __restrict__ a_row = a + r * tile;
          for (int64_t j = 0; j < width; ++j) a_row[j] = static_cast<scalar_t>(b * v[j] * static_cast<acc_t>(g_row[j]));
        }
        at::Tensor left = lhs.narrow(0, 0, count).narrow(1, 0, width).t();
        at::Tensor right = scaled_x.narrow(0, first, count);
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          target.addmm_(left, right);
        } else {
          matmul_into(product.narrow(0, 0, width), left, right);
          target.add_(product.narrow(0, 0, width));
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const Layout& layout, const Operands& op, const at::Tensor& grad_y, const GradFlags& needs,
                     Gradients& grads) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t samples = layout.num_samples(), num_bases = layout.num_bases;
  const int64_t d_in = layout.d_in, d_out = layout.d_out, width = num_bases * d_out;
  const bool need_z = needs[kGradAOut] || needs[kGradBeta];
  const bool need_q = needs[kGradX] || needs[kGradAIn];
  const std::vector<int64_t> groups = sample_groups(layout);
  const at::Tensor stacked = op.bases.view({width, d_in});
  const auto acc_options = op.a_in.options();
  at::Tensor scaled_all = needs[kGradBases] ? at::empty({layout.rows, d_in}, op.x.options()) : at::Tensor();
  at::Tensor dx = needs[kGradX] ? at::empty_like(op.x) : at::Tensor();
  at::Tensor da_in = at::zeros({samples, d_in}, acc_options);
  at::Tensor da_out = at::zeros({samples, d_out}, acc_options);
  at::Tensor dbeta = at::zeros({samples, num_bases}, acc_options);
  const scalar_t* x = op.x.const_data_ptr<scalar_t>();
  const scalar_t* g = grad_y.const_data_ptr<scalar_t>();
  const acc_t* beta = op.beta.const_data_ptr<acc_t>();
  const acc_t* a_in = op.a_in.const_data_ptr<acc_t>();
  const acc_t* a_out = op.a_out.const_data_ptr<acc_t>();
  acc_t* du = da_in.mutable_data_ptr<acc_t>();
  acc_t* dv = da_out.mutable_data_ptr<acc_t>();
  acc_t* db = dbeta.mutable_data_ptr<acc_t>();
  const int64_t row_tasks = need_z || need_q || needs[kGradBases] ? static_cast<int64_t>(groups.size()) - 1 : 0;
  parallel_tasks(0, row_tasks, [&](int64_t begin, int64_t end) {
    at::Tensor scaled_local = scaled_all.defined() ? at::Tensor() : at::empty({kChunkRows, d_in}, op.x.options());
    at::Tensor per_basis = need_z ? at::empty({kChunkRows, width}, op.x.options()) : at::Tensor();
    at::Tensor grad_per_basis = need_q ? at::empty({kChunkRows, width}, op.x.options()) : at::Tensor();
    at::Tensor grad_scaled = need_q ? at::empty({kChunkRows, d_in}, op.x.options()) : at::Tensor();
    std::vector<acc_t> row(d_out), weighted_grad(d_out);
    for (int64_t group = begin; group < end; ++group) {
      const int64_t last_row = layout.start(groups[group + 1]);
      for (int64_t first = layout.start(groups[group]); first < last_row; first += kChunkRows) {
        const int64_t count = std::min(kChunkRows, last_row - first);
        at::Tensor scaled = scaled_all.defined() ? scaled_all.narrow(0, first, count) : scaled_local.narrow(0, 0, count);
        scale_rows(layout, x, a_in, first, count, scaled.mutable_data_ptr<scalar_t>());
        if (need_z) matmul_into(per_basis.narrow(0, 0, count), scaled, stacked.t());
        SampleCursor cursor(layout, first);
        for (int64_t r = 0; r < count; ++r) {
          const int64_t s = cursor.at(first + r);
          const acc_t* __restrict__ v = a_out + s * d_out;
          const acc_t* beta_s = beta + s * num_bases;
          const scalar_t* __restrict__ g_row = g + (first + r) * d_out;
          for (int64_t o = 0; o < d_out; ++o) weighted_grad[o] = v[o] * static_cast<acc_t>(g_row[o]);
          if (need_z) {
            const scalar_t* z_row = per_basis.const_data_ptr<scalar_t>() + r * width;
            if (needs[kGradAOut]) {
              mix_row(z_row, d_out, num_bases, beta_s, d_out, row.data());
              acc_t* __restrict__ dv_s = dv + s * d_out;
              for (int64_t o = 0; o < d_out; ++o) dv_s[o] += static_cast<acc_t>(g_row[o]) * row[o];
            }
            if (needs[kGradBeta]) {
              for (int64_t k = 0; k < num_bases; ++k) {
                db[s * num_bases + k] += dot(z_row + k * d_out, weighted_grad.data(), d_out);
              }
            }
          }
          if (need_q) {
            scalar_t* __restrict__ dz_row = grad_per_basis.mutable_data_ptr<scalar_t>() + r * width;
            for (int64_t k = 0; k < num_bases; ++k) {
              for (int64_t o = 0; o < d_out; ++o) {
                dz_row[k * d_out + o] = static_cast<scalar_t>(beta_s[k] * weighted_grad[o]);
              }
            }
          }
        }
        if (!need_q) continue;
        matmul_into(grad_scaled.narrow(0, 0, count), grad_per_basis.narrow(0, 0, count), stacked);
        const scalar_t* q = grad_scaled.const_data_ptr<scalar_t>();
        SampleCursor rows(layout, first);
        for (int64_t r = 0; r < count; ++r) {
          const int64_t t = first + r, s = rows.at(t);
          add_product(q + r * d_in, x + t * d_in, du + s * d_in, d_in);
          if (!dx.defined()) continue;
          const acc_t* __restrict__ u = a_in + s * d_in;
          const scalar_t* __restrict__ q_row = q + r * d_in;
          scalar_t* __restrict__ dx_row = dx.mutable_data_ptr<scalar_t>() + t * d_in;
          for (int64_t i = 0; i < d_in; ++i) dx_row[i] = static_cast<scalar_t>(static_cast<acc_t>(q_row[i]) * u[i]);
        }
      }
    }
  });
  if (needs[kGradBases]) {
    grads.bases = at::zeros({num_bases, d_out, d_in}, acc_options);
    basis_gradient_kernel<scalar_t>(layout, op, grad_y, scaled_all, grads.bases);
  }
  if (needs[kGradX]) grads.x = dx;
  if (needs[kGradAIn]) grads.a_in = da_in;
  if (needs[kGradAOut]) grads.a_out = da_out;
  if (needs[kGradBeta]) grads.beta = dbeta;
}

}  // namespace

at::Tensor expand_forward(const Layout& layout, const Operands& operands) {
  at::Tensor y = at::empty({layout.rows, layout.d_out}, operands.x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, operands.x.scalar_type(), "fdlinear_native_expand_forward",
                                  [&] { forward_kernel<scalar_t>(layout, operands, y); });
  return y;
}

Gradients expand_backward(const Layout& layout, const Operands& operands, const at::Tensor& grad_y,
                          const GradFlags& needs) {
  Gradients grads;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, operands.x.scalar_type(),
                                  "fdlinear_native_expand_backward",
                                  [&] { backward_kernel<scalar_t>(layout, operands, grad_y, needs, grads); });
  if (needs[kGradBias]) grads.bias = bias_gradient(grad_y);
  return grads;
}

}  // namespace fdlinear_native::cpu
