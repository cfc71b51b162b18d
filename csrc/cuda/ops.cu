// CUDA kernels of fdlinear_native::forward / backward: mixing and epilogue kernels around cuBLAS GEMMs (through
// ATen, on the current stream). The same two forms as the CPU (cpu/forms.h):
//
// mix    — per sample, W_s = diag(v) (Σ_k β_k B_k) diag(u) is mixed into one reused (d_out, d_in) workspace and
//          applied with one GEMM; backward mixes diag(v) M for dX = (G W) ⊙ u, and forms H'_s = G_sᵀ X_s in a second
//          workspace whose epilogue kernel accumulates dB, dv and dβ. One sample at a time: the workspaces hold one
//          weight, never S of them (H' is written to that L2-sized workspace, not fused into the GEMM).
// expand — rows in chunks: Z = (u ⊙ x) B_flatᵀ with the K bases stacked, combined per row; per-sample sums by
//          segment kernels (one thread per (sample, column), rows in order: deterministic).
//
// The sample boundaries are read to the host (one synchronising copy) to drive the per-sample GEMMs.
#include "../fdlinear_native.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <utility>

namespace fdlinear_native::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;
constexpr int64_t kChunkRows = 4096;      // expand form: rows per GEMM (bounds the (rows, K·d_out) workspaces)
constexpr int64_t kBasisGradRows = 512;   // expand form, reduced precision: rows per partial sum of dB
constexpr int64_t kInputGradRows = 16;    // mix form: rows per block of input_grad_kernel

unsigned blocks_for(int64_t elements) {
  return static_cast<unsigned>(std::clamp<int64_t>(ceil_div(elements, kThreads), 1, kMaxBlocks));
}

template <typename acc_t>
__device__ acc_t block_sum(acc_t value, acc_t* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  const acc_t total = shared[0];
  __syncthreads();
  return total;
}

// out[o, i] = row_scale[o] · col_scale[i] · Σ_k β_k B_k[o, i]; row_scale / col_scale may be null (ones).
template <typename scalar_t, typename acc_t>
__global__ void mix_kernel(const scalar_t* __restrict__ bases, int64_t num_bases, int64_t d_out, int64_t d_in,
                           const acc_t* __restrict__ beta, const acc_t* __restrict__ row_scale,
                           const acc_t* __restrict__ col_scale, scalar_t* __restrict__ out) {
  const int64_t plane = d_out * d_in;
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < plane;
       index += int64_t(gridDim.x) * blockDim.x) {
    acc_t sum = 0;
    for (int64_t k = 0; k < num_bases; ++k) sum += beta[k] * static_cast<acc_t>(bases[k * plane + index]);
    if (row_scale) sum *= row_scale[index / d_in];
    if (col_scale) sum *= col_scale[index % d_in];
    out[index] = static_cast<scalar_t>(sum);
  }
}

// In place on P (rows, d_in) with row stride d_in, by chunks c of kInputGradRows rows (a 2-D grid: column blocks ×
// chunks, so a sample's rows are spread over many blocks): partial[c, i] = Σ_{t ∈ c} x[t, i] P[t, i], then
// P[t, i] *= u[i]. The caller sums the partials over c (du = Σ_c partial[c], a fixed-order reduction).
template <typename scalar_t, typename acc_t>
__global__ void input_grad_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ u, int64_t rows,
                                  int64_t chunks, int64_t d_in, scalar_t* __restrict__ product,
                                  acc_t* __restrict__ partial) {
  for (int64_t c = blockIdx.y; c < chunks; c += gridDim.y) {
    const int64_t first = c * kInputGradRows;
    const int64_t last = first + kInputGradRows < rows ? first + kInputGradRows : rows;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < d_in;
         i += int64_t(gridDim.x) * blockDim.x) {
      acc_t sum = 0;
      for (int64_t t = first; t < last; ++t) {
        const acc_t p = static_cast<acc_t>(product[t * d_in + i]);
        sum += static_cast<acc_t>(x[t * d_in + i]) * p;
        product[t * d_in + i] = static_cast<scalar_t>(p * u[i]);
      }
      partial[c * d_in + i] = sum;
    }
  }
}

