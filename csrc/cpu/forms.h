// The two CPU forms of the op (docs/design.md §2), on operands already brought to their compute dtypes.
//
// mix    — per sample s and output tile, W_s = diag(a_out) (Σ_k β_k B_k) diag(a_in) is mixed into a thread-local
//          buffer and applied with one BLAS GEMM; the cost of nn.Linear plus the mixing.
// expand — y = a_out ⊙ Σ_k β_k (B_k (a_in ⊙ x)): K GEMMs over the rows, no per-sample weight; cheaper when the
//          samples are a few rows long (the per-row case).
#pragma once

#include "../fdlinear_native.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/mm.h>

namespace fdlinear_native::cpu {

// x (T, d_in) and bases (K, d_out, d_in) in the compute dtype (x's); a_in (S, d_in), a_out (S, d_out),
// beta (S, K) in its accumulation dtype (float for reduced precision); bias (d_out) in x's dtype or undefined.
// All contiguous.
struct Operands {
  at::Tensor x, bases, a_in, a_out, beta, bias;
};

// Gradients: x in x's dtype, the others in the accumulation dtype; undefined where not asked for.
struct Gradients {
  at::Tensor x, bases, a_in, a_out, beta, bias;
};

at::Tensor mix_forward(const Layout& layout, const Operands& operands);
Gradients mix_backward(const Layout& layout, const Operands& operands, const at::Tensor& grad_y,
                       const GradFlags& needs);

at::Tensor expand_forward(const Layout& layout, const Operands& operands);
Gradients expand_backward(const Layout& layout, const Operands& operands, const at::Tensor& grad_y,
                          const GradFlags& needs);

// out = a @ b through ATen's BLAS, out being a (possibly strided) view of a buffer or an output.
inline void matmul_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) { at::mm_out(out, a, b); }

// (d_out,) column sums of grad_y (T, d_out) in the accumulation dtype, summed over rows in order.
at::Tensor bias_gradient(const at::Tensor& grad_y);

}  // namespace fdlinear_native::cpu
