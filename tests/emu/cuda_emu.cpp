// decdec_rt CUDA emulator: fibers, grids and the part of the CUDA runtime API the backend uses
// (see cuda_emu.h for what is and is not modelled).
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace ddrt_emu {
namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "CUDA emulator: %s\n", what);
  std::abort();
}

// ---- fibers: a context switch saves the callee-saved registers and swaps stacks -----------------
#if defined(__x86_64__)
extern "C" void ddrt_emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl ddrt_emu_switch
.type ddrt_emu_switch,@function
ddrt_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size ddrt_emu_switch,.-ddrt_emu_switch
.section .note.GNU-stack,"",@progbits
)");
#endif

constexpr size_t kStack = 256 << 10;  // per fiber (kernels keep arrays in "registers")
constexpr int kMaxWorkers = 16;       // blocks running at once (the co-resident grid)

enum class St { Ready, Bar, Warp, Done };

struct Fiber {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  uint3 tid{};
  int lin = 0, lane = 0, warp = 0;
  St st = St::Ready;
  int coll = 0;  // collectives this lane has entered
  // cp.async: copies issued and not landed, and the end of each committed group in them
  struct Copy {
    void* dst;
    unsigned char data[16];
    int bytes;
  };
  std::vector<Copy> copies;
  std::vector<size_t> group_end;
};

// A warp's collectives alternate between two sets of slots: a lane reads collective c's values
// after it completes, and no lane can enter c + 2 (the same set) before every lane has entered
// c + 1, i.e. has finished reading c.
struct WarpState {
  bool pending = false;
  unsigned mask = 0, arrived = 0, gone = 0;  // gone: exited or absent lanes
  unsigned done_arrived[2] = {0, 0};           // who took part in the last completed collective per set
  size_t bytes = 0;
  int set = 0;
  unsigned char slots[2][32][kSlot];
};

// An mbarrier of the running block (mbar_init and after, cuda_emu.h).
struct Mbar {
  int count = 0, pending = 0;  // arrivals per phase, still missing in this one
  uint32_t phase = 0;
  int64_t tx_expected = 0, tx_copied = 0;
  int64_t spins = 0;  // failed waits on this phase
  // the warp whose thread initialized it, and the block barriers passed by then: another warp may
  // use it only after a __syncthreads (racecheck reports the init against that use otherwise)
  int init_warp = -1;
  uint64_t init_epoch = 0;
  struct Copy {
    void* dst;
    std::vector<unsigned char> data;
  };
  std::vector<Copy> copies;  // issued in this phase, not landed
};
constexpr uint64_t kMbarMark = 0x6d62617272696572ull;  // "mbarrier"

struct Worker;
thread_local Worker* tw = nullptr;

struct Worker {
#if defined(__x86_64__)
  void* main_sp = nullptr;
#else
  ucontext_t main_uc;
#endif
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
  char* stacks = nullptr;
  size_t n_stacks = 0;
  Fiber* cur = nullptr;
  uint3 bidx{};
  dim3 bdim, gdim;
  unsigned char* smem_map = nullptr;  // dynamic shared memory, its end at an inaccessible page
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
  int alive = 0, bar_arrived = 0;
  uint64_t bar_epoch = 0;  // block barriers released so far (Mbar::init_epoch)
  bool spun = false;
  std::map<void*, Mbar> mbars;  // the block's mbarriers by address
  const std::function<void()>* body = nullptr;

