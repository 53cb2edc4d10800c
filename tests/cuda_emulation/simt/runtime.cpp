// The SIMT emulator's scheduler (see simt.h): fibers, barriers, warp collectives, the
// kernel's __shared__ variables, launch checks, and the C interface the tests drive.
#include "simt.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <exception>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIMT_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define SIMT_TSAN 1
#endif

uint3 simt::g_thread_idx{0, 0, 0};
uint3 simt::g_block_idx{0, 0, 0};
dim3 simt::g_block_dim{1, 1, 1};
dim3 simt::g_grid_dim{1, 1, 1};

namespace simt {
namespace {

constexpr int kWarpSize = 32;
constexpr unsigned kMaxThreads = 1024;
constexpr std::size_t kMaxStaticShared = 48 * 1024;
#if defined(SIMT_ASAN) || defined(SIMT_TSAN)
constexpr std::size_t kStackBytes = 1 << 20;  // sanitizers' frames are larger
#else
constexpr std::size_t kStackBytes = 256 << 10;
#endif

#if defined(SIMT_TSAN)
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

// ThreadSanitizer sees each CUDA thread as a fiber, ordered only by the barriers (the
// switches themselves do not synchronize). The emulator's own bookkeeping is shared by
// the scheduler and the fibers without such order, so it runs inside a Quiet scope: its
// memory accesses are not recorded, and only the kernels' are checked for races.
struct Quiet {
#if defined(SIMT_TSAN)
  Quiet() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~Quiet() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
#else
  Quiet() = default;
#endif
  Quiet(const Quiet&) = delete;
  Quiet& operator=(const Quiet&) = delete;
};

// ------------------------------------------------------------------ settings ----------
enum class Order { kForward = 0, kReverse = 1, kRandom = 2 };

struct Settings {
  int sm_count = 132;  // an H100 SXM
  Order order = Order::kForward;
  uint64_t seed = 0;
};

Settings g_settings;
int64_t g_launches = 0;
int64_t g_blocks = 0;
std::mutex g_mutex;  // one launch at a time, process-wide

// ------------------------------------------------------------------ symbols -----------
// The kernel's __shared__ variables are its function-local statics (the emulator defines
// __shared__ as static). They are found in the library's ELF symbol table: a local
// static of function F is mangled "_ZZ" + F's encoding + "E" + name.
struct SharedVar {
  std::string name;
  std::size_t offset, size;  // offset from the library's load address
};

struct KernelInfo {
  std::string name;  // demangled
  std::vector<SharedVar> shared;
  std::size_t shared_bytes = 0;
};

std::string demangle(const std::string& mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> p(
      abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status), std::free);
  return status == 0 && p ? std::string(p.get()) : mangled;
}

class SymbolTable {
 public:
  explicit SymbolTable(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::vector<char> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (data.size() < sizeof(Elf64_Ehdr)) throw Error("simt: cannot read " + path);
    const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(data.data());
    const auto* sh = reinterpret_cast<const Elf64_Shdr*>(data.data() + eh->e_shoff);
    for (int i = 0; i < eh->e_shnum; ++i) {
      if (sh[i].sh_type != SHT_SYMTAB) continue;
      const char* strtab = data.data() + sh[sh[i].sh_link].sh_offset;
      const auto* sym = reinterpret_cast<const Elf64_Sym*>(data.data() + sh[i].sh_offset);
      const std::size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
      for (std::size_t k = 0; k < n; ++k) {
        const std::string name = strtab + sym[k].st_name;
        const int type = ELF64_ST_TYPE(sym[k].st_info);
        if (type == STT_FUNC && sym[k].st_value != 0) {
          funcs_.emplace(sym[k].st_value, name);
        } else if (type == STT_OBJECT && name.rfind("_ZZ", 0) == 0) {
          statics_.push_back({name, sym[k].st_value, sym[k].st_size});
        }
      }
    }
    if (funcs_.empty()) throw Error("simt: " + path + " has no symbol table (stripped?)");
  }

  KernelInfo kernel(std::size_t offset) const {
    const auto it = funcs_.find(offset);
    if (it == funcs_.end()) throw Error("simt: no symbol for the launched kernel");
    KernelInfo info;
    info.name = demangle(it->second);
    const std::string prefix = "_ZZ" + it->second.substr(2) + "E";
    for (const SharedVar& v : statics_) {
      if (v.name.rfind(prefix, 0) != 0) continue;
      info.shared.push_back(v);
      info.shared_bytes += v.size;
    }
    return info;
  }

