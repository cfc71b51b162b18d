// CPU mix form: per-sample weight tiles mixed into thread-local buffers, applied with BLAS GEMMs (through ATen).
//
// Forward, per (output tile, sample group):  W'_s = diag(v) (Σ_k β_k B_k) diag(u) on the tile's rows for each sample
// of the group, then y_s[:, tile] = X_s W'_sᵀ + b.
// Backward, with G the sample's upstream rows and H' = Gᵀ X (docs/design.md §2):
//   per (input tile, sample group):  P = G (diag(v) M)[:, tile];  dX = P ⊙ u;  du_i = Σ_t X[t, i] P[t, i]
//   per output tile, sample groups in order:  H'_s[tile] for the group's samples in a thread-local buffer, then one
//   pass over the tile's rows: q = H'_s ⊙ u, dots_k = B_k[o] · q, dv_o = Σ_k β_k dots_k, dβ_k += v_o dots_k,
//   dB_k[o] += β_k v_o q, with the rows of B_k and dB_k held in L1 across the group's samples.
// Sample groups bound the thread-local buffers (kGroupBytes) and let one pass over the bases serve several
// samples (each row of the K bases is loaded once per group, not once per sample). H' never exists
// for more than one group of one tile per thread. Every output element and every reduction is computed by one
// task in a fixed order, so results do not depend on the thread count.
#include "blas_threads.h"
#include "forms.h"
#include "tasks.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <vector>

