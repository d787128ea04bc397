// How far this machine's caches reach, as one process on it sees them now: the latency of a dependent load at random
// over buffers of growing size (a pointer chase), and the one-way latency of a cache line handed between two CPUs.
// On a VM the L3 that lscpu reports is shared with other guests; the chase shows how much of it answers like a cache.
// Built and run by runtime/kernel_speed/cache_probe.py:
//
//   cache_probe LOADS KB [KB ...]
//
// prints one JSON object: {"chase_ns": [[KB, ns a load], ...], "handoff_ns": ns or null, "cpus": [a, b]}.
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

constexpr size_t kLine = 64;
constexpr size_t kHugePage = size_t{2} << 20;

uint64_t next_random(uint64_t& state) {  // xorshift64*
  state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
  return state * 2685821657736338717ull;
}

// One cycle through every line of a buffer of `bytes`, in random order (Sattolo's shuffle), each line holding the
// address of the next; nanoseconds per load over `loads` dependent loads, after one warm pass over the cycle.
double chase_ns(size_t bytes, long loads) {
  const size_t lines = bytes / kLine;
  char* buffer = static_cast<char*>(std::aligned_alloc(kHugePage, (bytes + kHugePage - 1) / kHugePage * kHugePage));
  if (buffer == nullptr) return -1.0;
  madvise(buffer, bytes, MADV_HUGEPAGE);  // few TLB misses, so the figure is the cache's, not the page walk's
  std::vector<uint32_t> order(lines);
  for (size_t i = 0; i < lines; ++i) order[i] = static_cast<uint32_t>(i);
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (size_t i = lines - 1; i > 0; --i) std::swap(order[i], order[next_random(state) % i]);
  for (size_t i = 0; i < lines; ++i) {
    *reinterpret_cast<void**>(buffer + order[i] * kLine) = buffer + order[(i + 1) % lines] * kLine;
  }
  void* p = buffer;
  for (size_t i = 0; i < lines; ++i) p = *static_cast<void**>(p);
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < loads; ++i) p = *static_cast<void**>(p);
  const std::chrono::duration<double, std::nano> elapsed = std::chrono::steady_clock::now() - start;
  asm volatile("" ::"r"(p));  // the loads have a use, so the compiler keeps them
  std::free(buffer);
  return elapsed.count() / static_cast<double>(loads);
}

struct Handoff {
  alignas(128) std::atomic<long> turn{0};
  int cpu = 0;
  long rounds = 0;
};

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

void* answer(void* arg) {
  auto* h = static_cast<Handoff*>(arg);
  pin(h->cpu);
  for (long i = 1; i <= h->rounds; ++i) {
    while (h->turn.load(std::memory_order_acquire) != 2 * i - 1) {
    }
    h->turn.store(2 * i, std::memory_order_release);
  }
  return nullptr;
}

// Nanoseconds for one CPU's store to a line to reach the other's load: half a round trip between `a` and `b`.
double handoff_ns(int a, int b, long rounds) {
  Handoff h;
  h.cpu = b, h.rounds = rounds;
  pthread_t thread;
  if (pthread_create(&thread, nullptr, answer, &h) != 0) return -1.0;
  pin(a);
  const auto start = std::chrono::steady_clock::now();
  for (long i = 1; i <= rounds; ++i) {
    h.turn.store(2 * i - 1, std::memory_order_release);
    while (h.turn.load(std::memory_order_acquire) != 2 * i) {
    }
  }
  const std::chrono::duration<double, std::nano> elapsed = std::chrono::steady_clock::now() - start;
  pthread_join(thread, nullptr);
  return elapsed.count() / static_cast<double>(2 * rounds);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: cache_probe LOADS KB [KB ...]\n");
    return 2;
  }
  const long loads = std::atol(argv[1]);
  cpu_set_t allowed;
  sched_getaffinity(0, sizeof allowed, &allowed);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c) {
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  }
  std::printf("{\"chase_ns\": [");
  for (int i = 2; i < argc; ++i) {
    const long kb = std::atol(argv[i]);
    if (loads <= 0 || kb < 4) {
      std::fprintf(stderr, "cache_probe: LOADS must be positive and each KB at least 4, got %s and %s\n", argv[1],
                   argv[i]);
      return 2;
    }
    const double ns = chase_ns(static_cast<size_t>(kb) << 10, loads);
    if (ns < 0) {
      std::fprintf(stderr, "cache_probe: could not allocate %ld KB\n", kb);
      return 1;
    }
    std::printf("%s[%ld, %.2f]", i > 2 ? ", " : "", kb, ns);
  }
  if (cpus.size() == 2) {
    pin(cpus[0]);
    std::printf("], \"handoff_ns\": %.2f, \"cpus\": [%d, %d]}\n", handoff_ns(cpus[0], cpus[1], loads / 4), cpus[0],
                cpus[1]);
  } else {
    std::printf("], \"handoff_ns\": null, \"cpus\": [%d]}\n", cpus.empty() ? -1 : cpus[0]);
  }
  return 0;
}