  static constexpr size_t kSmemMap = (232448 + 4095) / 4096 * 4096 + 4096;
  ~Worker() {
    if (stacks) munmap(stacks, n_stacks * kStack);
    if (smem_map) munmap(smem_map, kSmemMap);
  }
  void set_smem(size_t bytes) {
    if (!smem_map) {
      void* p = mmap(nullptr, kSmemMap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) die("no memory for shared memory");
      smem_map = static_cast<unsigned char*>(p);
      mprotect(smem_map + kSmemMap - 4096, 4096, PROT_NONE);
    }
    smem_bytes = (bytes + 15) / 16 * 16;
    smem = smem_map + kSmemMap - 4096 - smem_bytes;
  }
  void ensure_stacks(size_t n) {
    if (n <= n_stacks) return;
    if (stacks) munmap(stacks, n_stacks * kStack);
    void* p = mmap(nullptr, n * kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("no memory for fiber stacks");
    stacks = static_cast<char*>(p);
    n_stacks = n;
  }
  // back to the scheduler (the fiber's state says why)
  void suspend() {
    Fiber* f = cur;
#if defined(__x86_64__)
    ddrt_emu_switch(&f->sp, main_sp);
#else
    swapcontext(&f->uc, &main_uc);
#endif
  }
  void resume(Fiber& f) {
    cur = &f;
#if defined(__x86_64__)
    ddrt_emu_switch(&main_sp, f.sp);
#else
    swapcontext(&main_uc, &f.uc);
#endif
    cur = nullptr;
  }
  void release_barrier() {
    bar_arrived = 0;
    ++bar_epoch;
    for (Fiber& f : fibers)
      if (f.st == St::Bar) f.st = St::Ready;
  }
  // the pending collective of warp w completes when every lane it waits for has arrived
  bool try_complete(WarpState& w) {
    const unsigned need = w.mask & ~w.gone;
    if (!w.pending || (w.arrived & need) != need) return false;
    Fiber* lanes = &fibers[(size_t)(&w - warps.data()) * 32];
    for (int l = 0; l < 32; ++l)
      if ((w.arrived >> l & 1) && lanes[l].st == St::Warp) lanes[l].st = St::Ready;
    w.done_arrived[w.set] = w.arrived;
    w.pending = false;
    w.arrived = 0;
    return true;
  }
  void exit_fiber(Fiber& f) {
    f.st = St::Done;
    --alive;
    WarpState& w = warps[f.warp];
    w.gone |= 1u << f.lane;
    try_complete(w);
    if (bar_arrived > 0 && bar_arrived == alive) release_barrier();
  }
  void run_block(int64_t b);
};

void fiber_main() {
  Worker* w = tw;
  (*w->body)();
  w->exit_fiber(*w->cur);
  w->suspend();
  die("a finished fiber was resumed");
}

#if !defined(__x86_64__)
void fiber_entry() { fiber_main(); }
#endif

void Worker::run_block(int64_t b) {
  const int64_t gx = gdim.x, gy = gdim.y;
  bidx = uint3{(unsigned)(b % gx), (unsigned)(b / gx % gy), (unsigned)(b / (gx * gy))};
  const int n = (int)(bdim.x * bdim.y * bdim.z);
  const int nw = (n + 31) / 32;
  fibers.assign(n, Fiber{});
  warps.assign(nw, WarpState{});
  if (n % 32) warps[nw - 1].gone = ~0u << (n % 32);
  ensure_stacks(n);
  for (int i = 0; i < n; ++i) {
    Fiber& f = fibers[i];
    f.lin = i;
    f.lane = i & 31;
    f.warp = i >> 5;
    f.tid = uint3{(unsigned)(i % bdim.x), (unsigned)(i / bdim.x % bdim.y), (unsigned)(i / (bdim.x * bdim.y))};
    char* top = stacks + (size_t)(i + 1) * kStack;
#if defined(__x86_64__)
    // the first switch pops six registers, then returns into fiber_main with the stack aligned as
    // after a call (rsp % 16 == 8)
    void** sp = reinterpret_cast<void**>(top - 64);
    for (int r = 0; r < 6; ++r) sp[r] = nullptr;
    sp[6] = reinterpret_cast<void*>(&fiber_main);
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = top - kStack;
    f.uc.uc_stack.ss_size = kStack;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_entry, 0);
#endif
  }
  std::memset(smem, 0xff, smem_bytes);  // shared memory starts undefined: NaN / -1 shows a read of it
  mbars.clear();
  alive = n;
  bar_arrived = 0;
  while (alive > 0) {
    bool ran = false;
    spun = false;
    for (Fiber& f : fibers)
      if (f.st == St::Ready) {
        resume(f);
        ran = true;
      }
    if (!ran) {
      int bar = 0, warp = 0;
      for (Fiber& f : fibers) bar += f.st == St::Bar, warp += f.st == St::Warp;
      char msg[160];
      std::snprintf(msg, sizeof msg, "deadlock in block (%u,%u,%u): %d threads at __syncthreads, %d in warp collectives",
                    bidx.x, bidx.y, bidx.z, bar, warp);
      die(msg);
    }
    if (spun) std::this_thread::yield();
  }
  for (const auto& m : mbars)
    if (!m.second.copies.empty()) die("a block exited with bulk copies in flight (issued, never waited for)");
}