namespace fdlinear_native::cpu {

namespace {

// Thread-local buffer of one sample group: mixed weights in the forward, the dX pass and H' in the dB pass. The
// forward's is larger: two 2 MiB sample weights per group halve its basis traffic (3-6 % faster, 2 threads, Xeon
// AVX-512), while the same size in the backward passes made them slower.
constexpr int64_t kForwardGroupBytes = int64_t(4) << 20;
constexpr int64_t kGroupBytes = int64_t(2) << 20;
constexpr int64_t kTargetTasks = 8;                // (tile, sample group) tasks aimed at in the forward and dX passes
constexpr int64_t kWeightGradTiles = 8;            // output tiles aimed at in the dB pass (its only parallelism)
constexpr int64_t kWeightGradMaxTile = 128;

// Width of the tiles of an extent whose other side is `depth` long (a tile holds width · depth values) in the
// forward and dX passes. Wide tiles mean fewer, larger GEMMs (each call re-packs the sample's rows), so a tile is
// as wide as kGroupBytes allows unless there are too few samples to make kTargetTasks tasks; at least 128
// wide, where BLAS reaches its peak rate.
template <typename scalar_t>
int64_t sample_tile_width(const Layout& layout, int64_t extent, int64_t depth) {
  const int64_t widest = std::max<int64_t>(kGroupBytes / (depth * int64_t(sizeof(scalar_t))), 128);
  const int64_t tiles = ceil_div(kTargetTasks, std::max<int64_t>(layout.num_samples(), 1));
  return tile_width(extent, tiles, widest);
}

// Samples per group: as many tiles of tile_elements values as fit in group_bytes (at least 1, at most S).
template <typename scalar_t>
int64_t group_size(const Layout& layout, int64_t tile_elements, int64_t group_bytes = kGroupBytes) {
  const int64_t fit = group_bytes / std::max<int64_t>(tile_elements * int64_t(sizeof(scalar_t)), 1);
  return std::clamp<int64_t>(fit, 1, std::max<int64_t>(layout.num_samples(), 1));
}

template <typename scalar_t>
void forward_kernel(const Layout& layout, const Operands& op, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t samples = layout.num_samples(), num_bases = layout.num_bases;
  const int64_t d_in = layout.d_in, d_out = layout.d_out;
  const int64_t tile = sample_tile_width<scalar_t>(layout, d_out, d_in);
  const int64_t tiles = ceil_div(d_out, tile);
  const int64_t group = group_size<scalar_t>(layout, tile * d_in, kForwardGroupBytes);
  const int64_t groups = ceil_div(samples, group);
  const scalar_t* bases = op.bases.const_data_ptr<scalar_t>();
  const acc_t* beta = op.beta.const_data_ptr<acc_t>();
  const acc_t* a_in = op.a_in.const_data_ptr<acc_t>();
  const acc_t* a_out = op.a_out.const_data_ptr<acc_t>();
  const auto& kernels = row_kernels<scalar_t, acc_t>();
  parallel_tasks(0, tiles * groups, [&](int64_t begin, int64_t end) {
    at::Tensor weights = at::empty({group, tile, d_in}, op.x.options());
    std::vector<acc_t> scratch(num_bases + d_in);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t first = (task % groups) * group, o0 = (task / groups) * tile;
      const int64_t count = std::min(group, samples - first), width = std::min(tile, d_out - o0);
      kernels.mix({bases, num_bases, d_out, d_in, o0, width, 0, d_in, first, count, layout.bounds.data(), beta, a_out,
                   a_in, scratch.data(), weights.mutable_data_ptr<scalar_t>(), d_in, tile * d_in});
      for (int64_t s = first; s < first + count; ++s) {
        const int64_t rows = layout.length(s);
        if (rows == 0) continue;
        at::Tensor out = y.narrow(0, layout.start(s), rows).narrow(1, o0, width);
        at::Tensor rows_x = op.x.narrow(0, layout.start(s), rows);
        at::Tensor weight_t = weights.select(0, s - first).narrow(0, 0, width).t();
        if (op.bias.defined()) {
          at::addmm_out(out, op.bias.narrow(0, o0, width), rows_x, weight_t);
        } else {
          at::mm_out(out, rows_x, weight_t);
        }
      }
    }
  });
}

// dX and du: P = G (diag(v) M)[:, tile] is written into dX's tile, then scaled by u in place.
template <typename scalar_t>
void input_gradient_kernel(const Layout& layout, const Operands& op, const at::Tensor& grad_y, at::Tensor& dx,
                           at::Tensor& da_in) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t samples = layout.num_samples(), num_bases = layout.num_bases;
  const int64_t d_in = layout.d_in, d_out = layout.d_out;
  const int64_t tile = sample_tile_width<scalar_t>(layout, d_in, d_out);
  const int64_t tiles = ceil_div(d_in, tile);
  const int64_t group = group_size<scalar_t>(layout, d_out * tile);
  const int64_t groups = ceil_div(samples, group);
  const scalar_t* bases = op.bases.const_data_ptr<scalar_t>();
  const scalar_t* x = op.x.const_data_ptr<scalar_t>();
  const acc_t* beta = op.beta.const_data_ptr<acc_t>();
  const acc_t* a_in = op.a_in.const_data_ptr<acc_t>();
  const acc_t* a_out = op.a_out.const_data_ptr<acc_t>();
  scalar_t* dx_data = dx.mutable_data_ptr<scalar_t>();
  acc_t* du = da_in.mutable_data_ptr<acc_t>();
  const auto& kernels = row_kernels<scalar_t, acc_t>();
  parallel_tasks(0, tiles * groups, [&](int64_t begin, int64_t end) {
    at::Tensor weights = at::empty({group, d_out, tile}, op.x.options());
    std::vector<acc_t> scratch(num_bases + tile);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t first = (task % groups) * group, i0 = (task / groups) * tile;
      const int64_t count = std::min(group, samples - first), width = std::min(tile, d_in - i0);
      kernels.mix({bases, num_bases, d_out, d_in, 0, d_out, i0, width, first, count, layout.bounds.data(), beta, a_out,
                   nullptr, scratch.data(), weights.mutable_data_ptr<scalar_t>(), tile, d_out * tile});
      for (int64_t s = first; s < first + count; ++s) {
        const int64_t rows = layout.length(s), start = layout.start(s);
        if (rows == 0) continue;
        at::Tensor product = dx.narrow(0, start, rows).narrow(1, i0, width);
        at::mm_out(product, grad_y.narrow(0, start, rows), weights.select(0, s - first).narrow(1, 0, width));
        acc_t* __restrict__ du_tile = du + s * d_in + i0;
        const acc_t* __restrict__ u = a_in + s * d_in + i0;
        for (int64_t t = start; t < start + rows; ++t) {
          const scalar_t* __restrict__ x_row = x + t * d_in + i0;
          scalar_t* __restrict__ p = dx_data + t * d_in + i0;
          for (int64_t j = 0; j < width; ++j) {
            const acc_t value = static_cast<acc_t>(p[j]);
            du_tile[j] += static_cast<acc_t>(x_row[j]) * value;
            p[j] = static_cast<scalar_t>(value * u[j]);
          }
        }
      }
    }
  });
}

