// A preload library (LD_PRELOAD) that shows its process an x86-64 CPU with AVX2 but no AVX-512 and no AMX, so the
// AVX2 code paths of ONNX Runtime (its 8-channel NCHWc layout) and of the fused SGE kernel run, and can be tested and
// timed, on an AVX-512 machine. A developer and test tool (avx2_view.py builds and runs it); never part of a model.
//
// How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, CPU flag "cpuid_fault") makes every CPUID instruction of
// this process trap with SIGSEGV. The handler runs the real CPUID with faulting briefly off, clears the AVX-512, AMX
// and AVX-VNNI bits, and steps over the instruction. The setting is per thread, inherited by threads and children,
// and reset by execve, where LD_PRELOAD sets it again. The process's own SIGSEGV handlers (Python's faulthandler,
// GCC's crash report) are kept aside and called for every other fault.
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

using SigactionFn = int (*)(int, const struct sigaction*, struct sigaction*);

SigactionFn real_sigaction() {
  static SigactionFn real = reinterpret_cast<SigactionFn>(dlsym(RTLD_NEXT, "sigaction"));
  return real;
}

bool g_active = false;
unsigned long g_traps = 0;  // CPUID instructions answered so far, all threads (avx2_view_traps)
struct sigaction g_process_action;  // what the process asked for on SIGSEGV (default: SIG_DFL)

constexpr unsigned bit(unsigned n) { return 1u << n; }

// CPUID.(EAX=7, ECX=0): EBX avx512 f, dq, ifma, pf, er, cd, bw, vl; ECX avx512 vbmi, vbmi2, vnni, bitalg,
// vpopcntdq; EDX avx512 4vnniw, 4fmaps, vp2intersect, amx-bf16, avx512-fp16, amx-tile, amx-int8.
// CPUID.(EAX=7, ECX=1): EAX avx-vnni, avx512-bf16 (an AVX2-only CPU of the x86-64-v3 kind has neither).
void hide_avx512(unsigned leaf, unsigned subleaf, unsigned& eax, unsigned& ebx, unsigned& ecx, unsigned& edx) {
  if (leaf == 7 && subleaf == 0) {
    ebx &= ~(bit(16) | bit(17) | bit(21) | bit(26) | bit(27) | bit(28) | bit(30) | bit(31));
    ecx &= ~(bit(1) | bit(6) | bit(11) | bit(12) | bit(14));
    edx &= ~(bit(2) | bit(3) | bit(8) | bit(22) | bit(23) | bit(24) | bit(25));
  } else if (leaf == 7 && subleaf == 1) {
    eax &= ~(bit(4) | bit(5));
  }
}

long set_cpuid_faulting(bool on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

void pass_on(int signal_number, siginfo_t* info, void* context) {
  const struct sigaction& action = g_process_action;
  if (action.sa_flags & SA_SIGINFO) {
    action.sa_sigaction(signal_number, info, context);
  } else if (action.sa_handler != SIG_DFL && action.sa_handler != SIG_IGN) {
    action.sa_handler(signal_number);
  } else {  // the default: put it back and let the faulting instruction run again, to end the process as it would
    struct sigaction fallback {};
    fallback.sa_handler = SIG_DFL;
    real_sigaction()(SIGSEGV, &fallback, nullptr);
  }
}

void on_segv(int signal_number, siginfo_t* info, void* context) {
  greg_t* regs = static_cast<ucontext_t*>(context)->uc_mcontext.gregs;
  const auto* ip = reinterpret_cast<const unsigned char*>(regs[REG_RIP]);
  // A CPUID fault is a general-protection fault (SI_KERNEL) at a CPUID instruction (0F A2), which was fetched.
  if (info->si_code != SI_KERNEL || ip[0] != 0x0F || ip[1] != 0xA2) return pass_on(signal_number, info, context);
  const unsigned leaf = static_cast<unsigned>(regs[REG_RAX]), subleaf = static_cast<unsigned>(regs[REG_RCX]);
  __atomic_add_fetch(&g_traps, 1, __ATOMIC_RELAXED);
  unsigned eax, ebx, ecx, edx;
  const int saved_errno = errno;  // the interrupted code may be between a call and its errno check
  set_cpuid_faulting(false);
  __cpuid_count(leaf, subleaf, eax, ebx, ecx, edx);
  set_cpuid_faulting(true);
  errno = saved_errno;
  hide_avx512(leaf, subleaf, eax, ebx, ecx, edx);
  regs[REG_RAX] = eax;
  regs[REG_RBX] = ebx;
  regs[REG_RCX] = ecx;
  regs[REG_RDX] = edx;
  regs[REG_RIP] += 2;
}

__attribute__((constructor)) void start() {
  g_process_action.sa_handler = SIG_DFL;
  struct sigaction action {};
  action.sa_sigaction = on_segv;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  if (real_sigaction()(SIGSEGV, &action, nullptr) != 0 || set_cpuid_faulting(true) != 0) {
    std::fprintf(stderr,
                 "avx2 view: CPUID faulting is not available here (arch_prctl ARCH_SET_CPUID: %s); run without "
                 "LD_PRELOAD on a machine whose /proc/cpuinfo lists cpuid_fault\n",
                 std::strerror(errno));
    std::_Exit(70);
  }
  g_active = true;
}

}  // namespace

// The process's own SIGSEGV handlers are recorded here, not installed: ours stays first and passes other faults on.
extern "C" __attribute__((visibility("default"))) int sigaction(int signal_number, const struct sigaction* action,
                                                                 struct sigaction* previous) {
  if (signal_number != SIGSEGV || !g_active) return real_sigaction()(signal_number, action, previous);
  if (previous) *previous = g_process_action;
  if (action) g_process_action = *action;
  return 0;
}

extern "C" __attribute__((visibility("default"))) sighandler_t signal(int signal_number, sighandler_t handler) {
  struct sigaction action {}, previous {};
  action.sa_handler = handler;
  sigemptyset(&action.sa_mask);
  if (sigaction(signal_number, &action, &previous) != 0) return SIG_ERR;
  return previous.sa_handler;
}

// How many CPUID instructions the view has answered in this process: a process that times work under the view can
// check that none ran while it timed (tests/sgeperf/test_avx2_view.py), since each costs a signal and two syscalls.
extern "C" __attribute__((visibility("default"))) unsigned long avx2_view_traps() {
  return __atomic_load_n(&g_traps, __ATOMIC_RELAXED);
}