// ---- the pool of workers that run a grid's blocks ------------------------------------------------
struct Grid {
  dim3 grid, block;
  size_t smem = 0;
  const std::function<void()>* body = nullptr;
  int64_t total = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int> running{0};
};

class Pool {
 public:
  void run(Grid& g) {
    std::unique_lock<std::mutex> lk(mu_);
    if (threads_.empty())
      for (int i = 0; i < kMaxWorkers; ++i) threads_.emplace_back([this] { loop(); });
    job_ = &g;
    g.running = kMaxWorkers;
    ++gen_;
    cv_.notify_all();
    done_cv_.wait(lk, [&] { return g.running.load() == 0; });
    job_ = nullptr;
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      ++gen_;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void loop() {
    Worker w;
    tw = &w;
    uint64_t seen = 0;
    for (;;) {
      Grid* g;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || gen_ != seen; });
        if (stop_) return;
        seen = gen_;
        g = job_;
      }
      w.bdim = g->block;
      w.gdim = g->grid;
      w.body = g->body;
      w.set_smem(g->smem);
      for (int64_t b; (b = g->next++) < g->total;) w.run_block(b);
      if (--g->running == 0) {
        std::lock_guard<std::mutex> lk(mu_);
        done_cv_.notify_all();
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> threads_;
  Grid* job_ = nullptr;
  uint64_t gen_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static Pool p;
  return p;
}

thread_local cudaError_t g_last = cudaSuccess;
cudaError_t fail(cudaError_t e) {
  g_last = e;
  return e;
}

}  // namespace

// ---- what the kernels call --------------------------------------------------------------------
const uint3& thread_idx() { return tw->cur->tid; }
const uint3& block_idx() { return tw->bidx; }
const dim3& block_dim() { return tw->bdim; }
const dim3& grid_dim() { return tw->gdim; }
int lane_id() { return tw->cur->lane; }
void* dyn_smem() { return tw->smem; }

void syncthreads() {
  Worker& w = *tw;
  if (++w.bar_arrived == w.alive) {
    w.release_barrier();
    return;
  }
  w.cur->st = St::Bar;
  w.suspend();
}

const unsigned char* warp_collect(unsigned mask, const void* mine, size_t bytes, unsigned* arrived) {
  Worker& w = *tw;
  Fiber& f = *w.cur;
  if (bytes > kSlot) die("warp collective value over 32 bytes");
  if (!(mask >> f.lane & 1)) die("a lane outside the mask entered a warp collective");
  WarpState& ws = w.warps[f.warp];
  const int set = f.coll++ & 1;
  if (!ws.pending) {
    ws.pending = true;
    ws.mask = mask;
    ws.bytes = bytes;
    ws.arrived = 0;
    ws.set = set;
  } else if (ws.mask != mask || ws.bytes != bytes || ws.set != set) {
    die("lanes of a warp in different collectives at once");
  }
  if (bytes) std::memcpy(ws.slots[set][f.lane], mine, bytes);
  ws.arrived |= 1u << f.lane;
  if (!w.try_complete(ws)) {
    f.st = St::Warp;
    w.suspend();
  }
  if (arrived) *arrived = ws.done_arrived[set];
  return &ws.slots[set][0][0];
}