 private:
  std::map<std::size_t, std::string> funcs_;
  std::vector<SharedVar> statics_;
};

const KernelInfo& kernel_info(const void* kernel, uintptr_t* base) {
  static std::map<const void*, KernelInfo> cache;
  static std::unique_ptr<SymbolTable> table;
  static uintptr_t lib_base = 0;
  Dl_info dl;
  if (dladdr(kernel, &dl) == 0) throw Error("simt: dladdr failed for a kernel");
  if (!table) {
    table = std::make_unique<SymbolTable>(dl.dli_fname);
    lib_base = reinterpret_cast<uintptr_t>(dl.dli_fbase);
  }
  *base = lib_base;
  auto it = cache.find(kernel);
  if (it == cache.end()) {
    it = cache.emplace(kernel, table->kernel(reinterpret_cast<uintptr_t>(kernel) - lib_base)).first;
  }
  return it->second;
}

// ------------------------------------------------------------------ fibers ------------
// The C library's swapcontext. ASan's interceptor of it clears the shadow of the target
// stack at every switch (a syscall, and the suspended frames' redzones are lost); the fiber
// annotations below tell ASan about the switches instead.
int (*real_swapcontext())(ucontext_t*, const ucontext_t*) {
#if defined(SIMT_ASAN)
  // From libc's own handle: RTLD_NEXT from a dlopen'ed library finds the preloaded
  // interceptor first.
  static auto* fn = [] {
    void* libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void* sym = libc != nullptr ? dlsym(libc, "swapcontext") : nullptr;
    return sym != nullptr ? reinterpret_cast<int (*)(ucontext_t*, const ucontext_t*)>(sym)
                          : &swapcontext;
  }();
  return fn;
#else
  return &swapcontext;
#endif
}

enum class State { kReady, kBarrier, kWarp, kExited };
enum class Coll { kSyncWarp, kShfl, kVote, kWmma };

struct Fiber {
  ucontext_t ctx;
  char* stack = nullptr;
  void* fake_stack = nullptr;  // ASan's fake stack while switched out
  void* tsan = nullptr;
  bool started = false;    // has a context (made once, reused by every block)
  bool abandoned = false;  // its last block was aborted: its stack holds stale frames
  uint3 tid{0, 0, 0};
  State state = State::kReady;
  Site site{nullptr, 0};
  // The pending warp collective.
  Coll coll = Coll::kSyncWarp;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int kind = 0, arg = 0, width = kWarpSize;
  const WmmaArgs* wmma = nullptr;
  std::exception_ptr error;
};

struct Run {
  const LaunchSite* site = nullptr;
  const KernelInfo* info = nullptr;
  uintptr_t base = 0;
  const std::function<void()>* body = nullptr;
  dim3 grid, block;
  uint3 block_idx{0, 0, 0};
  int threads = 0;
  std::deque<Fiber> fibers;  // a deque: growing it never moves a (saved) context
  int current = -1;
  ucontext_t sched;
  const void* sched_stack = nullptr;  // ASan: the scheduler's stack
  std::size_t sched_stack_size = 0;
  void* sched_tsan = nullptr;
  std::mt19937_64 rng;
  // TSan happens-before tokens: block start/end, the block barrier, each warp's __syncwarp.
  char block_start = 0, block_end = 0, barrier = 0;
  char warp_token[kMaxThreads / kWarpSize] = {};
};

Run g_run;

std::string fmt3(uint3 v) {
  std::ostringstream s;
  s << "(" << v.x << ", " << v.y << ", " << v.z << ")";
  return s.str();
}

std::string where(Site s) {
  std::ostringstream o;
  o << (s.file ? s.file : "?") << ":" << s.line;
  return o.str();
}

[[noreturn]] void fail(const std::string& problem, int thread = -1) {
  std::ostringstream m;
  m << "simt: " << problem << "\n  in kernel " << g_run.site->kernel << " launched at "
    << g_run.site->file << ":" << g_run.site->line << ", block " << fmt3(g_run.block_idx);
  if (thread >= 0) m << ", thread " << fmt3(g_run.fibers[thread].tid);
  m << "\n  (" << g_run.info->name << ")";
  throw Error(m.str());
}

void switch_to_fiber(int i) {
  Fiber& f = g_run.fibers[i];
  g_run.current = i;
  g_thread_idx = f.tid;
  g_block_idx = g_run.block_idx;
  g_block_dim = g_run.block;
  g_grid_dim = g_run.grid;
#if defined(SIMT_TSAN)
  __tsan_switch_to_fiber(f.tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(SIMT_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
  real_swapcontext()(&g_run.sched, &f.ctx);
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g_run.current = -1;
}

// From a fiber back to the scheduler; `final`: the fiber will not be resumed.
void switch_to_scheduler(Fiber& f, bool final) {
#if defined(SIMT_TSAN)
  __tsan_switch_to_fiber(g_run.sched_tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(SIMT_ASAN)
  __sanitizer_start_switch_fiber(final ? nullptr : &f.fake_stack, g_run.sched_stack,
                                 g_run.sched_stack_size);
#else
  (void)final;
#endif
  real_swapcontext()(&f.ctx, &g_run.sched);
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, &g_run.sched_stack, &g_run.sched_stack_size);
#endif
}

// A fiber's whole life: it runs the kernel body once per block, and between blocks it
// waits, exited, in the scheduler (so a context is made once, not once per block).
void trampoline(int i) {
  Fiber& f = g_run.fibers[i];
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &g_run.sched_stack, &g_run.sched_stack_size);
#endif
  for (;;) {
#if defined(SIMT_TSAN)
    __tsan_acquire(&g_run.block_start);
#endif
    const std::function<void()>* body;
    {
      Quiet q;
      body = g_run.body;
    }
    std::exception_ptr error;
    try {
      (*body)();
    } catch (...) {
      error = std::current_exception();
    }
#if defined(SIMT_TSAN)
    __tsan_release(&g_run.block_end);
#endif
    Quiet q;
    f.error = error;
    f.state = State::kExited;
    switch_to_scheduler(f, /*final=*/false);
  }
}

Fiber& self(const char* what) {
  if (g_run.current < 0) {
    throw Error(std::string("simt: ") + what + " called outside a kernel");
  }
  return g_run.fibers[g_run.current];
}

// Parks the calling thread at a barrier or collective until the scheduler releases it.
void park(Fiber& f) { switch_to_scheduler(f, /*final=*/false); }

// ------------------------------------------------------------------ collectives -------
const char* coll_name(const Fiber& f) {
  switch (f.coll) {
    case Coll::kSyncWarp: return "__syncwarp";
    case Coll::kShfl: return "a shuffle";
    case Coll::kVote: return "a vote";
    case Coll::kWmma:
      return f.wmma->op == WmmaOp::kLoad ? "wmma::load_matrix_sync"
             : f.wmma->op == WmmaOp::kStore ? "wmma::store_matrix_sync"
                                            : "wmma::mma_sync";
  }
  return "?";
}

std::string describe(const Fiber& f) {
  switch (f.state) {
    case State::kBarrier: return "__syncthreads at " + where(f.site);
    case State::kWarp: return std::string(coll_name(f)) + " at " + where(f.site);
    case State::kExited: return "exited";
    case State::kReady: return "running";
  }
  return "?";
}

int elem_bytes(int elem) { return elem == 4 ? 4 : 2; }

void check_wmma(int first, int lane0, int lanes) {
  const Fiber& f0 = g_run.fibers[first];
  const WmmaArgs& a0 = *f0.wmma;
  for (int l = 0; l < lanes; ++l) {
    const WmmaArgs& a = *g_run.fibers[lane0 + l].wmma;
    if (a.op != a0.op || a.mem != a0.mem || a.ld != a0.ld || a.col_major != a0.col_major) {
      fail(std::string(coll_name(f0)) + " at " + where(f0.site) +
               ": operands differ between the lanes of the warp (pointer, ld and layout must "
               "be warp-uniform)",
           lane0 + l);
    }
  }
  if (a0.op == WmmaOp::kMma) return;
  if (reinterpret_cast<uintptr_t>(a0.mem) % 32 != 0) {
    std::ostringstream m;
    m << coll_name(f0) << " at " << where(f0.site) << ": pointer " << a0.mem
      << " is not 32-byte (256-bit) aligned";
    fail(m.str(), first);
  }
  const unsigned ld_bytes = a0.ld * static_cast<unsigned>(elem_bytes(a0.elem));
  if (a0.ld < 16 || ld_bytes % 16 != 0) {
    std::ostringstream m;
    m << coll_name(f0) << " at " << where(f0.site) << ": leading dimension " << a0.ld << " ("
      << ld_bytes << " bytes) must be >= 16 and a multiple of 16 bytes";
    fail(m.str(), first);
  }
}

void complete_warp(int lane0, int lanes, int first) {
  Fiber& f0 = g_run.fibers[first];
  switch (f0.coll) {
    case Coll::kSyncWarp:
      break;
    case Coll::kShfl: {
      const int w = f0.width;
      if (w <= 0 || w > kWarpSize || (w & (w - 1)) != 0) {
        fail("shuffle at " + where(f0.site) + ": width " + std::to_string(w) +
                 " is not a power of two <= 32",
             first);
      }
      for (int l = 0; l < lanes; ++l) {
        Fiber& f = g_run.fibers[lane0 + l];
        const int base = l - l % w;
        int src = l;
        switch (static_cast<ShflKind>(f.kind)) {
          case ShflKind::kIdx: src = base + ((f.arg % w) + w) % w; break;
          case ShflKind::kUp: src = l - f.arg >= base ? l - f.arg : l; break;
          case ShflKind::kDown: src = l + f.arg < base + w ? l + f.arg : l; break;
          case ShflKind::kXor: src = (l ^ f.arg) < base + w ? (l ^ f.arg) : l; break;
        }
        if (src >= lanes) fail("shuffle at " + where(f.site) + " reads a lane outside the block", lane0 + l);
        f.result = g_run.fibers[lane0 + src].value;
      }
      break;
    }
    case Coll::kVote: {
      unsigned ballot = 0;
      for (int l = 0; l < lanes; ++l)
        if (g_run.fibers[lane0 + l].value) ballot |= 1u << l;
      const unsigned full = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
      for (int l = 0; l < lanes; ++l) {
        Fiber& f = g_run.fibers[lane0 + l];
        switch (static_cast<VoteKind>(f.kind)) {
          case VoteKind::kAll: f.result = ballot == full; break;
          case VoteKind::kAny: f.result = ballot != 0; break;
          case VoteKind::kBallot: f.result = ballot; break;
        }
      }
      break;
    }
    case Coll::kWmma: {
      check_wmma(first, lane0, lanes);
      if (f0.wmma->op == WmmaOp::kMma) {
        const WmmaArgs& a = *f0.wmma;
        float d[256];
        for (int i = 0; i < 16; ++i)
          for (int j = 0; j < 16; ++j) {
            float acc = a.c[i * 16 + j];
            for (int k = 0; k < 16; ++k) acc = std::fma(a.a[i * 16 + k], a.b[k * 16 + j], acc);
            d[i * 16 + j] = acc;
          }
        for (int l = 0; l < lanes; ++l) std::memcpy(g_run.fibers[lane0 + l].wmma->tile, d, sizeof d);
      }
      break;
    }
  }
  for (int l = 0; l < lanes; ++l) g_run.fibers[lane0 + l].state = State::kReady;
}

// All threads are parked or exited: complete what can be completed, or report why
// nothing can. Returns false when every thread has exited.
bool resolve() {
  const int n = g_run.threads;
  bool progressed = false;
  for (int lane0 = 0; lane0 < n; lane0 += kWarpSize) {
    const int lanes = std::min(kWarpSize, n - lane0);
    int first = -1;
    for (int l = 0; l < lanes && first < 0; ++l)
      if (g_run.fibers[lane0 + l].state == State::kWarp) first = lane0 + l;
    if (first < 0) continue;
    const Fiber& f0 = g_run.fibers[first];
    const unsigned full = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    for (int l = 0; l < lanes; ++l) {
      const Fiber& f = g_run.fibers[lane0 + l];
      if (f.state == State::kWarp && f.mask != f0.mask) {
        std::ostringstream m;
        m << "non-uniform masks in the warp: " << coll_name(f0) << " at " << where(f0.site)
          << " with mask 0x" << std::hex << f0.mask << ", " << coll_name(f) << " at "
          << where(f.site) << " with mask 0x" << f.mask;
        fail(m.str(), lane0 + l);
      }
    }
    if (f0.mask != full) {
      std::ostringstream m;
      m << coll_name(f0) << " at " << where(f0.site) << ": mask 0x" << std::hex << f0.mask
        << ((f0.mask & ~full) ? " names lanes that do not exist" : " is a partial warp")
        << " (the warp's lanes are 0x" << full << ")";
      fail(m.str(), first);
    }
    for (int l = 0; l < lanes; ++l) {
      const Fiber& f = g_run.fibers[lane0 + l];
      if (f.state == State::kExited) {
        fail(std::string(coll_name(f0)) + " at " + where(f0.site) + " after lane " +
                 std::to_string(l) + " of the warp exited",
             first);
      }
      if (f.state != State::kWarp || f.coll != f0.coll || f.site.line != f0.site.line ||
          std::strcmp(f.site.file, f0.site.file) != 0) {
        fail("divergent warp: lane " + std::to_string(first - lane0) + " waits at " +
                 describe(f0) + ", lane " + std::to_string(l) + " at " + describe(f),
             lane0 + l);
      }
    }
    complete_warp(lane0, lanes, first);
    progressed = true;
  }
  if (progressed) return true;

  int exited = 0, first = -1;
  for (int i = 0; i < n; ++i) {
    const Fiber& f = g_run.fibers[i];
    if (f.state == State::kExited) {
      ++exited;
    } else if (f.state != State::kBarrier) {
      fail("deadlock: thread waits at " + describe(f) + " and nothing can release it", i);
    } else if (first < 0) {
      first = i;
    }
  }
  if (exited == n) return false;
  const Fiber& f0 = g_run.fibers[first];
  if (exited > 0) {
    int gone = 0;
    while (g_run.fibers[gone].state != State::kExited) ++gone;
    fail("__syncthreads at " + where(f0.site) + " after " + std::to_string(exited) +
             " thread(s) of the block exited (e.g. thread " + fmt3(g_run.fibers[gone].tid) +
             ")",
         first);
  }
  for (int i = 0; i < n; ++i) {
    const Fiber& f = g_run.fibers[i];
    if (f.site.line != f0.site.line || std::strcmp(f.site.file, f0.site.file) != 0) {
      fail("threads wait at different barriers: thread " + fmt3(f0.tid) + " at " +
               where(f0.site) + ", thread " + fmt3(f.tid) + " at " + where(f.site),
           i);
    }
  }
  for (Fiber& f : g_run.fibers) f.state = State::kReady;
  return true;
}

std::vector<int> thread_order(int n) {
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  if (g_settings.order == Order::kReverse) std::reverse(order.begin(), order.end());
  if (g_settings.order == Order::kRandom) std::shuffle(order.begin(), order.end(), g_run.rng);
  return order;
}

void run_block(uint3 b) {
  g_run.block_idx = b;
  for (const SharedVar& v : g_run.info->shared) {
    std::memset(reinterpret_cast<void*>(g_run.base + v.offset), 0xFF, v.size);
  }
#if defined(SIMT_TSAN)
  __tsan_release(&g_run.block_start);
#endif
  const dim3 bd = g_run.block;
  for (int i = 0; i < g_run.threads; ++i) {
    Fiber& f = g_run.fibers[i];
    f.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    f.state = State::kReady;
    f.error = nullptr;
    if (f.started && !f.abandoned) continue;  // parked at the end of its last block
#if defined(SIMT_ASAN)
    // The frames of an aborted block never returned: their redzones are still poisoned.
    if (f.abandoned) __asan_unpoison_memory_region(f.stack, kStackBytes);
#endif
    f.fake_stack = nullptr;
    f.abandoned = false;
    f.started = true;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, reinterpret_cast<void (*)()>(&trampoline), 1, i);
  }
  for (;;) {
    for (int i : thread_order(g_run.threads)) {
      if (g_run.fibers[i].state != State::kReady) continue;
      switch_to_fiber(i);
      if (g_run.fibers[i].error) {
        try {
          std::rethrow_exception(g_run.fibers[i].error);
        } catch (const std::exception& e) {
          fail(std::string("exception in kernel code: ") + e.what(), i);
        }
      }
    }
    if (!resolve()) break;
  }
#if defined(SIMT_TSAN)
  __tsan_acquire(&g_run.block_end);
#endif
  ++g_blocks;
}

void ensure_fibers(int n) {
  auto& fs = g_run.fibers;
  while (static_cast<int>(fs.size()) < n) {
    Fiber& f = fs.emplace_back();
    void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw Error("simt: cannot map a fiber stack");
    f.stack = static_cast<char*>(p);
#if defined(SIMT_TSAN)
    f.tsan = __tsan_create_fiber(0);
#endif
  }
}

void check_launch(const LaunchSite& site, const KernelInfo& info, dim3 grid, dim3 block,
                  std::size_t dynamic_smem) {
  std::ostringstream m;
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.x > 1024 || block.y > 1024 || block.z > 64) {
    m << "invalid block " << fmt3({block.x, block.y, block.z}) << ": " << threads
      << " threads (at most 1024; x, y <= 1024, z <= 64)";
  } else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u ||
             grid.y > 65535 || grid.z > 65535) {
    m << "invalid grid " << fmt3({grid.x, grid.y, grid.z})
      << " (x in [1, 2^31 - 1], y and z in [1, 65535])";
  } else if (site.max_threads > 0 && threads > static_cast<uint64_t>(site.max_threads)) {
    m << "block of " << threads << " threads exceeds the kernel's __launch_bounds__("
      << site.max_threads << ")";
  } else if (dynamic_smem > 0) {
    m << "dynamic shared memory (" << dynamic_smem << " bytes) is not emulated";
  } else if (info.shared_bytes > kMaxStaticShared) {
    m << "static shared memory of " << info.shared_bytes << " bytes exceeds 48 KiB";
  } else {
    return;
  }
  throw Error("simt: " + m.str() + "\n  in kernel " + site.kernel + " launched at " + site.file +
              ":" + std::to_string(site.line) + "\n  (" + info.name + ")");
}

}  // namespace

