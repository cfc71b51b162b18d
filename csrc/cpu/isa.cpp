// Run-time choice of the row kernels (tasks.h): AVX-512 or AVX2+FMA copies on x86-64 CPUs that have them (float,
// double, bfloat16), the portable loops otherwise and for float16.
#include "loops.h"
#include "tasks.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>

#if FDLINEAR_X86_DISPATCH
namespace fdlinear_native::cpu {
#define FDLINEAR_DECLARE_ISA(isa)                                      \
  namespace isa {                                                      \
  void mix(const MixTask<float, float>& task);                         \
  void mix(const MixTask<double, double>& task);                       \
  void weight_grad(const WeightGradTask<float, float>& task);          \
  void weight_grad(const WeightGradTask<double, double>& task);        \
  void mix(const MixTask<c10::BFloat16, float>& task);                 \
  void weight_grad(const WeightGradTask<c10::BFloat16, float>& task);  \
  }
FDLINEAR_DECLARE_ISA(avx2)
FDLINEAR_DECLARE_ISA(avx512)
#undef FDLINEAR_DECLARE_ISA
}  // namespace fdlinear_native::cpu
#endif

namespace fdlinear_native::cpu {

namespace {

enum class Isa { Portable, Avx2, Avx512 };

Isa detect_isa() {
  Isa isa = Isa::Portable;
#if FDLINEAR_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    isa = Isa::Avx512;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    isa = Isa::Avx2;
  }
#endif
  // FDLINEAR_CPU_ISA=portable|avx2 caps the choice (to test or compare the narrower kernels).
  const char* cap = std::getenv("FDLINEAR_CPU_ISA");
  if (cap && std::strcmp(cap, "portable") == 0) return Isa::Portable;
  if (cap && std::strcmp(cap, "avx2") == 0 && isa == Isa::Avx512) return Isa::Avx2;
  return isa;
}

Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

template <typename scalar_t, typename acc_t>
RowKernels<scalar_t, acc_t> select_kernels() {
  RowKernels<scalar_t, acc_t> kernels{&portable::run_mix<scalar_t, acc_t>, &portable::run_weight_grad<scalar_t, acc_t>};
#if FDLINEAR_X86_DISPATCH
  if constexpr (!std::is_same_v<scalar_t, c10::Half>) {
    using Mix = void (*)(const MixTask<scalar_t, acc_t>&);
    using WeightGrad = void (*)(const WeightGradTask<scalar_t, acc_t>&);
    if (cpu_isa() == Isa::Avx512) {
      kernels = {static_cast<Mix>(&avx512::mix), static_cast<WeightGrad>(&avx512::weight_grad)};
    } else if (cpu_isa() == Isa::Avx2) {
      kernels = {static_cast<Mix>(&avx2::mix), static_cast<WeightGrad>(&avx2::weight_grad)};
    }
  }
#endif
  return kernels;
}

}  // namespace

template <typename scalar_t, typename acc_t>
const RowKernels<scalar_t, acc_t>& row_kernels() {
  static const RowKernels<scalar_t, acc_t> kernels = select_kernels<scalar_t, acc_t>();
  return kernels;
}

template const RowKernels<float, float>& row_kernels();
template const RowKernels<double, double>& row_kernels();
template const RowKernels<c10::BFloat16, float>& row_kernels();
template const RowKernels<c10::Half, float>& row_kernels();

const char* row_kernels_isa() {
  switch (cpu_isa()) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    default:
      return "portable";
  }
}

}  // namespace fdlinear_native::cpu
