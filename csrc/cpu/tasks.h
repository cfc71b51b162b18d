// Plain-data descriptions of the two row kernels that dominate the CPU mix form after the GEMMs, and the table
// of their implementations for the CPU at hand (isa.cpp picks AVX-512, AVX2+FMA or portable code at run time).
// No ATen here: the ISA-specific translation units that include this header must not instantiate inline
// library code with wider instructions (it would be shared with the rest of the program).
#pragma once

#include <cstdint>

// Run-time selection of AVX2 / AVX-512 copies of the row kernels: x86-64 with GCC or Clang.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FDLINEAR_X86_DISPATCH 1
#else
#define FDLINEAR_X86_DISPATCH 0
#endif

namespace fdlinear_native::cpu {

// For each non-empty sample s of [first, first + count): rows [o0, o0 + rows) and columns [i0, i0 + cols) of
// diag(row_scale_s) (Σ_k β_sk B_k) diag(col_scale_s), written to out + (s - first) · sample_stride (row stride
// ld_out). row_scale (S, d_out) and col_scale (S, d_in) may be null (ones).
template <typename scalar_t, typename acc_t>
struct MixTask {
  const scalar_t* bases;  // (K, d_out, d_in)
  int64_t num_bases, d_out, d_in;
  int64_t o0, rows, i0, cols;
  int64_t first, count;
  const int64_t* bounds;  // (S + 1) sample boundaries: empty samples are skipped
  const acc_t* beta;      // (S, K)
  const acc_t* row_scale;
  const acc_t* col_scale;
  acc_t* scratch;  // num_bases + cols values
  scalar_t* out;
  int64_t ld_out, sample_stride;
};

// Epilogue of the weight-gradient GEMM for the rows [o0, o0 + rows) of an output tile and the non-empty samples of
// [first, first + count), with H'_s = outer + (s - first) · tile · d_in (row stride d_in):
//   q = H'_s[o] ⊙ u_s;  dots_k = B_k[o] · q;  dv_so = Σ_k β_sk dots_k;  parts_s[k] += v_so dots_k;
//   dB_k[o] += β_sk v_so q   (samples in increasing order).
// dbases may be null (not needed); with need_dots false, dv and parts are left untouched.
template <typename scalar_t, typename acc_t>
struct WeightGradTask {
  const scalar_t* bases;  // (K, d_out, d_in)
  int64_t num_bases, d_out, d_in;
  int64_t o0, rows;
  int64_t first, count;
  const int64_t* bounds;
  const scalar_t* outer;  // (count, tile, d_in)
  int64_t tile;
  const acc_t* a_in;   // (S, d_in)
  const acc_t* a_out;  // (S, d_out)
  const acc_t* beta;   // (S, K)
  bool need_dots;
  acc_t* scratch;  // d_in values
  acc_t* dbases;   // (K, d_out, d_in) or null
  acc_t* dv;       // (S, d_out)
  acc_t* parts;    // parts for sample s at parts + s · parts_stride
  int64_t parts_stride;
};

template <typename scalar_t, typename acc_t>
struct RowKernels {
  void (*mix)(const MixTask<scalar_t, acc_t>&);
  void (*weight_grad)(const WeightGradTask<scalar_t, acc_t>&);
};

// The fastest implementation this CPU runs (defined for float/float, double/double, BFloat16/float, Half/float).
template <typename scalar_t, typename acc_t>
const RowKernels<scalar_t, acc_t>& row_kernels();

// Name of the instruction set row_kernels<float, float>() uses: "avx512", "avx2" or "portable".
const char* row_kernels_isa();

}  // namespace fdlinear_native::cpu