int sm_count() { return g_settings.sm_count; }

void run_grid(const LaunchSite& site, const void* kernel, dim3 grid, dim3 block,
              std::size_t dynamic_smem, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Quiet quiet;  // the scheduler's side (the kernels run in the fibers)
  uintptr_t base = 0;
  const KernelInfo& info = kernel_info(kernel, &base);
  check_launch(site, info, grid, block, dynamic_smem);
  g_run.site = &site;
  g_run.info = &info;
  g_run.base = base;
  g_run.body = &body;
  g_run.grid = grid;
  g_run.block = block;
  g_run.threads = static_cast<int>(block.x * block.y * block.z);
  g_run.rng.seed(g_settings.seed);
#if defined(SIMT_TSAN)
  g_run.sched_tsan = __tsan_get_current_fiber();
#endif
  ensure_fibers(g_run.threads);
  ++g_launches;
  std::vector<uint3> blocks;
  blocks.reserve(uint64_t{grid.x} * grid.y * grid.z);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) blocks.push_back({x, y, z});
  if (g_settings.order == Order::kReverse) std::reverse(blocks.begin(), blocks.end());
  if (g_settings.order == Order::kRandom) std::shuffle(blocks.begin(), blocks.end(), g_run.rng);
  try {
    for (const uint3& b : blocks) run_block(b);
  } catch (...) {
    for (Fiber& f : g_run.fibers) f.abandoned = true;
#if defined(SIMT_TSAN)
    __tsan_acquire(&g_run.block_end);
#endif
    throw;
  }
}

