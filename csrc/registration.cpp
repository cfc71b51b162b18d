// Schema of the fdlinear_native ops, their Meta (shape-only) kernels and the Python module that loads them.
//
// forward(x, bases, a_in, a_out, beta, bias, cu_seqlens, form) -> y (T, d_out)
// backward(grad_y, x, bases, a_in, a_out, beta, cu_seqlens, needs_grad, form)
//     -> (dx, dbases, da_in, da_out, dbeta, dbias); each in its input's dtype (dbias in x's),
//        an empty tensor in x's dtype where needs_grad is false.
// form: "auto" | "mix" | "expand" (see fdlinear_native.h). CPU kernels: cpu/ops.cpp; CUDA kernels: cuda/ops.cu.
// cpu_isa() -> "avx512" | "avx2" | "portable": the instruction set of the CPU row kernels in this process.
#include "cpu/tasks.h"
#include "fdlinear_native.h"

#include <Python.h>

#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>

namespace fdlinear_native {

namespace {

at::Tensor forward_meta(const at::Tensor& x, const at::Tensor& bases, const at::Tensor&, const at::Tensor&,
                        const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&, c10::string_view) {
  return at::empty({x.size(0), bases.size(1)}, x.options());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_meta(
    const at::Tensor&, const at::Tensor& x, const at::Tensor& bases, const at::Tensor& a_in, const at::Tensor& a_out,
    const at::Tensor& beta, const at::Tensor&, std::array<bool, kNumGrads> needs, c10::string_view) {
  auto grad = [&](int index, const at::Tensor& like, at::IntArrayRef shape) {
    return needs[index] ? at::empty(shape, like.options()) : not_needed(x);
  };
  return {grad(kGradX, x, x.sizes()),
          grad(kGradBases, bases, bases.sizes()),
          grad(kGradAIn, a_in, a_in.sizes()),
          grad(kGradAOut, a_out, a_out.sizes()),
          grad(kGradBeta, beta, beta.sizes()),
          grad(kGradBias, x, {bases.size(1)})};
}

}  // namespace

TORCH_LIBRARY(fdlinear_native, m) {
  m.def(
      "forward(Tensor x, Tensor bases, Tensor a_in, Tensor a_out, Tensor beta, Tensor? bias, Tensor cu_seqlens, "
      "str form) -> Tensor");
  m.def(
      "backward(Tensor grad_y, Tensor x, Tensor bases, Tensor a_in, Tensor a_out, Tensor beta, Tensor cu_seqlens, "
      "bool[6] needs_grad, str form) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("cpu_isa() -> str", [] { return std::string(cpu::row_kernels_isa()); });
}

TORCH_LIBRARY_IMPL(fdlinear_native, Meta, m) {
  m.impl("forward", &forward_meta);
  m.impl("backward", &backward_meta);
}

}  // namespace fdlinear_native

// Importing fdlinear._native loads this library, whose static initialisers register the ops above.
extern "C" PyMODINIT_FUNC PyInit__native(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native",
                               "Native (C++/CUDA) kernels of fdlinear; the ops live in torch.ops.fdlinear_native.",
                               -1, nullptr};
  return PyModule_Create(&module);
}