void syncwarp(unsigned mask) { warp_collect(mask, nullptr, 0); }

void cp_async(void* dst, const void* src, int bytes, bool valid) {
  Fiber::Copy c{dst, {}, bytes};
  if (valid) std::memcpy(c.data, src, bytes);
  tw->cur->copies.push_back(c);
}
void cp_commit() { tw->cur->group_end.push_back(tw->cur->copies.size()); }
void cp_wait(int n) {
  Fiber& f = *tw->cur;
  const int groups = (int)f.group_end.size();
  if (groups <= n) return;
  const size_t land = f.group_end[groups - 1 - n];  // copies [0, land) are in the older groups
  for (size_t i = 0; i < land; ++i) std::memcpy(f.copies[i].dst, f.copies[i].data, f.copies[i].bytes);
  f.copies.erase(f.copies.begin(), f.copies.begin() + land);
  f.group_end.erase(f.group_end.begin(), f.group_end.begin() + (groups - n));
  for (size_t& e : f.group_end) e -= land;
}

namespace {
// The barrier at bar, checked: initialized, in the block's shared memory, its mark intact.
Mbar& mbar_at(void* bar, const char* what) {
  Worker& w = *tw;
  auto it = w.mbars.find(bar);
  if (it == w.mbars.end()) die((std::string(what) + ": not an initialized mbarrier").c_str());
  uint64_t mark;
  std::memcpy(&mark, bar, 8);
  if (mark != kMbarMark) die((std::string(what) + ": the mbarrier's shared memory was overwritten").c_str());
  if (it->second.init_warp != w.cur->warp && it->second.init_epoch == w.bar_epoch)
    die((std::string(what) + ": an mbarrier initialized by warp " + std::to_string(it->second.init_warp) +
         ", used by warp " + std::to_string(w.cur->warp) + " with no __syncthreads between")
            .c_str());
  return it->second;
}
bool in_smem(const void* p, size_t bytes) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  return c >= tw->smem && c + bytes <= tw->smem + tw->smem_bytes;
}
}  // namespace

