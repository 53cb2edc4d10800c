// Small kernels that exercise the SIMT emulator itself (tests/cuda_emulation/test_emulator.py):
// correct collectives, and one deliberate mistake per strict check. Built into the emulated
// library only (build.py); called through the C function simt_probe.
#include <mma.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

namespace {

constexpr int kW = 32;

// out[0..n): shuffles and votes of one warp.
__global__ void collectives_kernel(float* out) {
  const int lane = threadIdx.x;
  const float v = static_cast<float>(lane);
  out[lane] = __shfl_xor_sync(0xffffffffu, v, 5);
  out[kW + lane] = __shfl_up_sync(0xffffffffu, v, 3);
  out[2 * kW + lane] = __shfl_down_sync(0xffffffffu, v, 3);
  out[3 * kW + lane] = __shfl_sync(0xffffffffu, v, 7);
  out[4 * kW + lane] = __shfl_xor_sync(0xffffffffu, v, 1, 8);  // width 8
  out[5 * kW + lane] = static_cast<float>(__ballot_sync(0xffffffffu, lane % 3 == 0) & 0xffff);
  out[6 * kW + lane] = __any_sync(0xffffffffu, lane == 31) ? 1.0f : 0.0f;
  out[7 * kW + lane] = __all_sync(0xffffffffu, lane < 31) ? 1.0f : 0.0f;
}

// A block-wide sum through shared memory, with the barriers it needs, plus an atomic.
__global__ void block_sum_kernel(const float* x, float* out, int* counter) {
  __shared__ float part[256];
  part[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = part[0];
  atomicAdd(counter, 1);
}

// Thread 0 reads an element of shared memory nobody wrote: the poison (all bits set, a
// NaN). (Thread 1 writes another element, so the compiler cannot fold the read to the
// zero a C++ static starts with.)
__global__ void unwritten_shared_kernel(float* out) {
  __shared__ float s[64];
  if (threadIdx.x == 1) s[threadIdx.x + 8] = 1.0f;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = s[3];
}

// A race without a barrier: what thread 0 reads depends on the thread order.
__global__ void race_kernel(float* out) {
  __shared__ float s[1];
  if (threadIdx.x == 0) s[0] = 1.0f;
  if (threadIdx.x == 1) out[0] = s[0];
}

__global__ void different_barriers_kernel() {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

// On a GPU this hangs: thread 0 waits at a barrier the others never reach.
__global__ void barrier_after_exit_kernel() {
  for (unsigned i = 0; i < (threadIdx.x == 0 ? 2u : 1u); ++i) __syncthreads();
}

__global__ void shuffle_after_exit_kernel(float* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void partial_mask_kernel(float* out) {
  out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, 1.0f, 1);
}

__global__ void nonuniform_mask_kernel(float* out) {
  const unsigned mask = threadIdx.x == 7 ? 0x7fffffffu : 0xffffffffu;
  out[threadIdx.x] = __shfl_xor_sync(mask, 1.0f, 1);
}

__global__ void divergent_warp_kernel(float* out) {
  if (threadIdx.x < 16) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  } else {
    out[threadIdx.x] = __any_sync(0xffffffffu, true) ? 1.0f : 0.0f;
  }
}

// d = a b for one 16 x 16 x 16 tile; `offset` (halves) and `ld` make the operands bad.
__global__ void wmma_kernel(const __half* a, const __half* b, float* d, int offset, int ld) {
  namespace wmma = nvcuda::wmma;
  struct alignas(32) Tile {
    __half v[16 * 48 + 16];
  };
  __shared__ Tile tile;
  __half* sa = tile.v;
  const int lane = threadIdx.x;
  for (int e = lane; e < 256; e += kW) sa[offset + (e / 16) * ld + e % 16] = a[e];
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, sa + offset, ld);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(d, fc, 16, wmma::mem_row_major);
}

__global__ void __launch_bounds__(64) bounded_kernel(float* out) { out[threadIdx.x] = 1.0f; }

__global__ void big_shared_kernel(float* out) {
  __shared__ float big[13 * 1024];  // 52 KiB
  big[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = big[(threadIdx.x + 1) % 32];
}

__global__ void empty_kernel() {}

int run(const std::string& name, float* buf, int* ibuf) {
  if (name == "collectives") {
    collectives_kernel<<<1, kW>>>(buf);
  } else if (name == "block_sum") {
    // buf[0..1024): input, buf[1024..1028): the four block sums
    block_sum_kernel<<<4, 256>>>(buf, buf + 1024, ibuf);
  } else if (name == "unwritten_shared") {
    unwritten_shared_kernel<<<1, 64>>>(buf);
  } else if (name == "race") {
    race_kernel<<<1, 2>>>(buf);
  } else if (name == "different_barriers") {
    different_barriers_kernel<<<1, 64>>>();
  } else if (name == "barrier_after_exit") {
    barrier_after_exit_kernel<<<1, 64>>>();
  } else if (name == "shuffle_after_exit") {
    shuffle_after_exit_kernel<<<1, kW>>>(buf);
  } else if (name == "partial_mask") {
    partial_mask_kernel<<<1, kW>>>(buf);
  } else if (name == "nonuniform_mask") {
    nonuniform_mask_kernel<<<1, kW>>>(buf);
  } else if (name == "divergent_warp") {
    divergent_warp_kernel<<<1, kW>>>(buf);
  } else if (name.rfind("wmma", 0) == 0) {
    // buf: a (256 halves) | b (256 halves) | d (256 floats), 32-byte aligned by the caller
    auto* a = reinterpret_cast<const __half*>(buf);
    const int offset = name == "wmma_misaligned" ? 4 : 0;
    const int ld = name == "wmma_bad_ld" ? 20 : 16;
    wmma_kernel<<<1, kW>>>(a, a + 256, buf + 256, offset, ld);
  } else if (name == "too_many_threads") {
    empty_kernel<<<1, 2048>>>();
  } else if (name == "empty_grid") {
    empty_kernel<<<0, 32>>>();
  } else if (name == "launch_bounds") {
    bounded_kernel<<<1, 128>>>(buf);
  } else if (name == "big_shared") {
    big_shared_kernel<<<1, 32>>>(buf);
  } else {
    return 2;
  }
  return 0;
}

}  // namespace

// Runs probe `name` on the caller's buffers. Returns 0 when it ran, 1 when the emulator
// raised (its message copied into msg), 2 for an unknown name.
extern "C" __attribute__((visibility("default"))) int simt_probe(const char* name, float* buf,
                                                                 int* ibuf, char* msg, int cap) {
  try {
    return run(name, buf, ibuf);
  } catch (const std::exception& e) {
    std::strncpy(msg, e.what(), static_cast<size_t>(cap) - 1);
    msg[cap - 1] = '\0';
    return 1;
  }
}