// dB, dv, dβ from H'_s = G_sᵀ X_s, one (sample group, output tile) at a time in a thread-local buffer.
template <typename scalar_t>
void weight_gradient_kernel(const Layout& layout, const Operands& op, const at::Tensor& grad_y, const GradFlags& needs,
                            Gradients& grads) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t samples = layout.num_samples(), num_bases = layout.num_bases;
  const int64_t d_in = layout.d_in, d_out = layout.d_out;
  const int64_t tile = tile_width(d_out, kWeightGradTiles, kWeightGradMaxTile);
  const int64_t tiles = ceil_div(d_out, tile);
  const int64_t group = group_size<scalar_t>(layout, tile * d_in);
  const bool need_dots = needs[kGradAOut] || needs[kGradBeta];
  const scalar_t* bases = op.bases.const_data_ptr<scalar_t>();
  const acc_t* beta = op.beta.const_data_ptr<acc_t>();
  const acc_t* a_in = op.a_in.const_data_ptr<acc_t>();
  const acc_t* a_out = op.a_out.const_data_ptr<acc_t>();
  const auto acc_options = op.a_in.options();
  at::Tensor dbases = at::zeros({num_bases, d_out, d_in}, acc_options);
  at::Tensor da_out = at::zeros({samples, d_out}, acc_options);
  at::Tensor beta_parts = at::zeros({samples, tiles, num_bases}, acc_options);
  acc_t* db = dbases.mutable_data_ptr<acc_t>();
  acc_t* dv = da_out.mutable_data_ptr<acc_t>();
  acc_t* parts = beta_parts.mutable_data_ptr<acc_t>();
  const auto& kernels = row_kernels<scalar_t, acc_t>();
  parallel_tasks(0, tiles, [&](int64_t begin, int64_t end) {
    at::Tensor outer = at::empty({group, tile, d_in}, op.x.options());
    std::vector<acc_t> scratch(d_in);
    for (int64_t tile_index = begin; tile_index < end; ++tile_index) {
      const int64_t o0 = tile_index * tile, width = std::min(tile, d_out - o0);
      for (int64_t first = 0; first < samples; first += group) {
        const int64_t count = std::min(group, samples - first);
        for (int64_t s = first; s < first + count; ++s) {
          const int64_t rows = layout.length(s), start = layout.start(s);
          if (rows == 0) continue;
          matmul_into(outer.select(0, s - first).narrow(0, 0, width),
                      grad_y.narrow(0, start, rows).narrow(1, o0, width).t(), op.x.narrow(0, start, rows));
        }
        kernels.weight_grad({bases, num_bases, d_out, d_in, o0, width, first, count, layout.bounds.data(),
                             outer.const_data_ptr<scalar_t>(), tile, a_in, a_out, beta, need_dots, scratch.data(),
                             needs[kGradBases] ? db : nullptr, dv, parts + tile_index * num_bases, tiles * num_bases});
      }
    }
  });
  if (needs[kGradBases]) grads.bases = dbases;
  if (needs[kGradAOut]) grads.a_out = da_out;
  if (needs[kGradBeta]) {
    at::Tensor dbeta = at::zeros({samples, num_bases}, acc_options);
    acc_t* out = dbeta.mutable_data_ptr<acc_t>();
    for (int64_t s = 0; s < samples; ++s) {  // tiles summed in index order
      for (int64_t t = 0; t < tiles; ++t) {
        for (int64_t k = 0; k < num_bases; ++k) out[s * num_bases + k] += parts[(s * tiles + t) * num_bases + k];
      }
    }
    grads.beta = dbeta;
  }
}

template <typename scalar_t>
void backward_kernel(const Layout& layout, const Operands& op, const at::Tensor& grad_y, const GradFlags& needs,
                     Gradients& grads) {
  if (needs[kGradX] || needs[kGradAIn]) {
    at::Tensor dx = at::empty_like(op.x);
    at::Tensor da_in = at::zeros_like(op.a_in);
    input_gradient_kernel<scalar_t>(layout, op, grad_y, dx, da_in);
    if (needs[kGradX]) grads.x = dx;
    if (needs[kGradAIn]) grads.a_in = da_in;
  }
  if (needs[kGradBases] || needs[kGradAOut] || needs[kGradBeta]) {
    weight_gradient_kernel<scalar_t>(layout, op, grad_y, needs, grads);
  }
}

}  // namespace

at::Tensor mix_forward(const Layout& layout, const Operands& operands) {
  at::Tensor y = at::empty({layout.rows, layout.d_out}, operands.x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, operands.x.scalar_type(), "fdlinear_native_mix_forward",
                                  [&] { forward_kernel<scalar_t>(layout, operands, y); });
  return y;
}

Gradients mix_backward(const Layout& layout, const Operands& operands, const at::Tensor& grad_y,
                       const GradFlags& needs) {
  Gradients grads;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, operands.x.scalar_type(), "fdlinear_native_mix_backward",
                                  [&] { backward_kernel<scalar_t>(layout, operands, grad_y, needs, grads); });
  if (needs[kGradBias]) grads.bias = bias_gradient(grad_y);
  return grads;
}

}  // namespace fdlinear_native::cpu
