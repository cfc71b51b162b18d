// The row kernels of tasks.h compiled for AVX-512 F/VL/BW/DQ (x86-64, GCC or Clang); isa.cpp selects them at run
// time on CPUs that have these instructions. Only tasks.h and loops.h are compiled for the wider instruction set.
#include "tasks.h"

// Included before the target pragma: their inline functions stay compiled for the baseline (they are shared with
// the rest of the program) and are inlined into the kernels below.
#include <c10/util/BFloat16.h>

#include <cstdint>

#if FDLINEAR_X86_DISPATCH
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#endif

#define FDLINEAR_CPU_ISA avx512
#include "loops.h"

namespace fdlinear_native::cpu::avx512 {

void mix(const MixTask<float, float>& task) { run_mix(task); }
void mix(const MixTask<double, double>& task) { run_mix(task); }
void weight_grad(const WeightGradTask<float, float>& task) { run_weight_grad(task); }
void weight_grad(const WeightGradTask<double, double>& task) { run_weight_grad(task); }
void mix(const MixTask<c10::BFloat16, float>& task) { run_mix(task); }
void weight_grad(const WeightGradTask<c10::BFloat16, float>& task) { run_weight_grad(task); }

}  // namespace fdlinear_native::cpu::avx512

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // FDLINEAR_X86_DISPATCH
