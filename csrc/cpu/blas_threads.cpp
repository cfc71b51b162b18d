#include "blas_threads.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

// MKL's thread-local budget, when the BLAS torch links is MKL: its C entry point (mkl_service.h maps
// mkl_set_num_threads_local to it; the lower-case symbol is the Fortran one, which takes a pointer). A weak
// reference: null with any other BLAS.
#if defined(__GNUC__) || defined(__clang__)
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
static int set_mkl_threads_local(int threads) {
  return MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(threads) : 0;
}
#else
static int set_mkl_threads_local(int) { return 0; }
#endif

namespace fdlinear_native::cpu {

// MKL returns the previous thread-local budget (0: none, the global one applies).
SerialBlasScope::SerialBlasScope() : previous_mkl_(set_mkl_threads_local(1)), previous_omp_(0) {
#if defined(_OPENMP)
  previous_omp_ = omp_get_max_threads();
  omp_set_num_threads(1);
#endif
}

SerialBlasScope::~SerialBlasScope() {
  set_mkl_threads_local(previous_mkl_);
#if defined(_OPENMP)
  omp_set_num_threads(previous_omp_);
#endif
}

}  // namespace fdlinear_native::cpu
