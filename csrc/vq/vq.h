// Vector quantization: the nearest code of each row of x in a codebook, by squared
// Euclidean distance, tiled over code blocks with an online (minimum, index) merge so
// that the (N, K) matrix of distances is never stored.
//
// Everything here is device-agnostic (ATen ops by name through the stable dispatcher):
// the input checks, the code norms, the cosine normalization and the exact distance of
// the chosen code, all O((N + K) D). The O(N K D) search is one backend function,
// implemented once per device (vq_cpu.cpp, vq_cuda.cu) and passed in as a Backend:
//
//   Backend::search(x, codes, code_sq, index, best)
//     x: (N, D), codes: (K, D), contiguous, one dtype T; code_sq: (K,) contiguous, in
//     the accumulation dtype A (float32, or float64 for float64 inputs), code_sq[j] =
//     |codes_j|^2. Writes, for every row i,
//       best[i]  = min_j (code_sq[j] - 2 <x_i, codes_j>)       (N,) A
//       index[i] = the lowest j attaining that minimum         (N,) int64
//     (|x_i|^2 is the same for every j and left out). The products accumulate in A. A
//     NaN distance never wins; a row whose distances are all NaN gets index 0.
//
// The reported distance is recomputed exactly from the chosen code, |x_i - codes_j|^2
// summed in A, not taken from best[i]: the expanded form loses the digits that the norms
// cancel (|x|^2 = 1e4 leaves float32 a resolution of 1e-3 in a distance of 1e-2).
#pragma once

#include <tuple>

#include "common/checks.h"

namespace gencore {
namespace vq {

inline ScalarType acc_type(ScalarType st) { return st == kDouble ? kDouble : kFloat; }

inline void check_rows(const Tensor& t, const char* name, const char* shape_text) {
  check_floating(t, name);
  GENCORE_CHECK_VALUE(t.dim() == 2, "gencore: ", name, " must have shape ", shape_text,
                      ", got ", shape(t));
  if (t.is_cuda()) {
    check_dtype_supported_cuda(t, name);
  } else {
    check_dtype_supported_cpu(t, name);
  }
}

inline void check_operands(const Tensor& x, const Tensor& codebook) {
  check_rows(x, "x", "(N, D)");
  check_rows(codebook, "codebook", "(K, D)");
  check_same_device(x, "x", codebook, "codebook");
  check_same_dtype(x, "x", codebook, "codebook");
  GENCORE_CHECK_VALUE(x.size(1) == codebook.size(1),
                      "gencore: x and codebook must have the same code dimension D: got "
                      "x.shape=",
                      shape(x), " and codebook.shape=", shape(codebook));
  GENCORE_CHECK_VALUE(codebook.size(0) > 0,
                      "gencore: codebook must have at least one code, got shape ",
                      shape(codebook));
  GENCORE_CHECK_VALUE(codebook.size(0) < (int64_t{1} << 31),
                      "gencore: codebook may have at most 2^31 - 1 codes, got ",
                      codebook.size(0));
}

// Rows scaled to unit length in A (rows of norm below 1e-12 are divided by 1e-12, as
// torch.nn.functional.normalize does).
inline Tensor unit_rows(const Tensor& t, ScalarType acc) {
  const Tensor a = to_dtype(t, acc);
  return aten::div(a, aten::clamp_min(aten::row_norms(a), 1e-12));
}

// The operands the search sees (contiguous, input dtype) and their A copies.
struct Operands {
  Tensor x, codes;          // input dtype, contiguous: what the backend reads
  Tensor x_acc, codes_acc;  // the same values in A, for the exact distance
  ScalarType acc;
};

inline Operands prepare(const Tensor& x, const Tensor& codebook, bool cosine) {
  check_operands(x, codebook);
  const auto acc = acc_type(x.scalar_type());
  if (!cosine) {
    const Tensor xc = contig(x), cc = contig(codebook);
    return {xc, cc, to_dtype(xc, acc), to_dtype(cc, acc), acc};
  }
  // Cosine: both sides on the unit sphere, rounded to the input dtype once; the search
  // and the exact distance read the same rounded values.
  const Tensor xc = to_contig(unit_rows(x, acc), x.scalar_type());
  const Tensor cc = to_contig(unit_rows(codebook, acc), x.scalar_type());
  return {xc, cc, to_dtype(xc, acc), to_dtype(cc, acc), acc};
}

template <class Backend>
std::tuple<Tensor, Tensor> nearest_code_impl(const Tensor& x, const Tensor& codebook,
                                             bool cosine) {
  const Operands op = prepare(x, codebook, cosine);
  const int64_t n = x.size(0);
  Tensor index = empty({n}, x, kLong);
  if (n == 0) return {empty({0}, x), index};
  const Tensor code_sq = contig(aten::sum(aten::mul(op.codes_acc, op.codes_acc), 1));
  Tensor best = empty({n}, x, op.acc);
  Backend::search(op.x, op.codes, code_sq, index, best);
  const Tensor diff = aten::sub(op.x_acc, aten::index_select(op.codes_acc, 0, index));
  const Tensor sq_dist = aten::sum(aten::mul(diff, diff), 1);
  return {to_dtype(sq_dist, x.scalar_type()), index};
}

}  // namespace vq
}  // namespace gencore
