// simt: a small SIMT emulator that runs gencore's CUDA sources (csrc/**/*.cu) on the CPU.
//
// The .cu files are compiled as host C++ (build.py rewrites only their `<<<...>>>` launch
// syntax into simt::launch calls). Every CUDA thread of a block is a fiber; the fibers of
// a block run one after another on the calling OS thread and switch only where CUDA
// threads synchronize: __syncthreads, __syncwarp, shuffles, votes and the nvcuda::wmma
// collectives. Blocks run one at a time. Between those points a thread runs alone, so the
// emulator is deterministic for a given thread order, and a missing barrier shows up as a
// read of another thread's not-yet-written (poisoned) shared memory.
//
// Strict checks raise simt::Error (a std::runtime_error: RuntimeError in Python) that
// names the kernel, its launch site, the block, the thread and the source line: threads
// waiting at different barriers, a barrier or warp collective after some threads of the
// block (or lanes of the mask) exited, non-uniform or partial masks, misaligned wmma
// operands or leading dimensions, invalid launch configurations, deadlock.
//
// What it cannot check: timing, coalescing, bank conflicts, occupancy, the weak memory
// model between blocks (they run in order here), GPU-exact rounding (libm instead of the
// CUDA math library, a sequential sum instead of the tensor cores' order), the device
// allocator's 256-byte alignment (CPU tensors are 64-byte aligned), 2^31-element indexing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// ----------------------------------------------------------------- CUDA's basic types --
struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace simt {

// A source position inside kernel code (file and line of a barrier or collective).
struct Site {
  const char* file;
  int line;
};

#define SIMT_HERE (::simt::Site{__FILE__, __LINE__})

// One `kernel<<<...>>>` of a .cu file, filled in by the launch rewriter (build.py).
// max_threads / min_blocks: the kernel's __launch_bounds__, 0 when it has none.
struct LaunchSite {
  const char* file;
  int line;
  const char* kernel;
  int max_threads;
  int min_blocks;
};

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The coordinates of the thread that runs now; the scheduler sets them at every switch.
extern uint3 g_thread_idx;
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

// Emulated device properties and scheduling, set from the tests (runtime.cpp: simt_*).
int sm_count();

// Runs `body` once per thread of every block of the grid. `kernel` identifies the
// kernel function (its __shared__ variables are found from it and poisoned before each
// block).
void run_grid(const LaunchSite& site, const void* kernel, dim3 grid, dim3 block,
              std::size_t dynamic_smem, const std::function<void()>& body);

// Called by each thread once it has copied the launch's parameters (ThreadSanitizer: the
// launch's host-side objects may be reused once every thread has, even in an aborted block).
void thread_started();

// Block- and warp-wide operations, called from inside a kernel.
void syncthreads(Site site);
void syncwarp(Site site, unsigned mask = 0xffffffffu);

enum class ShflKind { kIdx, kUp, kDown, kXor };
uint64_t shfl_bits(Site site, unsigned mask, uint64_t bits, ShflKind kind, int arg, int width);

enum class VoteKind { kAll, kAny, kBallot };
unsigned vote(Site site, unsigned mask, bool pred, VoteKind kind);
unsigned active_mask();

// wmma: a warp collective over one 16 x 16 matrix. load: every lane copies the tile
// from memory into its fragment (`tile`, float) after the collective checks; store: lane l
// writes elements [8 l, 8 l + 8) of the tile; mma: d = a b + c computed once, copied to
// every lane. elem: 2 = half, 3 = bfloat16, 4 = float.
enum class WmmaOp { kLoad, kStore, kMma };
struct WmmaArgs {
  WmmaOp op;
  void* mem;       // load / store: the matrix in memory
  int elem;        // element code, see above
  unsigned ld;     // leading dimension, in elements
  bool col_major;  // the memory layout
  float* tile;     // this lane's fragment (load / store), or d (mma)
  const float* a;  // mma operands (row-major 16 x 16 each)
  const float* b;
  const float* c;
};
void wmma(Site site, const WmmaArgs& args);

template <typename T>
T shfl(Site site, unsigned mask, T v, ShflKind kind, int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a 1-8 byte value");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  b = shfl_bits(site, mask, b, kind, arg, width);
  T r;
  std::memcpy(&r, &b, sizeof(T));
  return r;
}

// `kernel<<<grid, block, smem, stream>>>(args...)` becomes
// `simt::launch(site, kernel, grid, block, smem, stream)(args...)`: the arguments are
// converted to the kernel's parameter types once, as CUDA does, and every thread gets its
// own copy (a kernel may modify its parameters).
template <typename... P>
struct Launcher {
  LaunchSite site;
  void (*kernel)(P...);
  dim3 grid, block;
  std::size_t smem;

  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(P), "kernel launched with the wrong argument count");
    const std::tuple<P...> params(static_cast<P>(std::forward<Args>(args))...);
    auto* k = kernel;
    run_grid(site, reinterpret_cast<const void*>(k), grid, block, smem, [&params, k] {
      std::tuple<P...> mine = params;
      void (*const fn)(P...) = k;
      thread_started();
      std::apply(fn, mine);
    });
  }
};

template <typename... P>
Launcher<P...> launch(const LaunchSite& site, void (*kernel)(P...), dim3 grid, dim3 block,
                      std::size_t smem = 0, cudaStream_t stream = nullptr) {
  (void)stream;  // one in-order stream: the launch runs to completion before it returns
  return Launcher<P...>{site, kernel, grid, block, smem};
}

}  // namespace simt
