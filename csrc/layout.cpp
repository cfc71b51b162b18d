// Argument checks, the host-side sample layout and the form choice shared by the CPU and CUDA kernels.
#include "fdlinear_native.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <algorithm>

namespace fdlinear_native {

namespace {

void check_same_device(const at::Tensor& tensor, const char* name, const at::Tensor& x) {
  TORCH_CHECK_VALUE(tensor.device() == x.device(), "fdlinear_native: ", name, " is on ", tensor.device(), " but x is on ",
              x.device());
}

void check_floating(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(tensor.scalar_type()), "fdlinear_native: ", name, " must be floating-point, got ",
              tensor.scalar_type());
}

void check_shape(const at::Tensor& tensor, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(tensor.sizes() == shape, "fdlinear_native: ", name, " must have shape ", shape, ", got ",
              tensor.sizes());
}

}  // namespace

int64_t Layout::sample_of(int64_t t, int64_t hint) const {
  // bounds is non-decreasing: the sample of row t is the last s with bounds[s] <= t < bounds[s + 1].
  auto first = bounds.begin() + std::max<int64_t>(hint, 0) + 1;
  return static_cast<int64_t>(std::upper_bound(first, bounds.end(), t) - bounds.begin()) - 1;
}

Layout make_layout(const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in, const at::Tensor& a_out,
                   const at::Tensor& beta, const std::optional<at::Tensor>& bias, const at::Tensor& cu_seqlens) {
  TORCH_CHECK_VALUE(x.dim() == 2, "fdlinear_native: x must be packed (T, d_in), got shape ", x.sizes());
  TORCH_CHECK_VALUE(bases.dim() == 3 && bases.size(2) == x.size(1), "fdlinear_native: bases must have shape (K, d_out, d_in=",
              x.size(1), "), got ", bases.sizes());
  TORCH_CHECK_VALUE(bases.size(0) >= 1, "fdlinear_native: bases must hold K >= 1 bases");
  TORCH_CHECK_VALUE(cu_seqlens.dim() == 1 && cu_seqlens.numel() >= 1,
              "fdlinear_native: cu_seqlens must be 1-D with S+1 >= 1 entries, got shape ", cu_seqlens.sizes());
  TORCH_CHECK_TYPE(cu_seqlens.scalar_type() == at::kInt || cu_seqlens.scalar_type() == at::kLong,
              "fdlinear_native: cu_seqlens must be int32 or int64, got ", cu_seqlens.scalar_type());
  Layout layout;
  layout.rows = x.size(0);
  layout.d_in = x.size(1);
  layout.d_out = bases.size(1);
  layout.num_bases = bases.size(0);
  layout.reduced_precision = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf;
  const int64_t samples = cu_seqlens.numel() - 1;
  check_floating(x, "x");
  check_floating(bases, "bases");
  check_shape(a_in, "a_in", {samples, layout.d_in});
  check_shape(a_out, "a_out", {samples, layout.d_out});
  check_shape(beta, "beta", {samples, layout.num_bases});
  for (const auto& [tensor, name] : {std::pair{&a_in, "a_in"}, {&a_out, "a_out"}, {&beta, "beta"}}) {
    check_floating(*tensor, name);
    check_same_device(*tensor, name, x);
  }
  check_same_device(bases, "bases", x);
  check_same_device(cu_seqlens, "cu_seqlens", x);
  if (bias.has_value()) {
    check_shape(*bias, "bias", {layout.d_out});
    check_floating(*bias, "bias");
    check_same_device(*bias, "bias", x);
  }
  const at::Tensor host = cu_seqlens.to(at::kCPU, at::kLong).contiguous();
  const int64_t* cu = host.data_ptr<int64_t>();
  layout.bounds.assign(cu, cu + samples + 1);
  TORCH_CHECK_VALUE(layout.bounds.front() == 0, "fdlinear_native: cu_seqlens must start at 0, got ", layout.bounds.front());
  TORCH_CHECK_VALUE(std::is_sorted(layout.bounds.begin(), layout.bounds.end()),
              "fdlinear_native: cu_seqlens must be non-decreasing");
  TORCH_CHECK_VALUE(layout.bounds.back() == layout.rows, "fdlinear_native: cu_seqlens must end at the token count ",
              layout.rows, ", got ", layout.bounds.back());
  return layout;
}