void thread_started() {
#if defined(SIMT_TSAN)
  __tsan_release(&g_run.block_end);
#endif
}

void syncthreads(Site site) {
  Quiet q;
  Fiber& f = self("__syncthreads");
  f.site = site;
  f.state = State::kBarrier;
#if defined(SIMT_TSAN)
  __tsan_release(&g_run.barrier);
#endif
  park(f);
#if defined(SIMT_TSAN)
  __tsan_acquire(&g_run.barrier);
#endif
}

namespace {
uint64_t warp_collective(Site site, Coll coll, unsigned mask, uint64_t value, int kind, int arg,
                         int width, const WmmaArgs* wmma) {
  Quiet q;
  Fiber& f = self("a warp collective");
  f.site = site;
  f.state = State::kWarp;
  f.coll = coll;
  f.mask = mask;
  f.value = value;
  f.kind = kind;
  f.arg = arg;
  f.width = width;
  f.wmma = wmma;
  park(f);
  return f.result;
}
}  // namespace

void syncwarp(Site site, unsigned mask) {
#if defined(SIMT_TSAN)
  char* token;
  {
    Quiet q;
    token = &g_run.warp_token[g_run.current / kWarpSize];
  }
  __tsan_release(token);
#endif
  warp_collective(site, Coll::kSyncWarp, mask, 0, 0, 0, kWarpSize, nullptr);
#if defined(SIMT_TSAN)
  __tsan_acquire(token);
#endif
}