void mbar_init(void* bar, int count) {
  if (!in_smem(bar, 8) || (reinterpret_cast<uintptr_t>(bar) & 7) != 0 || count < 1)
    die("mbarrier.init: not an 8-byte aligned shared address, or a count < 1");
  Mbar m;
  m.count = m.pending = count;
  auto it = tw->mbars.find(bar);
  if (it != tw->mbars.end() && !it->second.copies.empty()) die("mbarrier.init over a barrier with copies in flight");
  if (it != tw->mbars.end() && it->second.init_warp != tw->cur->warp && it->second.init_epoch == tw->bar_epoch)
    die(("mbarrier.init by warp " + std::to_string(tw->cur->warp) + " over warp " +
         std::to_string(it->second.init_warp) + "'s, with no __syncthreads between")
            .c_str());
  m.init_warp = tw->cur->warp;
  m.init_epoch = tw->bar_epoch;
  tw->mbars[bar] = m;
  std::memcpy(bar, &kMbarMark, 8);
}
void mbar_inval(void* bar) {
  Mbar& m = mbar_at(bar, "mbarrier.inval");
  if (!m.copies.empty()) die("mbarrier.inval over a barrier with copies in flight");
  tw->mbars.erase(bar);
  std::memset(bar, 0xff, 8);
}
void mbar_expect_tx(void* bar, uint32_t bytes) {
  Mbar& m = mbar_at(bar, "mbarrier.arrive.expect_tx");
  if (m.pending == 0) die("mbarrier.arrive.expect_tx: more arrivals than the phase's count");
  m.tx_expected += bytes;
  --m.pending;
}
void bulk_copy(void* dst, const void* src, uint32_t bytes, void* bar) {
  Mbar& m = mbar_at(bar, "cp.async.bulk");
  if (bytes == 0 || bytes % 16 != 0 || (reinterpret_cast<uintptr_t>(dst) & 15) != 0 ||
      (reinterpret_cast<uintptr_t>(src) & 15) != 0 || !in_smem(dst, bytes))
    die("cp.async.bulk: size not a multiple of 16, an unaligned address or a destination outside shared memory");
  for (const auto& o : tw->mbars)  // no copy may land on a live barrier
    if (static_cast<unsigned char*>(o.first) + 8 > static_cast<unsigned char*>(dst) &&
        static_cast<unsigned char*>(o.first) < static_cast<unsigned char*>(dst) + bytes)
      die("cp.async.bulk: the destination overlaps an mbarrier");
  Mbar::Copy c{dst, std::vector<unsigned char>(bytes)};
  std::memcpy(c.data.data(), src, bytes);
  m.copies.push_back(std::move(c));
  m.tx_copied += bytes;
}
bool mbar_try_wait(void* bar, uint32_t parity) {
  Mbar& m = mbar_at(bar, "mbarrier.try_wait.parity");
  if ((m.phase & 1) != (parity & 1)) return true;  // the phase of that parity is the completed one
  if (m.tx_copied > m.tx_expected) die("mbarrier: more bytes copied than expected in a phase");
  if (m.pending == 0 && m.tx_copied == m.tx_expected) {
    for (const Mbar::Copy& c : m.copies) std::memcpy(c.dst, c.data.data(), c.data.size());
    m.copies.clear();
    m.pending = m.count;
    m.tx_expected = m.tx_copied = 0;
    m.spins = 0;
    ++m.phase;
    return true;
  }
  if (++m.spins > (int64_t)1 << 24) die("mbarrier wait that never completes (arrivals or bytes missing)");
  yield();
  return false;
}

void yield() {
  tw->spun = true;
  tw->suspend();
}

uint64_t globaltimer_ns() {
  return (uint64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void mma_m16n8k32_u8s8(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  struct In { uint32_t a[4], b[2]; } mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const In* all = reinterpret_cast<const In*>(warp_collect(0xffffffffu, &mine, sizeof(In)));
  static_assert(sizeof(In) <= kSlot, "");
  const int l = lane_id(), g = l >> 2, t = l & 3;
  auto at = [&](int lane) -> const In& { return *reinterpret_cast<const In*>(reinterpret_cast<const unsigned char*>(all) + lane * kSlot); };
  // A[r][k]: lane (r % 8) * 4 + (k % 16) / 4, register (r >= 8) + 2 (k >= 16), byte k % 4;
  // B[k][c]: lane c * 4 + (k % 16) / 4, register k >= 16, byte k % 4 (PTX ISA, mma.m16n8k32)
  auto A = [&](int r, int k) {
    return (int)(uint8_t)(at((r % 8) * 4 + (k % 16) / 4).a[(r >= 8) + 2 * (k >= 16)] >> (8 * (k % 4)));
  };
  auto B = [&](int k, int c) {
    return (int)(int8_t)(uint8_t)(at(c * 4 + (k % 16) / 4).b[k >= 16] >> (8 * (k % 4)));
  };
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i >= 2), c = 2 * t + (i & 1);
    int s = 0;
    for (int k = 0; k < 32; ++k) s += A(r, k) * B(k, c);
    d[i] += s;
  }
}

