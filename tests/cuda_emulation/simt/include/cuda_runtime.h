// Emulator stand-in for the CUDA runtime header: qualifiers, built-in variables, the
// device intrinsics gencore's kernels use, and the runtime calls of its launchers.
// Force-included (through prelude.h) into every .cu compiled by the emulator.
#pragma once

#include <math.h>  // ::exp(float) etc. resolve to the float overloads, as in CUDA

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simt.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// Blocks run one at a time, so a kernel's function-local statics serve as its block's
// shared memory; the scheduler poisons them (0xFF) before every block.
#define __shared__ static
#define __constant__ static const

#define threadIdx (::simt::g_thread_idx)
#define blockIdx (::simt::g_block_idx)
#define blockDim (::simt::g_block_dim)
#define gridDim (::simt::g_grid_dim)
#define warpSize 32

#define __syncthreads() ::simt::syncthreads(SIMT_HERE)
#define __syncwarp(...) ::simt::syncwarp(SIMT_HERE __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(mask, v, src, ...) \
  ::simt::shfl(SIMT_HERE, mask, v, ::simt::ShflKind::kIdx, src, SIMT_WIDTH(__VA_ARGS__))
#define __shfl_up_sync(mask, v, d, ...) \
  ::simt::shfl(SIMT_HERE, mask, v, ::simt::ShflKind::kUp, d, SIMT_WIDTH(__VA_ARGS__))
#define __shfl_down_sync(mask, v, d, ...) \
  ::simt::shfl(SIMT_HERE, mask, v, ::simt::ShflKind::kDown, d, SIMT_WIDTH(__VA_ARGS__))
#define __shfl_xor_sync(mask, v, m, ...) \
  ::simt::shfl(SIMT_HERE, mask, v, ::simt::ShflKind::kXor, m, SIMT_WIDTH(__VA_ARGS__))
#define SIMT_WIDTH(...) (32 __VA_OPT__(*0 + (__VA_ARGS__)))
#define __all_sync(mask, p) (::simt::vote(SIMT_HERE, mask, (p), ::simt::VoteKind::kAll) != 0)
#define __any_sync(mask, p) (::simt::vote(SIMT_HERE, mask, (p), ::simt::VoteKind::kAny) != 0)
#define __ballot_sync(mask, p) ::simt::vote(SIMT_HERE, mask, (p), ::simt::VoteKind::kBallot)
#define __activemask() ::simt::active_mask()

// ---- device functions ----
template <typename T>
inline T min(T a, T b) { return b < a ? b : a; }
template <typename T>
inline T max(T a, T b) { return a < b ? b : a; }
template <typename T, typename U, typename = std::enable_if_t<!std::is_same_v<T, U>>>
inline std::common_type_t<T, U> min(T a, U b) { return min<std::common_type_t<T, U>>(a, b); }
template <typename T, typename U, typename = std::enable_if_t<!std::is_same_v<T, U>>>
inline std::common_type_t<T, U> max(T a, U b) { return max<std::common_type_t<T, U>>(a, b); }

inline unsigned __float_as_uint(float v) { return __builtin_bit_cast(unsigned, v); }
inline float __uint_as_float(unsigned v) { return __builtin_bit_cast(float, v); }
inline int __float_as_int(float v) { return __builtin_bit_cast(int, v); }
inline float __int_as_float(int v) { return __builtin_bit_cast(float, v); }
inline long long __double_as_longlong(double v) { return __builtin_bit_cast(long long, v); }
inline double __longlong_as_double(long long v) { return __builtin_bit_cast(double, v); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline float __expf(float v) { return expf(v); }
inline float __logf(float v) { return logf(v); }
inline float __sinf(float v) { return sinf(v); }
inline float __cosf(float v) { return cosf(v); }
inline float __fdividef(float a, float b) { return a / b; }
// Round-to-nearest products that a compiler must not fuse into an fma: out of line.
__attribute__((noinline)) inline float __fmul_rn(float a, float b) { return a * b; }
__attribute__((noinline)) inline double __dmul_rn(double a, double b) { return a * b; }
inline float rsqrtf(float v) { return 1.0f / sqrtf(v); }
inline double rsqrt(double v) { return 1.0 / sqrt(v); }
inline float __saturatef(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }
template <typename T>
inline T __ldg(const T* p) { return *p; }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// Atomics: real atomic instructions, so ThreadSanitizer sees them as such.
template <typename T>
inline T atomicAdd(T* p, T v) {
  if constexpr (std::is_integral_v<T>) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
  } else {
    T old, desired;
    __atomic_load(p, &old, __ATOMIC_SEQ_CST);
    do {
      desired = old + v;
    } while (!__atomic_compare_exchange(p, &old, &desired, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST));
    return old;
  }
}
template <typename T>
inline T atomicMax(T* p, T v) { return __atomic_fetch_max(p, v, __ATOMIC_SEQ_CST); }
template <typename T>
inline T atomicMin(T* p, T v) { return __atomic_fetch_min(p, v, __ATOMIC_SEQ_CST); }
template <typename T>
inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
template <typename T>
inline T atomicCAS(T* p, T expected, T desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected;
}

// ---- vector types ----
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }

// ---- runtime API used by the launchers ----
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
};

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  (void)device;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = ::simt::sm_count(); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "emulated CUDA runtime error";
}
