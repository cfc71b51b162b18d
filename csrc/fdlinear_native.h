// Shared declarations of the native FDLinear op (docs/design.md §2): argument checks, the sample layout and the
// choice between the two algebraically identical forms.
//
//   y_t = diag(a_out_s) (Σ_k β_sk B_k) diag(a_in_s) x_t + bias      for every row t of sample s
//
// x (T, d_in) packed rows, bases (K, d_out, d_in), a_in (S, d_in), a_out (S, d_out), beta (S, K),
// bias (d_out) or none, cu_seqlens (S+1) int32/int64 sample boundaries.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <tuple>
#include <optional>
#include <string>
#include <vector>

namespace fdlinear_native {

// Gradients in the order of the differentiable inputs: x, bases, a_in, a_out, beta, bias.
constexpr int kNumGrads = 6;
using GradFlags = std::array<bool, kNumGrads>;
enum GradIndex : int { kGradX = 0, kGradBases, kGradAIn, kGradAOut, kGradBeta, kGradBias };

enum class Form { Mix, Expand };

// Row layout of the S packed samples, with the boundaries on the host.
struct Layout {
  int64_t rows = 0;  // T
  int64_t d_in = 0;
  int64_t d_out = 0;
  int64_t num_bases = 0;           // K
  bool reduced_precision = false;  // x is bfloat16 or float16
  std::vector<int64_t> bounds;     // S + 1 boundaries, bounds[0] = 0, bounds[S] = T

  int64_t num_samples() const { return static_cast<int64_t>(bounds.size()) - 1; }
  int64_t start(int64_t s) const { return bounds[s]; }
  int64_t length(int64_t s) const { return bounds[s + 1] - bounds[s]; }
  // The sample holding row t (t < T); samples are searched from `hint` upwards.
  int64_t sample_of(int64_t t, int64_t hint = 0) const;
};

// Validates every argument (a clear error naming it) and reads the sample boundaries to the host
// (a device-to-host copy for CUDA tensors).
Layout make_layout(const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in, const at::Tensor& a_out,
                   const at::Tensor& beta, const std::optional<at::Tensor>& bias, const at::Tensor& cu_seqlens);

// "mix" | "expand" | "auto"; auto picks the cheaper form for the layout (see choose_form).
Form resolve_form(const std::string& form, const Layout& layout);

// Expand when samples are so short that mixing a weight per sample costs more than K matmuls over the rows.
Form choose_form(const Layout& layout);

// Empty tensors stand for gradients that were not asked for (custom ops cannot return None).
at::Tensor not_needed(const at::Tensor& like);

// No input or no output features (d_in · d_out == 0): the op is y = bias (zeros without one), and every gradient is
// zero but dbias = Σ_t g_t. Both backends answer these shapes here, so their kernels never see an empty extent.
inline bool has_no_features(const Layout& layout) { return layout.d_in == 0 || layout.d_out == 0; }
at::Tensor featureless_forward(const Layout& layout, const at::Tensor& x, const std::optional<at::Tensor>& bias);
// The op's six outputs: gradients in their inputs' dtypes (dbias in x's), not_needed(x) where not asked for.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> featureless_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in,
    const at::Tensor& a_out, const at::Tensor& beta, const GradFlags& needs);

// Tile width along an extent: a multiple of 16 giving about `target_tiles` tiles, clamped to [16, max_width].
// It depends on the shapes only (never on the thread count), so results do not depend on the thread count.
int64_t tile_width(int64_t extent, int64_t target_tiles, int64_t max_width);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace fdlinear_native