// One block per row o of H' = G_sᵀ X_s: dots[o, k] = Σ_i B_k[o, i] u_i H'[o, i] and, when dbases is not null,
// dB_k[o, i] += β_k v_o u_i H'[o, i].
template <typename scalar_t, typename acc_t>
__global__ void weight_grad_kernel(const scalar_t* __restrict__ outer, const scalar_t* __restrict__ bases,
                                   int64_t num_bases, int64_t d_out, int64_t d_in, const acc_t* __restrict__ u,
                                   const acc_t* __restrict__ v, const acc_t* __restrict__ beta,
                                   acc_t* __restrict__ dbases, acc_t* __restrict__ dots) {
  __shared__ acc_t shared[kThreads];
  const int64_t plane = d_out * d_in;
  for (int64_t o = blockIdx.x; o < d_out; o += gridDim.x) {
    const scalar_t* h = outer + o * d_in;
    for (int64_t k = 0; k < num_bases; ++k) {
      const scalar_t* b = bases + k * plane + o * d_in;
      acc_t* grad = dbases ? dbases + k * plane + o * d_in : nullptr;
      const acc_t coef = beta[k] * v[o];
      acc_t partial = 0;
      for (int64_t i = threadIdx.x; i < d_in; i += blockDim.x) {
        const acc_t q = static_cast<acc_t>(h[i]) * u[i];
        partial += static_cast<acc_t>(b[i]) * q;
        if (grad) grad[i] += coef * q;
      }
      const acc_t total = block_sum(partial, shared);
      if (threadIdx.x == 0) dots[o * num_bases + k] = total;
    }
  }
}

// xu[t, i] = x[t, i] · u[sample_of_row[t], i] for the rows of a chunk.
template <typename scalar_t, typename acc_t>
__global__ void scale_rows_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ a_in,
                                  const int64_t* __restrict__ sample_of_row, int64_t rows, int64_t d_in,
                                  scalar_t* __restrict__ out) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < rows * d_in;
       index += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = index / d_in, i = index % d_in;
    out[index] = static_cast<scalar_t>(static_cast<acc_t>(x[index]) * a_in[sample_of_row[t] * d_in + i]);
  }
}

// y[t, o] = v[s, o] Σ_k β[s, k] Z[t, k·d_out + o] + bias[o], s the sample of row t (bias may be null).
template <typename scalar_t, typename acc_t>
__global__ void combine_kernel(const scalar_t* __restrict__ z, const acc_t* __restrict__ beta,
                               const acc_t* __restrict__ a_out, const scalar_t* __restrict__ bias,
                               const int64_t* __restrict__ sample_of_row, int64_t rows, int64_t num_bases,
                               int64_t d_out, scalar_t* __restrict__ y) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < rows * d_out;
       index += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = index / d_out, o = index % d_out, s = sample_of_row[t];
    acc_t sum = 0;
    for (int64_t k = 0; k < num_bases; ++k) {
      sum += beta[s * num_bases + k] * static_cast<acc_t>(z[(t * num_bases + k) * d_out + o]);
    }
    sum *= a_out[s * d_out + o];
    if (bias) sum += static_cast<acc_t>(bias[o]);
    y[index] = static_cast<scalar_t>(sum);
  }
}

