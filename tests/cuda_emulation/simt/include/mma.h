// Emulator stand-in for nvcuda::wmma (m16n16k16, __half / __nv_bfloat16 inputs, float
// accumulators). A fragment holds its whole 16 x 16 tile as float in every lane (so a
// kernel that indexes fragment elements, whose lane mapping is unspecified in CUDA, does
// not compile here); load_matrix_sync, store_matrix_sync and mma_sync are warp
// collectives that check the warp-uniform pointer, its 32-byte alignment and the leading
// dimension (runtime.cpp).
#pragma once

#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "simt.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "simt emulates wmma m16n16k16 only");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<T, float>
                                                 : (std::is_same_v<T, __half> ||
                                                    std::is_same_v<T, __nv_bfloat16>),
                "simt emulates half / bfloat16 operands with float accumulators");
  float tile_[256];  // row-major (i, j) for a and c/d, (k, j) for b
};

namespace detail {
template <typename T>
constexpr int elem() {
  return std::is_same_v<T, __half> ? 2 : std::is_same_v<T, __nv_bfloat16> ? 3 : 4;
}
inline void run(::simt::Site s, ::simt::WmmaOp op, const void* mem, int elem, unsigned ld,
                bool col_major, float* tile, const float* a = nullptr, const float* b = nullptr,
                const float* c = nullptr) {
  const ::simt::WmmaArgs args{op, const_cast<void*>(mem), elem, ld, col_major, tile, a, b, c};
  ::simt::wmma(s, args);
}
}  // namespace detail

template <typename T, typename L>
inline void load_matrix_sync_(::simt::Site s, fragment<matrix_a, 16, 16, 16, T, L>& f,
                              const T* p, unsigned ld) {
  detail::run(s, ::simt::WmmaOp::kLoad, p, detail::elem<T>(), ld,
              std::is_same_v<L, col_major>, f.tile_);
}
// b is stored (k, j): row_major means p[k * ld + j], col_major p[j * ld + k].
template <typename T, typename L>
inline void load_matrix_sync_(::simt::Site s, fragment<matrix_b, 16, 16, 16, T, L>& f,
                              const T* p, unsigned ld) {
  detail::run(s, ::simt::WmmaOp::kLoad, p, detail::elem<T>(), ld,
              std::is_same_v<L, col_major>, f.tile_);
}
inline void load_matrix_sync_(::simt::Site s, fragment<accumulator, 16, 16, 16, float>& f,
                              const float* p, unsigned ld, layout_t layout) {
  detail::run(s, ::simt::WmmaOp::kLoad, p, 4, ld, layout == mem_col_major, f.tile_);
}
inline void store_matrix_sync_(::simt::Site s, float* p,
                               const fragment<accumulator, 16, 16, 16, float>& f, unsigned ld,
                               layout_t layout) {
  detail::run(s, ::simt::WmmaOp::kStore, p, 4, ld, layout == mem_col_major,
              const_cast<float*>(f.tile_));
}
template <typename T, typename La, typename Lb>
inline void mma_sync_(::simt::Site s, fragment<accumulator, 16, 16, 16, float>& d,
                      const fragment<matrix_a, 16, 16, 16, T, La>& a,
                      const fragment<matrix_b, 16, 16, 16, T, Lb>& b,
                      const fragment<accumulator, 16, 16, 16, float>& c) {
  detail::run(s, ::simt::WmmaOp::kMma, nullptr, 4, 16, false, d.tile_, a.tile_, b.tile_,
              c.tile_);
}
template <typename Use, typename T, typename L>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float v) {
  for (float& e : f.tile_) e = v;
}

// The collectives carry the caller's source line for the emulator's messages.
#define load_matrix_sync(...) load_matrix_sync_(SIMT_HERE, __VA_ARGS__)
#define store_matrix_sync(...) store_matrix_sync_(SIMT_HERE, __VA_ARGS__)
#define mma_sync(...) mma_sync_(SIMT_HERE, __VA_ARGS__)

}  // namespace wmma
}  // namespace nvcuda