void mma_m16n8k16_f32(float* c, const uint32_t* a, const uint32_t* b, bool bf16) {
  struct In { uint32_t a[4], b[2]; } mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const unsigned char* s = warp_collect(0xffffffffu, &mine, sizeof(In));
  auto at = [&](int lane) -> const In& { return *reinterpret_cast<const In*>(s + lane * kSlot); };
  const int l = lane_id(), g = l >> 2, t = l & 3;
  auto half_at = [&](uint32_t word, int h) {
    const uint16_t bits = (uint16_t)(word >> (16 * h));
    if (bf16) return __uint_as_float((uint32_t)bits << 16);
    __half v;
    std::memcpy(&v, &bits, 2);
    return __half2float(v);
  };
  // A[r][k]: lane (r % 8) * 4 + (k % 8) / 2, register (r >= 8) + 2 (k >= 8), half k % 2;
  // B[k][n]: lane n * 4 + (k % 8) / 2, register k >= 8, half k % 2 (PTX ISA, mma.m16n8k16)
  for (int i = 0; i < 4; ++i) {
    const int r = g + 8 * (i >= 2), n = 2 * t + (i & 1);
    float acc = c[i];
    for (int k = 0; k < 16; ++k)
      acc += half_at(at((r % 8) * 4 + (k % 8) / 2).a[(r >= 8) + 2 * (k >= 8)], k % 2) *
             half_at(at(n * 4 + (k % 8) / 2).b[k >= 8], k % 2);
    c[i] = acc;
  }
}

void ldmatrix_x4(uint32_t* r, const void* row_addr) {
  const unsigned char* s = warp_collect(0xffffffffu, &row_addr, sizeof(void*));
  const int l = lane_id();
  // matrix i's rows come from lanes 8i..8i+7; lane l gets row l / 4, 16-bit elements 2 (l % 4), +1
  for (int i = 0; i < 4; ++i) {
    const unsigned char* row;
    std::memcpy(&row, s + (8 * i + l / 4) * kSlot, sizeof(row));
    std::memcpy(&r[i], row + 4 * (l % 4), 4);
  }
}

// ---- streams, graphs and launches ----------------------------------------------------------------
namespace {
std::vector<std::function<void()>>* g_capture = nullptr;  // the graph being captured, if any

cudaError_t enqueue(std::function<void()> op) {
  if (g_capture)
    g_capture->push_back(std::move(op));
  else
    op();
  return cudaSuccess;
}
}  // namespace

cudaError_t launch(dim3 grid, dim3 block, size_t smem, cudaStream_t st, std::function<void()> body) {
  (void)st;
  const int64_t total = (int64_t)grid.x * grid.y * grid.z;
  const int64_t threads = (int64_t)block.x * block.y * block.z;
  if (total <= 0 || threads <= 0 || threads > 1024 || grid.y > 65535 || grid.z > 65535 || smem > (232448u))
    return fail(cudaErrorInvalidConfiguration);
  auto shared = std::make_shared<std::function<void()>>(std::move(body));
  return enqueue([grid, block, smem, shared] {
    Grid g;
    g.grid = grid;
    g.block = block;
    g.smem = smem;
    g.body = shared.get();
    g.total = (int64_t)grid.x * grid.y * grid.z;
    pool().run(g);
  });
}

}  // namespace ddrt_emu

// ---- the CUDA runtime API, as the backend uses it -------------------------------------------------
using ddrt_emu::enqueue;
using ddrt_emu::fail;

struct CUstream_st {
  int priority = 0;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point t;
};
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};

