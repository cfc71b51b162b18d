// Inner loops of the CPU kernels: basis mixing, dot products, row updates and the two row kernels of tasks.h.
//
// Every loop visits its elements in a fixed order (reductions use a fixed split into lanes), so a result never
// depends on which thread ran it. The loops are plain C++ written for the compiler's vectoriser; isa_*.cpp
// compile them again for wider instruction sets, each copy in its own namespace FDLINEAR_CPU_ISA.
#pragma once

#include "tasks.h"

#include <cstdint>

#ifndef FDLINEAR_CPU_ISA
#define FDLINEAR_CPU_ISA portable
#endif

namespace fdlinear_native::cpu::FDLINEAR_CPU_ISA {

// Bases combined per pass over a row: each pass reads up to kFused rows and writes its result once.
constexpr int64_t kFused = 4;

inline int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

// out[j] (+)= Σ_{m<M} coef[m] · bases[m·plane + j] for j < count.
template <int M, bool Accumulate, typename scalar_t, typename acc_t>
inline void combine_rows(const scalar_t* bases, int64_t plane, const acc_t* coef, int64_t count,
                         acc_t* __restrict__ out) {
  const scalar_t* __restrict__ rows[M];
  acc_t c[M];
  for (int m = 0; m < M; ++m) {
    rows[m] = bases + m * plane;
    c[m] = coef[m];
  }
  for (int64_t j = 0; j < count; ++j) {
    acc_t sum = Accumulate ? out[j] : acc_t(0);
    for (int m = 0; m < M; ++m) sum += c[m] * static_cast<acc_t>(rows[m][j]);
    out[j] = sum;
  }
}

// dst[j] = (Σ_{m<M} coef[m] · bases[m·plane + j]) · scale[j] (scale null: ones), for j < count.
template <int M, typename scalar_t, typename acc_t>
inline void combine_rows_to(const scalar_t* bases, int64_t plane, const acc_t* coef, int64_t count,
                            const acc_t* __restrict__ scale, scalar_t* __restrict__ dst) {
  const scalar_t* __restrict__ rows[M];
  acc_t c[M];
  for (int m = 0; m < M; ++m) {
    rows[m] = bases + m * plane;
    c[m] = coef[m];
  }
  if (scale) {
    for (int64_t j = 0; j < count; ++j) {
      acc_t sum = 0;
      for (int m = 0; m < M; ++m) sum += c[m] * static_cast<acc_t>(rows[m][j]);
      dst[j] = static_cast<scalar_t>(sum * scale[j]);
    }
  } else {
    for (int64_t j = 0; j < count; ++j) {
      acc_t sum = 0;
      for (int m = 0; m < M; ++m) sum += c[m] * static_cast<acc_t>(rows[m][j]);
      dst[j] = static_cast<scalar_t>(sum);
    }
  }
}

// combine_rows for a run-time number of bases, 1 <= count_bases <= kFused.
template <bool Accumulate, typename scalar_t, typename acc_t>
inline void combine_some(int64_t count_bases, const scalar_t* bases, int64_t plane, const acc_t* coef, int64_t count,
                         acc_t* out) {
  switch (count_bases) {
    case 1: return combine_rows<1, Accumulate>(bases, plane, coef, count, out);
    case 2: return combine_rows<2, Accumulate>(bases, plane, coef, count, out);
    case 3: return combine_rows<3, Accumulate>(bases, plane, coef, count, out);
    default: return combine_rows<4, Accumulate>(bases, plane, coef, count, out);
  }
}

// out[j] = Σ_k coef[k] · bases[k·plane + j] for j < count: one row of Σ_k coef_k B_k.
template <typename scalar_t, typename acc_t>
inline void mix_row(const scalar_t* bases, int64_t plane, int64_t num_bases, const acc_t* coef, int64_t count,
                    acc_t* out) {
  combine_some<false>(smaller(num_bases, kFused), bases, plane, coef, count, out);
  for (int64_t k = kFused; k < num_bases; k += kFused) {
    combine_some<true>(smaller(num_bases - k, kFused), bases + k * plane, plane, coef + k, count, out);
  }
}

// dst[j] = (Σ_k coef[k] · bases[k·plane + j]) · scale[j] in one pass when K <= kFused, else through row.
template <typename scalar_t, typename acc_t>
inline void mix_row_to(const scalar_t* bases, int64_t plane, int64_t num_bases, const acc_t* coef, int64_t count,
                       const acc_t* scale, acc_t* __restrict__ row, scalar_t* __restrict__ dst) {
  switch (num_bases) {
    case 1: return combine_rows_to<1>(bases, plane, coef, count, scale, dst);
    case 2: return combine_rows_to<2>(bases, plane, coef, count, scale, dst);
    case 3: return combine_rows_to<3>(bases, plane, coef, count, scale, dst);
    case 4: return combine_rows_to<4>(bases, plane, coef, count, scale, dst);
    default: break;
  }
  mix_row(bases, plane, num_bases, coef, count, row);
  for (int64_t j = 0; j < count; ++j) dst[j] = static_cast<scalar_t>(scale ? row[j] * scale[j] : row[j]);
}

// Σ_j a[j] · b[j] in acc_t over a fixed split into kLanes lanes (deterministic; several vector accumulators).
template <typename scalar_t, typename acc_t>
inline acc_t dot(const scalar_t* __restrict__ a, const acc_t* __restrict__ b, int64_t n) {
  constexpr int64_t kLanes = 64;
  acc_t lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += static_cast<acc_t>(a[j + l]) * b[j + l];
  }
  acc_t tail = 0;
  for (; j < n; ++j) tail += static_cast<acc_t>(a[j]) * b[j];
  for (int64_t width = kLanes / 2; width > 0; width /= 2) {
    for (int64_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  }
  return lanes[0] + tail;
}

// out[j] += a[j] · b[j]
template <typename scalar_t, typename acc_t>
inline void add_product(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, acc_t* __restrict__ out,
                        int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] += static_cast<acc_t>(a[j]) * static_cast<acc_t>(b[j]);
}

