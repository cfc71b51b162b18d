// CPU entry points of fdlinear_native::forward / backward: operand preparation, form dispatch, output dtypes.
#include "forms.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

namespace fdlinear_native::cpu {

namespace {

// Everything in x's dtype except the modulations, which are read in the accumulation dtype. Detached: the
// ATen calls on worker threads (where no dispatch guard reaches) must see no tensor that requires grad.
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

at::Tensor forward(const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in, const at::Tensor& a_out,
                   const at::Tensor& beta, const std::optional<at::Tensor>& bias, const at::Tensor& cu_seqlens,
                   c10::string_view form) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // the kernels' ATen calls record no autograd
  const Layout layout = make_layout(x, bases, a_in, a_out, beta, bias, cu_seqlens);
  const Form chosen = resolve_form(std::string(form), layout);
  if (has_no_features(layout)) return featureless_forward(layout, x, bias);
  const Operands op = prepare(x, bases, a_in, a_out, beta, bias);
  return chosen == Form::Mix ? mix_forward(layout, op) : expand_forward(layout, op);
}

// A gradient in the dtype of `like`, or the empty placeholder (in x's dtype) when it was not asked for.
at::Tensor cast_or_empty(const at::Tensor& grad, const at::Tensor& like, const at::Tensor& x) {
  return grad.defined() ? grad.to(like.scalar_type()) : not_needed(x);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in,
    const at::Tensor& a_out, const at::Tensor& beta, const at::Tensor& cu_seqlens, std::array<bool, kNumGrads> needs,
    c10::string_view form) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Layout layout = make_layout(x, bases, a_in, a_out, beta, std::nullopt, cu_seqlens);
  TORCH_CHECK_VALUE(grad_y.dim() == 2 && grad_y.size(0) == layout.rows && grad_y.size(1) == layout.d_out,
              "fdlinear_native: grad_y must have shape (", layout.rows, ", ", layout.d_out, "), got ", grad_y.sizes());
  TORCH_CHECK_VALUE(grad_y.device() == x.device(), "fdlinear_native: grad_y is on ", grad_y.device(), " but x is on ",
              x.device());
  const Form chosen = resolve_form(std::string(form), layout);
  const at::Tensor grad = grad_y.detach().to(x.scalar_type()).contiguous();
  if (has_no_features(layout)) return featureless_backward(grad, x, bases, a_in, a_out, beta, needs);
  const Operands op = prepare(x, bases, a_in, a_out, beta, std::nullopt);
  const Gradients grads = chosen == Form::Mix
                              ? mix_backward(layout, op, grad, needs)
                              : expand_backward(layout, op, grad, needs);
  return {cast_or_empty(grads.x, x, x),         cast_or_empty(grads.bases, bases, x), cast_or_empty(grads.a_in, a_in, x),
          cast_or_empty(grads.a_out, a_out, x), cast_or_empty(grads.beta, beta, x),   cast_or_empty(grads.bias, x, x)};
}

template <typename scalar_t>
void column_sums(const at::Tensor& grad_y, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = grad_y.size(0), cols = grad_y.size(1);
  constexpr int64_t kColumns = 256;
  const scalar_t* g = grad_y.const_data_ptr<scalar_t>();
  acc_t* sums = out.mutable_data_ptr<acc_t>();
  at::parallel_for(0, ceil_div(cols, kColumns), 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t c0 = block * kColumns, width = std::min(kColumns, cols - c0);
      acc_t* __restrict__ dst = sums + c0;
      for (int64_t t = 0; t < rows; ++t) {
        const scalar_t* __restrict__ src = g + t * cols + c0;
        for (int64_t j = 0; j < width; ++j) dst[j] += static_cast<acc_t>(src[j]);
      }
    }
  });
}

}  // namespace

at::Tensor bias_gradient(const at::Tensor& grad_y) {
  at::Tensor out = at::zeros({grad_y.size(1)}, grad_y.options().dtype(at::toOpMathType(grad_y.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_y.scalar_type(), "fdlinear_native_bias_gradient",
                                  [&] { column_sums<scalar_t>(grad_y, out); });
  return out;
}

TORCH_LIBRARY_IMPL(fdlinear_native, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
}

}  // namespace fdlinear_native::cpu