namespace {
// 4 SMs, or DDRT_EMU_SMS (e.g. 132, an H100's: the plans that depend on the grid size, such as the
// attention's split count; a launch whose blocks wait for each other needs them all resident, and
// the emulator runs 16 blocks at once, so the fused GEMV's compensation and the chain may hang there)
int emu_sms() {
  static const int n = [] {
    const char* e = std::getenv("DDRT_EMU_SMS");
    const int v = e ? std::atoi(e) : 0;
    return v > 0 ? v : 4;
  }();
  return n;
}
constexpr size_t kEmuSmemOptin = 232448, kEmuSmemPerSm = 233472;
// Device and mapped host buffers end (to 16 bytes) at an inaccessible page, so that a kernel
// reading or writing past a buffer's end faults at once (what compute-sanitizer's memcheck reports
// on a GPU); the bytes before the buffer are the rest of its first page.
constexpr size_t kPage = 4096;
std::mutex g_alloc_mu;
std::unordered_map<void*, std::pair<void*, size_t>> g_allocs;  // buffer -> (mapping, mapping bytes)
void* guarded(size_t n) {
  const size_t body = (std::max<size_t>(n, 1) + 15) / 16 * 16, map = (body + kPage - 1) / kPage * kPage + kPage;
  void* m = mmap(nullptr, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  char* guard = static_cast<char*>(m) + map - kPage;
  mprotect(guard, kPage, PROT_NONE);
  void* p = guard - body;
  std::lock_guard<std::mutex> lk(g_alloc_mu);
  g_allocs[p] = {m, map};
  return p;
}
void unguard(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lk(g_alloc_mu);
  auto it = g_allocs.find(p);
  if (it == g_allocs.end()) return;
  munmap(it->second.first, it->second.second);
  g_allocs.erase(it);
}
}  // namespace

extern "C" {

cudaError_t cudaGetLastError() {
  const cudaError_t e = ddrt_emu::g_last;
  ddrt_emu::g_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return ddrt_emu::g_last; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "CUDA emulator error";
  }
}
const char* cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev) {
  if (dev != 0) return fail(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "decdec_rt CUDA emulator (CPU)");
  p->totalGlobalMem = (size_t)16 << 30;
  p->sharedMemPerBlock = 49152;
  p->sharedMemPerBlockOptin = kEmuSmemOptin;
  p->sharedMemPerMultiprocessor = kEmuSmemPerSm;
  p->regsPerBlock = p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsPerMultiProcessor = 2048;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->multiProcessorCount = emu_sms();
  p->major = 9;
  p->minor = 0;
  p->l2CacheSize = 50 << 20;
  p->memoryBusWidth = 5120;
  p->canMapHostMemory = 1;
  p->unifiedAddressing = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int dev) {
  if (dev != 0) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *v = emu_sms(); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = (int)kEmuSmemOptin; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    default: *v = 0;
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total) {
  *free_b = (size_t)8 << 30;
  *total = (size_t)16 << 30;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t n) {
  *p = guarded(n);
  if (!*p) return fail(cudaErrorMemoryAllocation);
  std::memset(*p, 0xff, n);  // device memory is not cleared: NaN / -1 shows a read of what nobody wrote
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  unguard(p);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int) {
  *p = guarded(n);
  return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void* p) {
  unguard(p);
  return cudaSuccess;
}
cudaError_t cudaHostGetDevicePointer(void** d, void* h, unsigned int) {
  *d = h;
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t) {
  return enqueue([=] { std::memmove(dst, src, n); });
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  std::memset(p, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  return enqueue([=] { std::memset(p, v, n); });
}

cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  *least = 0;
  *greatest = -5;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) { return cudaStreamCreate(s); }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned int, int prio) {
  *s = new CUstream_st;
  (*s)->priority = prio;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  return enqueue([e] { e->t = std::chrono::steady_clock::now(); });
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (ddrt_emu::g_capture) return fail(cudaErrorIllegalState);
  ddrt_emu::g_capture = new std::vector<std::function<void()>>;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
  if (!ddrt_emu::g_capture) return fail(cudaErrorIllegalState);
  *g = new CUgraph_st{std::move(*ddrt_emu::g_capture)};
  delete ddrt_emu::g_capture;
  ddrt_emu::g_capture = nullptr;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* x, cudaGraph_t g, unsigned long long) {
  *x = new CUgraphExec_st{g->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t) {
  for (auto& op : x->ops) enqueue(op);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) {
  delete x;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void*, int block, size_t smem) {
  // threads and shared memory decide here (registers are not modelled); at most 2 per SM, as the
  // fused GEMV's __launch_bounds__ asks
  const int by_threads = 2048 / (block > 0 ? block : 1);
  const int by_smem = (int)(kEmuSmemPerSm / (smem + 1024));
  *n = std::max(0, std::min({by_threads, by_smem, 2}));
  return cudaSuccess;
}

}  // extern "C"