// Per row t of a chunk: weighted[t, o] = v[s, o] G[t, o]; mixed[t, o] = Σ_k β_sk Z[t, k, o];
// row_beta[t, k] = Σ_o Z[t, k, o] v[s, o] G[t, o]; grad_z[t, k, o] = β_sk v[s, o] G[t, o] (when not null).
// One block per row. z may be null (then mixed and row_beta are not written).
template <typename scalar_t, typename acc_t>
__global__ void expand_grad_rows_kernel(const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ z,
                                        const acc_t* __restrict__ beta, const acc_t* __restrict__ a_out,
                                        const int64_t* __restrict__ sample_of_row, int64_t rows, int64_t num_bases,
                                        int64_t d_out, acc_t* __restrict__ mixed, acc_t* __restrict__ row_beta,
                                        scalar_t* __restrict__ grad_z) {
  __shared__ acc_t shared[kThreads];
  for (int64_t t = blockIdx.x; t < rows; t += gridDim.x) {
    const int64_t s = sample_of_row[t];
    const acc_t* v = a_out + s * d_out;
    const acc_t* b = beta + s * num_bases;
    const scalar_t* g = grad_y + t * d_out;
    if (grad_z) {
      for (int64_t index = threadIdx.x; index < num_bases * d_out; index += blockDim.x) {
        const int64_t k = index / d_out, o = index % d_out;
        grad_z[t * num_bases * d_out + index] = static_cast<scalar_t>(b[k] * v[o] * static_cast<acc_t>(g[o]));
      }
    }
    if (!z) continue;
    const scalar_t* z_row = z + t * num_bases * d_out;
    for (int64_t o = threadIdx.x; o < d_out; o += blockDim.x) {
      acc_t sum = 0;
      for (int64_t k = 0; k < num_bases; ++k) sum += b[k] * static_cast<acc_t>(z_row[k * d_out + o]);
      mixed[t * d_out + o] = sum;
    }
    for (int64_t k = 0; k < num_bases; ++k) {
      acc_t partial = 0;
      for (int64_t o = threadIdx.x; o < d_out; o += blockDim.x) {
        partial += static_cast<acc_t>(z_row[k * d_out + o]) * v[o] * static_cast<acc_t>(g[o]);
      }
      const acc_t total = block_sum(partial, shared);
      if (threadIdx.x == 0) row_beta[t * num_bases + k] = total;
    }
  }
}

// out[s, j] += Σ_t a[t, j] · (b ? b[t, j] : 1) over the rows t of sample s inside the chunk [c0, c1) (a and b
// indexed from row c0, row stride cols), for the samples [s_first, s_last). One thread per (sample, column).
template <typename a_t, typename b_t, typename acc_t>
__global__ void segment_sum_kernel(const a_t* __restrict__ a, const b_t* __restrict__ b,
                                   const int64_t* __restrict__ bounds, int64_t s_first, int64_t s_last, int64_t c0,
                                   int64_t c1, int64_t cols, acc_t* __restrict__ out) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  for (int64_t s = s_first + blockIdx.y; s < s_last; s += gridDim.y) {
    const int64_t first = bounds[s] > c0 ? bounds[s] : c0;
    const int64_t last = bounds[s + 1] < c1 ? bounds[s + 1] : c1;
    acc_t sum = 0;
    for (int64_t t = first - c0; t < last - c0; ++t) {
      const acc_t value = static_cast<acc_t>(a[t * cols + j]);
      sum += b ? value * static_cast<acc_t>(b[t * cols + j]) : value;
    }
    out[s * cols + j] += sum;
  }
}

struct Operands {
  at::Tensor x, bases, a_in, a_out, beta, bias;  // as in cpu/forms.h; bias undefined when absent
};

Operands prepare(const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in, const at::Tensor& a_out,
                 const at::Tensor& beta, const std::optional<at::Tensor>& bias) {
  const auto dtype = x.scalar_type();
  const auto acc = at::toOpMathType(dtype);
  Operands op;
  op.x = x.detach().contiguous();
  op.bases = bases.detach().to(dtype).contiguous();
  op.a_in = a_in.detach().to(acc).contiguous();
  op.a_out = a_out.detach().to(acc).contiguous();
  op.beta = beta.detach().to(acc).contiguous();
  if (bias.has_value()) op.bias = bias->detach().to(dtype).contiguous();
  return op;
}

// (T,) sample index of every row, on the device.
at::Tensor sample_of_rows(const Layout& layout, const at::Tensor& bounds) {
  const auto options = bounds.options();
  const at::Tensor lengths = bounds.narrow(0, 1, layout.num_samples()) - bounds.narrow(0, 0, layout.num_samples());
  return at::repeat_interleave(at::arange(layout.num_samples(), options), lengths, 0, layout.rows);
}

// Samples overlapping rows [c0, c1): [first, last).
std::pair<int64_t, int64_t> samples_in(const Layout& layout, int64_t c0, int64_t c1) {
  const int64_t first = layout.sample_of(c0);
  return {first, layout.sample_of(c1 - 1, first) + 1};
}