uint64_t shfl_bits(Site site, unsigned mask, uint64_t bits, ShflKind kind, int arg, int width) {
  return warp_collective(site, Coll::kShfl, mask, bits, static_cast<int>(kind), arg, width,
                         nullptr);
}

unsigned vote(Site site, unsigned mask, bool pred, VoteKind kind) {
  return static_cast<unsigned>(warp_collective(site, Coll::kVote, mask, pred ? 1 : 0,
                                               static_cast<int>(kind), 0, kWarpSize, nullptr));
}

unsigned active_mask() {
  Quiet q;
  // Threads of a warp run the same code between collectives here: all live lanes.
  self("__activemask");
  const int lane0 = g_run.current / kWarpSize * kWarpSize;
  unsigned m = 0;
  for (int l = 0; l < kWarpSize && lane0 + l < g_run.threads; ++l)
    if (g_run.fibers[lane0 + l].state != State::kExited) m |= 1u << l;
  return m;
}

namespace {
float load_elem(const void* mem, int elem, std::size_t i) {
  uint16_t bits;
  switch (elem) {
    case 2: {
      std::memcpy(&bits, static_cast<const char*>(mem) + 2 * i, 2);
      uint32_t sign = (bits & 0x8000u) << 16, exp = (bits >> 10) & 0x1f, man = bits & 0x3ff;
      float v;
      if (exp == 0) {
        v = std::ldexp(static_cast<float>(man), -24);
      } else if (exp == 31) {
        v = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
      } else {
        v = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
      }
      return sign ? -v : v;
    }
    case 3: {
      std::memcpy(&bits, static_cast<const char*>(mem) + 2 * i, 2);
      const uint32_t w = static_cast<uint32_t>(bits) << 16;
      float v;
      std::memcpy(&v, &w, 4);
      return v;
    }
    default: {
      float v;
      std::memcpy(&v, static_cast<const char*>(mem) + 4 * i, 4);
      return v;
    }
  }
}
}  // namespace