// MixTask (tasks.h): each row of the K bases is read once for the whole group (it stays in L1 across samples).
template <typename scalar_t, typename acc_t>
void run_mix(const MixTask<scalar_t, acc_t>& task) {
  const int64_t plane = task.d_out * task.d_in, num_bases = task.num_bases;
  acc_t* coef = task.scratch;
  acc_t* row = task.scratch + num_bases;
  for (int64_t r = 0; r < task.rows; ++r) {
    const int64_t o = task.o0 + r;
    for (int64_t s = task.first; s < task.first + task.count; ++s) {
      if (task.bounds[s + 1] == task.bounds[s]) continue;
      const acc_t scale = task.row_scale ? task.row_scale[s * task.d_out + o] : acc_t(1);
      for (int64_t k = 0; k < num_bases; ++k) coef[k] = task.beta[s * num_bases + k] * scale;
      mix_row_to(task.bases + o * task.d_in + task.i0, plane, num_bases, coef, task.cols,
                 task.col_scale ? task.col_scale + s * task.d_in + task.i0 : nullptr, row,
                 task.out + (s - task.first) * task.sample_stride + r * task.ld_out);
    }
  }
}

// out[j] += alpha · a[j]
template <typename acc_t>
inline void axpy(acc_t alpha, const acc_t* __restrict__ a, acc_t* __restrict__ out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] += alpha * a[j];
}

// WeightGradTask (tasks.h): the rows of B_k and dB_k stay in L1 across the group's samples.
template <typename scalar_t, typename acc_t>
void run_weight_grad(const WeightGradTask<scalar_t, acc_t>& task) {
  const int64_t d_in = task.d_in, d_out = task.d_out, num_bases = task.num_bases, plane = d_out * d_in;
  acc_t* __restrict__ q = task.scratch;
  for (int64_t r = 0; r < task.rows; ++r) {
    const int64_t o = task.o0 + r;
    for (int64_t s = task.first; s < task.first + task.count; ++s) {
      if (task.bounds[s + 1] == task.bounds[s]) continue;
      const acc_t* beta = task.beta + s * num_bases;
      const acc_t v = task.a_out[s * d_out + o];
      const scalar_t* __restrict__ h = task.outer + ((s - task.first) * task.tile + r) * d_in;
      const acc_t* __restrict__ u = task.a_in + s * d_in;
      for (int64_t i = 0; i < d_in; ++i) q[i] = static_cast<acc_t>(h[i]) * u[i];
      acc_t dv = 0;
      acc_t* part = task.parts + s * task.parts_stride;
      for (int64_t k = 0; k < num_bases; ++k) {
        const int64_t row_offset = k * plane + o * d_in;
        if (task.dbases) axpy(beta[k] * v, q, task.dbases + row_offset, d_in);
        if (!task.need_dots) continue;
        const acc_t dot_k = dot(task.bases + row_offset, q, d_in);
        dv += beta[k] * dot_k;
        part[k] += v * dot_k;
      }
      if (task.need_dots) task.dv[s * d_out + o] = dv;
    }
  }
}

}  // namespace fdlinear_native::cpu::FDLINEAR_CPU_ISA
