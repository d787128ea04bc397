// How far this machine's caches reach, as one process on it sees them now: the latency of a dependent load at random
// over buffers of growing size (a pointer chase), and the one-way latency of a cache line handed between two CPUs.
// On a VM the L3 that lscpu reports is shared with other guests; the chase shows how much of it answers like a cache.
// Built and run by runtime/kernel_speed/cache_probe.py and cpu_placement.py:
//
//   cache_probe LOADS KB [KB ...]
//     prints one JSON object: {"chase_ns": [[KB, ns a load], ...], "handoff_ns": ns or null, "cpus": [a, b]}
//   cache_probe placement PERIOD_MS
//     every PERIOD_MS until killed, times a short handoff between the first two CPUs and prints one line
//     "START END NS" (wall-clock seconds at its start and end, and the fastest of its chunks' one-way latencies),
//     so that another process's work can be told apart by where the host had put the two CPUs at the time.
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
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

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// The first two CPUs this process may run on (fewer where it may run on fewer).
std::vector<int> first_two_cpus() {
  cpu_set_t allowed;
  sched_getaffinity(0, sizeof allowed, &allowed);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c) {
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  }
  return cpus;
}

// A line handed back and forth: the driver stores 2i-1 and waits for 2i, the answering side the reverse, for i in
// [first, first + trips). Both modes below time these same loops.
void drive_trips(std::atomic<long>& turn, long first, long trips) {
  for (long i = first; i < first + trips; ++i) {
    turn.store(2 * i - 1, std::memory_order_release);
    while (turn.load(std::memory_order_acquire) != 2 * i) {
    }
  }
}

void answer_trips(std::atomic<long>& turn, long first, long trips) {
  for (long i = first; i < first + trips; ++i) {
    while (turn.load(std::memory_order_acquire) != 2 * i - 1) {
    }
    turn.store(2 * i, std::memory_order_release);
  }
}

// The answering thread of either mode: pinned to its CPU, it answers `trips` round trips each time `sample` moves
// on, sleeping in between (so the monitor takes a CPU from the work it watches only for the sample itself), up to
// `last_sample`.
struct Answerer {
  alignas(128) std::atomic<long> turn{0};
  alignas(128) std::atomic<bool> ready{false};
  std::mutex mutex;
  std::condition_variable wake;
  long sample = 0;
  long trips = 0;
  long last_sample = 0;  // 0: answer until the process ends
  int cpu = 0;
};

void* answer_samples(void* arg) {
  auto* a = static_cast<Answerer*>(arg);
  pin(a->cpu);
  for (long seen = 0; a->last_sample == 0 || seen < a->last_sample; ++seen) {
    {
      std::unique_lock<std::mutex> lock(a->mutex);
      a->wake.wait(lock, [&] { return a->sample > seen; });
    }
    a->ready.store(true, std::memory_order_release);
    answer_trips(a->turn, 1, a->trips);
  }
  return nullptr;
}

// Starts one sample of `answerer` and waits until its thread is answering.
void start_sample(Answerer& answerer) {
  answerer.turn.store(0), answerer.ready.store(false);
  {
    std::lock_guard<std::mutex> lock(answerer.mutex);
    ++answerer.sample;
  }
  answerer.wake.notify_one();
  while (!answerer.ready.load(std::memory_order_acquire)) {
  }
}

double nanoseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
}

// Nanoseconds for one CPU's store to a line to reach the other's load: half a round trip between `a` and `b`,
// the mean over `trips` round trips.
double handoff_ns(int a, int b, long trips) {
  Answerer answerer;
  answerer.cpu = b, answerer.trips = trips, answerer.last_sample = 1;
  pthread_t thread;
  if (pthread_create(&thread, nullptr, answer_samples, &answerer) != 0) return -1.0;
  pin(a);
  start_sample(answerer);
  const auto start = std::chrono::steady_clock::now();
  drive_trips(answerer.turn, 1, trips);
  const double ns = nanoseconds_since(start) / static_cast<double>(2 * trips);
  pthread_join(thread, nullptr);
  return ns;
}

double wall_seconds() {
  const std::chrono::duration<double> since_epoch = std::chrono::system_clock::now().time_since_epoch();
  return since_epoch.count();
}

constexpr int kChunks = 10, kTripsPerChunk = 100;

// Every `period_ms` until killed, one sample: the fastest of kChunks chunks' one-way latency, with its wall-clock
// start and end, one line each.
int watch_placement(int a, int b, long period_ms) {
  Answerer answerer;
  answerer.cpu = b, answerer.trips = kChunks * kTripsPerChunk;
  pthread_t thread;
  if (pthread_create(&thread, nullptr, answer_samples, &answerer) != 0) return 1;
  pin(a);
  for (;;) {
    usleep(static_cast<useconds_t>(period_ms * 1000));
    const double start = wall_seconds();
    start_sample(answerer);
    double fastest = 1e18;
    for (long c = 0; c < kChunks; ++c) {
      const auto chunk_start = std::chrono::steady_clock::now();
      drive_trips(answerer.turn, 1 + c * kTripsPerChunk, kTripsPerChunk);
      fastest = std::min(fastest, nanoseconds_since(chunk_start) / (2 * kTripsPerChunk));
    }
    std::printf("%.4f %.4f %.1f\n", start, wall_seconds(), fastest);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<int> cpus = first_two_cpus();
  if (argc == 3 && std::strcmp(argv[1], "placement") == 0) {
    const long period_ms = std::atol(argv[2]);
    if (cpus.size() < 2 || period_ms < 1) {
      std::fprintf(stderr, "cache_probe: placement needs two CPUs and a period of at least 1 ms\n");
      return 2;
    }
    return watch_placement(cpus[0], cpus[1], period_ms);
  }
  if (argc < 3) {
    std::fprintf(stderr, "usage: cache_probe LOADS KB [KB ...]\n");
    return 2;
  }
  const long loads = std::atol(argv[1]);
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
    const double ns = handoff_ns(cpus[0], cpus[1], std::max(loads / 4, 1L));
    std::printf("], \"handoff_ns\": %.2f, \"cpus\": [%d, %d]}\n", ns, cpus[0], cpus[1]);
  } else {
    std::printf("], \"handoff_ns\": null, \"cpus\": [%d]}\n", cpus.empty() ? -1 : cpus[0]);
  }
  return 0;
}