void wmma(Site site, const WmmaArgs& args) {
  warp_collective(site, Coll::kWmma, 0xffffffffu, 0, 0, 0, kWarpSize, &args);
  int lane;
  {
    Quiet q;
    lane = g_run.current % kWarpSize;
  }
  for (int e = 0; e < 256; ++e) {
    const int i = e / 16, j = e % 16;
    const std::size_t at = args.col_major ? std::size_t(j) * args.ld + i : std::size_t(i) * args.ld + j;
    if (args.op == WmmaOp::kLoad) {
      args.tile[e] = load_elem(args.mem, args.elem, at);
    } else if (args.op == WmmaOp::kStore && e / 8 == lane) {
      if (args.elem != 4) throw Error("simt: wmma store of a non-float accumulator");
      static_cast<float*>(args.mem)[at] = args.tile[e];
    }
  }
}

}  // namespace simt

// ------------------------------------------------------------------ C interface -------
// For the tests (ctypes): emulated device properties, scheduling order, counters.
extern "C" {
__attribute__((visibility("default"))) int simt_configure(int sm_count, int order,
                                                          unsigned long long seed) {
  if (sm_count < 1 || order < 0 || order > 2) return -1;
  std::lock_guard<std::mutex> lock(simt::g_mutex);
  simt::g_settings.sm_count = sm_count;
  simt::g_settings.order = static_cast<simt::Order>(order);
  simt::g_settings.seed = seed;
  return 0;
}
__attribute__((visibility("default"))) long long simt_launch_count() { return simt::g_launches; }
__attribute__((visibility("default"))) long long simt_block_count() { return simt::g_blocks; }
}
