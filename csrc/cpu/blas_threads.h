// Thread-count-independent results from ATen's BLAS.
//
// MKL chooses its GEMM kernels (and how it blocks the reduction) from its thread budget, even when it is called
// inside a parallel region where it runs on one thread: the same GEMM then gives different bits under 1 and 2
// threads. Every GEMM of the CPU forms runs inside a task of parallel_tasks, whose body sees a one-thread BLAS and
// OpenMP budget, so each task computes the same bits whichever thread count the caller set.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

namespace fdlinear_native::cpu {

// For the lifetime of the scope, BLAS calls from this thread run on one thread (restored on exit).
class SerialBlasScope {
 public:
  SerialBlasScope();
  ~SerialBlasScope();
  SerialBlasScope(const SerialBlasScope&) = delete;
  SerialBlasScope& operator=(const SerialBlasScope&) = delete;

 private:
  int previous_mkl_;
  int previous_omp_;
};

// at::parallel_for over [begin, end) with grain 1, each body running under a SerialBlasScope.
template <typename F>
void parallel_tasks(int64_t begin, int64_t end, const F& body) {
  at::parallel_for(begin, end, 1, [&](int64_t first, int64_t last) {
    SerialBlasScope serial;
    body(first, last);
  });
}

}  // namespace fdlinear_native::cpu
