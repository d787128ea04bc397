// Which of ORT's threads ran each SgeResidual unit, and when: diagnostic builds only (build.py's trace=True, which
// compiles the op with -DSGE_TRACE), read by runtime/kernel_speed/unit_trace.py. Without SGE_TRACE every hook is an
// empty inline function: the shipped library records nothing and exports no trace symbol.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(SGE_TRACE)
#include <sys/syscall.h>
#include <unistd.h>
#include <x86intrin.h>

#include <atomic>
#include <cstring>
#endif

namespace sge_trace {

#if defined(SGE_TRACE)

// One unit as runtime/kernel_speed/unit_trace.py reads it (RECORD_DTYPE there): the op call it belongs to (numbered
// from the last reset), the unit, whether the thread that called the op ran it, x's channels and positions, and the
// unit's start and end in TSC ticks.
struct Record {
  uint32_t call, unit, on_caller, reserved;
  int64_t channels, positions;
  uint64_t start, end;
};
static_assert(sizeof(Record) == 48, "unit_trace.py reads 48-byte records");

// 96 MiB: about 2260 runs of sge_resnet50 at batch 1 at 8 lanes (928 units a run), 2790 at 16 (752 units)
constexpr uint64_t kCapacity = uint64_t{1} << 21;
inline Record* const g_records = new Record[kCapacity];
inline std::atomic<uint64_t> g_count{0};
inline std::atomic<uint32_t> g_calls{0};

struct Call {
  uint32_t id = 0;
  long caller = 0;
};

inline long thread_id() { return syscall(SYS_gettid); }
inline Call begin_call() { return {g_calls.fetch_add(1, std::memory_order_relaxed), thread_id()}; }
inline uint64_t now() { return __rdtsc(); }
inline void unit(const Call& call, size_t unit, int64_t channels, int64_t positions, uint64_t start) {
  const uint64_t end = now();
  const uint64_t k = g_count.fetch_add(1, std::memory_order_relaxed);
  if (k < kCapacity)  // a full buffer drops the rest: unit_trace.py then finds runs missing and refuses the trace
    g_records[k] = {call.id, static_cast<uint32_t>(unit), thread_id() == call.caller, 0, channels, positions, start, end};
}

#else

struct Call {};
inline Call begin_call() { return {}; }
inline uint64_t now() { return 0; }
inline void unit(const Call&, size_t, int64_t, int64_t, uint64_t) {}

#endif

}  // namespace sge_trace

#if defined(SGE_TRACE)
// Copies up to `capacity` records into `out` and returns how many there are (at most kCapacity).
extern "C" __attribute__((visibility("default"))) uint64_t SgeTraceUnits(void* out, uint64_t capacity) {
  uint64_t count = sge_trace::g_count.load();
  if (count > sge_trace::kCapacity) count = sge_trace::kCapacity;
  if (out) std::memcpy(out, sge_trace::g_records, (count < capacity ? count : capacity) * sizeof(sge_trace::Record));
  return count;
}
// The TSC now: unit_trace.py times a sleep with it to turn ticks into microseconds.
extern "C" __attribute__((visibility("default"))) uint64_t SgeTraceTicks() { return sge_trace::now(); }
// Forgets every record and numbers calls from 0 again.
extern "C" __attribute__((visibility("default"))) void SgeTraceReset() {
  sge_trace::g_count.store(0);
  sge_trace::g_calls.store(0);
}
#endif