template <typename a_t, typename b_t, typename acc_t>
void segment_sum(const Layout& layout, const at::Tensor& bounds, int64_t c0, int64_t c1, const a_t* a, const b_t* b,
                 int64_t cols, acc_t* out) {
  const auto [first, last] = samples_in(layout, c0, c1);
  const dim3 grid(static_cast<unsigned>(ceil_div(cols, kThreads)),
                  static_cast<unsigned>(std::min<int64_t>(last - first, kMaxBlocks)));
  segment_sum_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      a, b, bounds.const_data_ptr<int64_t>(), first, last, c0, c1, cols, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void mix_forward(const Layout& layout, const Operands& op, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_bases = layout.num_bases, d_in = layout.d_in, d_out = layout.d_out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor weight = at::empty({d_out, d_in}, op.x.options());
  for (int64_t s = 0; s < layout.num_samples(); ++s) {
    const int64_t rows = layout.length(s);
    if (rows == 0) continue;
    mix_kernel<<<blocks_for(d_out * d_in), kThreads, 0, stream>>>(
        op.bases.const_data_ptr<scalar_t>(), num_bases, d_out, d_in, op.beta.const_data_ptr<acc_t>() + s * num_bases,
        op.a_out.const_data_ptr<acc_t>() + s * d_out, op.a_in.const_data_ptr<acc_t>() + s * d_in,
        weight.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor out = y.narrow(0, layout.start(s), rows);
    const at::Tensor rows_x = op.x.narrow(0, layout.start(s), rows);
    if (op.bias.defined()) {
      at::addmm_out(out, op.bias, rows_x, weight.t());
    } else {
      at::mm_out(out, rows_x, weight.t());
    }
  }
}

template <typename scalar_t>
void expand_forward(const Layout& layout, const Operands& op, const at::Tensor& bounds, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_bases = layout.num_bases, d_in = layout.d_in, d_out = layout.d_out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor samples = sample_of_rows(layout, bounds);
  const at::Tensor stacked = op.bases.view({num_bases * d_out, d_in});
  const int64_t chunk = std::min(kChunkRows, layout.rows);
  at::Tensor scaled = at::empty({chunk, d_in}, op.x.options());
  at::Tensor per_basis = at::empty({chunk, num_bases * d_out}, op.x.options());
  for (int64_t c0 = 0; c0 < layout.rows; c0 += chunk) {
    const int64_t rows = std::min(chunk, layout.rows - c0);
    const int64_t* sample_of_row = samples.const_data_ptr<int64_t>() + c0;
    scale_rows_kernel<<<blocks_for(rows * d_in), kThreads, 0, stream>>>(
        op.x.const_data_ptr<scalar_t>() + c0 * d_in, op.a_in.const_data_ptr<acc_t>(), sample_of_row, rows, d_in,
        scaled.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor z = per_basis.narrow(0, 0, rows);
    at::mm_out(z, scaled.narrow(0, 0, rows), stacked.t());
    combine_kernel<<<blocks_for(rows * d_out), kThreads, 0, stream>>>(
        z.const_data_ptr<scalar_t>(), op.beta.const_data_ptr<acc_t>(), op.a_out.const_data_ptr<acc_t>(),
        op.bias.defined() ? op.bias.const_data_ptr<scalar_t>() : nullptr, sample_of_row, rows, num_bases, d_out,
        y.mutable_data_ptr<scalar_t>() + c0 * d_out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

struct Gradients {
  at::Tensor x, bases, a_in, a_out, beta, bias;  // x in x's dtype, the others in the accumulation dtype
};

template <typename scalar_t>
void mix_backward(const Layout& layout, const Operands& op, const at::Tensor& grad_y, const GradFlags& needs,
                  Gradients& grads) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_bases = layout.num_bases, d_in = layout.d_in, d_out = layout.d_out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool need_input = needs[kGradX] || needs[kGradAIn];
  const bool need_weight = needs[kGradBases] || needs[kGradAOut] || needs[kGradBeta];
  const auto acc_options = op.a_in.options();
  at::Tensor dx = need_input ? at::empty_like(op.x) : at::Tensor();  // P = G (diag(v) M), then dX in place
  at::Tensor du = at::zeros_like(op.a_in), dv = at::zeros_like(op.a_out), dbeta = at::zeros_like(op.beta);
  at::Tensor dbases = needs[kGradBases] ? at::zeros({num_bases, d_out, d_in}, acc_options) : at::Tensor();
  at::Tensor weight = at::empty({d_out, d_in}, op.x.options());
  at::Tensor outer = at::empty({d_out, d_in}, op.x.options());
  at::Tensor dots = at::empty({d_out, num_bases}, acc_options);
  int64_t longest = 0;
  for (int64_t s = 0; s < layout.num_samples(); ++s) longest = std::max(longest, layout.length(s));
  at::Tensor partials = need_input ? at::empty({ceil_div(longest, kInputGradRows), d_in}, acc_options) : at::Tensor();
  const acc_t* beta = op.beta.const_data_ptr<acc_t>();
  const acc_t* a_in = op.a_in.const_data_ptr<acc_t>();
  const acc_t* a_out = op.a_out.const_data_ptr<acc_t>();
  for (int64_t s = 0; s < layout.num_samples(); ++s) {
    const int64_t rows = layout.length(s), start = layout.start(s);
    if (rows == 0) continue;
    const at::Tensor rows_x = op.x.narrow(0, start, rows), rows_g = grad_y.narrow(0, start, rows);
    if (need_input) {
      mix_kernel<<<blocks_for(d_out * d_in), kThreads, 0, stream>>>(
          op.bases.const_data_ptr<scalar_t>(), num_bases, d_out, d_in, beta + s * num_bases, a_out + s * d_out,
          static_cast<const acc_t*>(nullptr), weight.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      at::Tensor product = dx.narrow(0, start, rows);
      at::mm_out(product, rows_g, weight);
      const int64_t chunks = ceil_div(rows, kInputGradRows);
      const dim3 grid(static_cast<unsigned>(std::min<int64_t>(ceil_div(d_in, kThreads), kMaxBlocks)),
                      static_cast<unsigned>(std::min<int64_t>(chunks, kMaxBlocks)));
      input_grad_kernel<<<grid, kThreads, 0, stream>>>(rows_x.const_data_ptr<scalar_t>(), a_in + s * d_in, rows, chunks,
                                                       d_in, product.mutable_data_ptr<scalar_t>(),
                                                       partials.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      at::Tensor du_s = du.select(0, s);
      at::sum_out(du_s, partials.narrow(0, 0, chunks), {0});  // du_i = Σ_c partial[c, i]
    }
    if (need_weight) {
      at::mm_out(outer, rows_g.t(), rows_x);
      weight_grad_kernel<<<static_cast<unsigned>(std::min<int64_t>(d_out, kMaxBlocks)), kThreads, 0, stream>>>(
          outer.const_data_ptr<scalar_t>(), op.bases.const_data_ptr<scalar_t>(), num_bases, d_out, d_in,
          a_in + s * d_in, a_out + s * d_out, beta + s * num_bases,
          dbases.defined() ? dbases.mutable_data_ptr<acc_t>() : nullptr, dots.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      at::Tensor dv_s = dv.select(0, s), dbeta_s = dbeta.select(0, s);
      at::mv_out(dv_s, dots, op.beta.select(0, s));       // dv_o = Σ_k β_k dots[o, k]
      at::mv_out(dbeta_s, dots.t(), op.a_out.select(0, s));  // dβ_k = Σ_o v_o dots[o, k]
    }
  }
  if (needs[kGradX]) grads.x = dx;
  if (needs[kGradBases]) grads.bases = dbases;
  if (needs[kGradAIn]) grads.a_in = du;
  if (needs[kGradAOut]) grads.a_out = dv;
  if (needs[kGradBeta]) grads.beta = dbeta;
}

template <typename scalar_t>
void expand_backward(const Layout& layout, const Operands& op, const at::Tensor& grad_y, const at::Tensor& bounds,
                     const GradFlags& needs, Gradients& grads) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t num_bases = layout.num_bases, d_in = layout.d_in, d_out = layout.d_out, width = num_bases * d_out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool need_z = needs[kGradAOut] || needs[kGradBeta];
  const bool need_q = needs[kGradX] || needs[kGradAIn];
  const bool need_grad_z = need_q || needs[kGradBases];
  const auto acc_options = op.a_in.options();
  const at::Tensor samples = sample_of_rows(layout, bounds);
  const at::Tensor stacked = op.bases.view({width, d_in});
  const int64_t chunk = std::max<int64_t>(std::min(kChunkRows, layout.rows), 1);
  at::Tensor dx = need_q ? at::empty_like(op.x) : at::Tensor();
  at::Tensor du = at::zeros_like(op.a_in), dv = at::zeros_like(op.a_out), dbeta = at::zeros_like(op.beta);
  at::Tensor dbases = needs[kGradBases] ? at::zeros({width, d_in}, acc_options) : at::Tensor();
  at::Tensor scaled = at::empty({chunk, d_in}, op.x.options());
  at::Tensor per_basis = need_z ? at::empty({chunk, width}, op.x.options()) : at::Tensor();
  at::Tensor grad_per_basis = need_grad_z ? at::empty({chunk, width}, op.x.options()) : at::Tensor();
  at::Tensor mixed = need_z ? at::empty({chunk, d_out}, acc_options) : at::Tensor();
  at::Tensor row_beta = need_z ? at::empty({chunk, num_bases}, acc_options) : at::Tensor();
  at::Tensor grad_scaled = need_q ? at::empty({chunk, d_in}, op.x.options()) : at::Tensor();
  const scalar_t* g = grad_y.const_data_ptr<scalar_t>();
  for (int64_t c0 = 0; c0 < layout.rows; c0 += chunk) {
    const int64_t rows = std::min(chunk, layout.rows - c0), c1 = c0 + rows;
    const int64_t* sample_of_row = samples.const_data_ptr<int64_t>() + c0;
    at::Tensor xu = scaled.narrow(0, 0, rows);
    scale_rows_kernel<<<blocks_for(rows * d_in), kThreads, 0, stream>>>(
        op.x.const_data_ptr<scalar_t>() + c0 * d_in, op.a_in.const_data_ptr<acc_t>(), sample_of_row, rows, d_in,
        xu.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    at::Tensor z = need_z ? per_basis.narrow(0, 0, rows) : at::Tensor();
    if (need_z) at::mm_out(z, xu, stacked.t());
    at::Tensor dz = need_grad_z ? grad_per_basis.narrow(0, 0, rows) : at::Tensor();
    expand_grad_rows_kernel<<<static_cast<unsigned>(std::min<int64_t>(rows, kMaxBlocks)), kThreads, 0, stream>>>(
        g + c0 * d_out, need_z ? z.const_data_ptr<scalar_t>() : nullptr, op.beta.const_data_ptr<acc_t>(),
        op.a_out.const_data_ptr<acc_t>(), sample_of_row, rows, num_bases, d_out,
        need_z ? mixed.mutable_data_ptr<acc_t>() : nullptr, need_z ? row_beta.mutable_data_ptr<acc_t>() : nullptr,
        need_grad_z ? dz.mutable_data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (need_z) {
      segment_sum(layout, bounds, c0, c1, g + c0 * d_out, mixed.const_data_ptr<acc_t>(), d_out,
                  dv.mutable_data_ptr<acc_t>());
      segment_sum(layout, bounds, c0, c1, row_beta.const_data_ptr<acc_t>(), static_cast<const acc_t*>(nullptr),
                  num_bases, dbeta.mutable_data_ptr<acc_t>());
    }
    if (need_q) {
      at::Tensor q = grad_scaled.narrow(0, 0, rows);
      at::mm_out(q, dz, stacked);
      segment_sum(layout, bounds, c0, c1, q.const_data_ptr<scalar_t>(), op.x.const_data_ptr<scalar_t>() + c0 * d_in,
                  d_in, du.mutable_data_ptr<acc_t>());
      at::Tensor dx_rows = dx.narrow(0, c0, rows);
      at::mul_out(dx_rows, q, op.a_in.index_select(0, samples.narrow(0, c0, rows)));
    }
    if (needs[kGradBases]) {
      if constexpr (std::is_same_v<scalar_t, acc_t>) {
        dbases.addmm_(dz.t(), xu);
      } else {  // each GEMM's sum is rounded to x's dtype: over kBasisGradRows rows at most, as on the CPU
        for (int64_t r0 = 0; r0 < rows; r0 += kBasisGradRows) {
          const int64_t count = std::min(kBasisGradRows, rows - r0);
          dbases.add_(at::mm(dz.narrow(0, r0, count).t(), xu.narrow(0, r0, count)));
        }
      }
    }
  }
  if (needs[kGradX]) grads.x = dx;
  if (needs[kGradBases]) grads.bases = dbases.view({num_bases, d_out, d_in});
  if (needs[kGradAIn]) grads.a_in = du;
  if (needs[kGradAOut]) grads.a_out = dv;
  if (needs[kGradBeta]) grads.beta = dbeta;
}

// A gradient in the dtype of `like`, or the empty placeholder (in x's dtype) when it was not asked for.
at::Tensor cast_or_empty(const at::Tensor& grad, const at::Tensor& like, const at::Tensor& x) {
  return grad.defined() ? grad.to(like.scalar_type()) : not_needed(x);
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in, const at::Tensor& a_out,
                   const at::Tensor& beta, const std::optional<at::Tensor>& bias, const at::Tensor& cu_seqlens,
                   c10::string_view form) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const c10::cuda::CUDAGuard device_guard(x.device());
  const Layout layout = make_layout(x, bases, a_in, a_out, beta, bias, cu_seqlens);
  const Operands op = prepare(x, bases, a_in, a_out, beta, bias);
  const at::Tensor bounds = cu_seqlens.to(at::kLong).contiguous();
  const Form chosen = resolve_form(std::string(form), layout);
  if (has_no_features(layout)) return featureless_forward(layout, x, bias);
  at::Tensor y = at::empty({layout.rows, layout.d_out}, op.x.options());
  if (layout.rows == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fdlinear_native_cuda_forward", [&] {
    if (chosen == Form::Mix) {
      mix_forward<scalar_t>(layout, op, y);
    } else {
      expand_forward<scalar_t>(layout, op, bounds, y);
    }
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in,
    const at::Tensor& a_out, const at::Tensor& beta, const at::Tensor& cu_seqlens, std::array<bool, kNumGrads> needs,
    c10::string_view form) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const c10::cuda::CUDAGuard device_guard(x.device());
  const Layout layout = make_layout(x, bases, a_in, a_out, beta, std::nullopt, cu_seqlens);
  TORCH_CHECK_VALUE(grad_y.dim() == 2 && grad_y.size(0) == layout.rows && grad_y.size(1) == layout.d_out,
              "fdlinear_native: grad_y must have shape (", layout.rows, ", ", layout.d_out, "), got ", grad_y.sizes());
  TORCH_CHECK_VALUE(grad_y.device() == x.device(), "fdlinear_native: grad_y is on ", grad_y.device(), " but x is on ",
              x.device());
  const Form chosen = resolve_form(std::string(form), layout);
  const at::Tensor grad = grad_y.detach().to(x.scalar_type()).contiguous();
  if (has_no_features(layout)) return featureless_backward(grad, x, bases, a_in, a_out, beta, needs);
  const Operands op = prepare(x, bases, a_in, a_out, beta, std::nullopt);
  const at::Tensor bounds = cu_seqlens.to(at::kLong).contiguous();
  Gradients grads;
  const auto acc = at::toOpMathType(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fdlinear_native_cuda_backward", [&] {
    if (chosen == Form::Mix) {
      mix_backward<scalar_t>(layout, op, grad, needs, grads);
    } else {
      expand_backward<scalar_t>(layout, op, grad, bounds, needs, grads);
    }
  });
  if (needs[kGradBias]) grads.bias = at::sum(grad, {0}, false, acc);
  return {cast_or_empty(grads.x, x, x),         cast_or_empty(grads.bases, bases, x), cast_or_empty(grads.a_in, a_in, x),
          cast_or_empty(grads.a_out, a_out, x), cast_or_empty(grads.beta, beta, x),   cast_or_empty(grads.bias, x, x)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fdlinear_native, CUDA, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
}

}  // namespace fdlinear_native::cuda