Form choose_form(const Layout& layout) {
  // Costs in units of one GEMM multiply-add per weight element (P = d_out · d_in of them):
  //   mix    = S · K · c · (1 + P0 / P) · P  (mixing a weight per sample, fixed costs per sample worth P0 elements)
  //          + 1.5 · T · P                   (per-sample GEMMs; short ones run slower)
  //   expand = K · T · P                     (K stacked GEMMs over the rows)
  // Mixing streams the K bases at a fraction of the GEMM's rate (c); the fixed part is mostly GEMM call overhead.
  // Both are larger for reduced precision. Fitted to the crossover measured on the CPU with 2 threads
  // (benchmarks/test_bench_native.py, form crossover): with K = 4, expand wins below about 6 (float32, 512x512),
  // 8 (float32, 256x256), 14 (bfloat16, 512x512) and 23 (bfloat16, 256x256) rows per sample.
  const double mixing_cost = layout.reduced_precision ? 7.0 : 3.2;
  const double sample_overhead = layout.reduced_precision ? 72.0 * 1024 : 36.0 * 1024;
  constexpr double kShortGemmCost = 1.5;
  const double elements = static_cast<double>(std::max<int64_t>(layout.d_in * layout.d_out, 1));
  const double k = static_cast<double>(layout.num_bases), rows = static_cast<double>(layout.rows);
  const double samples = static_cast<double>(layout.num_samples());
  const double mix = samples * k * mixing_cost * (1.0 + sample_overhead / elements) + kShortGemmCost * rows;
  const double expand = k * rows;
  return expand < mix ? Form::Expand : Form::Mix;
}

Form resolve_form(const std::string& form, const Layout& layout) {
  if (form == "mix") return Form::Mix;
  if (form == "expand") return Form::Expand;
  TORCH_CHECK_VALUE(form == "auto", "fdlinear_native: form must be one of ('auto', 'mix', 'expand'), got '", form, "'");
  return choose_form(layout);
}

at::Tensor not_needed(const at::Tensor& like) { return at::empty({0}, like.options()); }

at::Tensor featureless_forward(const Layout& layout, const at::Tensor& x, const std::optional<at::Tensor>& bias) {
  at::Tensor y = at::zeros({layout.rows, layout.d_out}, x.options());  // a new tensor: never a view of bias
  if (bias.has_value()) y.add_(bias->detach().to(x.scalar_type()));
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> featureless_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in,
    const at::Tensor& a_out, const at::Tensor& beta, const GradFlags& needs) {
  const auto zeros_or_empty = [&](int index, const at::Tensor& like) {
    return needs[index] ? at::zeros_like(like, at::MemoryFormat::Contiguous) : not_needed(x);
  };
  const at::Tensor dbias =
      needs[kGradBias] ? at::sum(grad_y, {0}, false, at::toOpMathType(x.scalar_type())).to(x.scalar_type())
                       : not_needed(x);
  return {zeros_or_empty(kGradX, x),         zeros_or_empty(kGradBases, bases), zeros_or_empty(kGradAIn, a_in),
          zeros_or_empty(kGradAOut, a_out), zeros_or_empty(kGradBeta, beta),   dbias};
}

int64_t tile_width(int64_t extent, int64_t target_tiles, int64_t max_width) {
  constexpr int64_t kQuantum = 16;
  const int64_t width = ceil_div(ceil_div(extent, target_tiles), kQuantum) * kQuantum;
  return std::clamp<int64_t>(width, kQuantum, std::max(max_width, kQuantum));
}

}  // namespace fdlinear_native
