// What each stage of one NCHWc unit of the fused SGE tail costs with its data in cache: a lower bound on any tail
// that makes these passes (even one whose own convolution left x in L2). Runs the shipped maths (sge_math.h), one
// stage at a time, on one unit warmed by repetition, on one thread; checks that the stages in sequence give the
// unit's output bit for bit. Built and run by export/ort_sge/kernels/stage_bench.py:
//
//   sge_stage_bench BLOCK GROUPS REPEATS ITERATIONS C:SIDE [C:SIDE ...]
//
// and prints one JSON object: per shape, the median over REPEATS of each stage's microseconds a call (each repeat
// the mean of ITERATIONS calls).
#define SGE_ISA bench
#ifndef SGE_BENCH_ISA
#error "define SGE_BENCH_ISA: the ISA_FLAGS build whose flags this is compiled with (see stage_bench.py)"
#endif
#define SGE_TEXT(name) SGE_TEXT_(name)
#define SGE_TEXT_(name) #name
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "sge_math.h"

namespace {

using namespace sge::bench;

template <class Stage>
double median_us(int repeats, int iterations, Stage stage) {
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    stage();  // the warm-up call of each repeat brings the unit's lines back into cache
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) {
      stage();
      asm volatile("" ::: "memory");  // the compiler may neither merge the calls nor drop their stores
    }
    const std::chrono::duration<double, std::micro> elapsed = std::chrono::steady_clock::now() - start;
    times.push_back(elapsed.count() / iterations);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Deterministic values in [-1, 1): x of a convolution's output, the identity after a ReLU in [0, 1).
float uniform(uint32_t& state) {
  state = state * 1664525u + 1013904223u;
  return static_cast<float>(state >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f;
}

template <int B, int L>
std::string bench_shape(const sge::Shape& s, int repeats, int iterations) {
  constexpr int per = B / (1 << L);
  const int64_t size = sge::hw(s), uc = sge::unit_channels(s), blocks = uc / B, stride = size * B, n = uc * size;
  std::vector<float> x(n), identity(n), out(n), reference(n), gamma(s.groups), beta(s.groups);
  std::vector<float> scratch(sge::scratch_floats(s));
  uint32_t state = 12345u;
  for (int64_t i = 0; i < n; ++i) x[i] = uniform(state), identity[i] = 0.5f + 0.5f * uniform(state);
  for (int64_t g = 0; g < s.groups; ++g) gamma[g] = uniform(state), beta[g] = 1.0f + uniform(state);
  const sge::Problem unit{x.data(), identity.data(), gamma.data(), beta.data(), reference.data(), s};
  float* means = scratch.data();
  float* map = scratch.data() + uc;

  // The stages in the unit's order (unit_nchwc), on unit 0; the last writes `out`.
  F<B> mu;
  Moments<B> moments;
  const auto means_stage = [&] {
    channel_means<B>(x.data(), size, blocks, stride, means);
    mu = group_means<B, per>(means, uc);
  };
  const auto map_stage = [&] {
    moments = similarity_map<B, L>(x.data(), identity.data(), size, blocks, stride, means, mu, map);
  };
  const auto gate = [&] { return Gate<B, per>(moments, mu, size, gamma.data(), beta.data(), s.eps, map); };
  const auto apply_stage = [&] {
    for (int64_t b = 0; b < blocks; ++b)
      apply_gates<B, L>(x.data() + b * stride, identity.data() + b * stride, out.data() + b * stride, size, map);
  };
  means_stage();
  map_stage();
  gates_in_place<B, per>(map, size * per, gate());
  apply_stage();
  run_unit_impl(unit, 0, scratch.data());
  float max_diff = 0.0f;
  for (int64_t i = 0; i < n; ++i) max_diff = std::max(max_diff, std::abs(out[i] - reference[i]));

  const double t_means = median_us(repeats, iterations, means_stage);
  const double t_map = median_us(repeats, iterations, map_stage);
  // the sigmoid over the map, in place: its time does not depend on the values (no branches)
  const Gate<B, per> fixed = gate();
  const double t_sigmoid = median_us(repeats, iterations, [&] { gates_in_place<B, per>(map, size * per, fixed); });
  const double t_apply = median_us(repeats, iterations, apply_stage);
  const double t_unit = median_us(repeats, iterations, [&] { run_unit_impl(unit, 0, scratch.data()); });

  char text[512];
  std::snprintf(text, sizeof(text),
                "{\"channels\": %lld, \"side\": %lld, \"unit_channels\": %lld, \"units\": %lld, \"max_abs_diff\": %g, "
                "\"us\": {\"means\": %.4f, \"similarity\": %.4f, \"sigmoid\": %.4f, \"apply\": %.4f, \"unit\": %.4f}}",
                static_cast<long long>(s.c), static_cast<long long>(s.h), static_cast<long long>(uc),
                static_cast<long long>(sge::units_per_image(s)), static_cast<double>(max_diff), t_means, t_map,
                t_sigmoid, t_apply, t_unit);
  return text;
}

template <int B>
std::string bench_blocked(const sge::Shape& s, int repeats, int iterations) {
  const int64_t cg = sge::group_channels(s);
  switch (cg < B ? cg : B) {  // lanes per group within a block, as unit_blocked
    case 1: return bench_shape<B, 0>(s, repeats, iterations);
    case 2: return bench_shape<B, 1>(s, repeats, iterations);
    case 4: return bench_shape<B, 2>(s, repeats, iterations);
    case 8: return bench_shape<B, 3>(s, repeats, iterations);
    default:
      if constexpr (B == 16) return bench_shape<B, 4>(s, repeats, iterations);
      return "";
  }
}

int usage(const char* why) {
  std::fprintf(stderr, "sge_stage_bench: %s; usage: sge_stage_bench BLOCK(8|16) GROUPS REPEATS ITERATIONS C:SIDE ...\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) return usage("too few arguments");
  const long long block = std::atoll(argv[1]), groups = std::atoll(argv[2]);
  const int repeats = std::atoi(argv[3]), iterations = std::atoi(argv[4]);
  if (block != 8 && block != 16) return usage("BLOCK must be 8 or 16");
  if (repeats < 1 || iterations < 1) return usage("REPEATS and ITERATIONS must be positive");
  std::string shapes;
  for (int a = 5; a < argc; ++a) {
    long long channels = 0, side = 0;
    char rest = 0;
    if (std::sscanf(argv[a], "%lld:%lld%c", &channels, &side, &rest) != 2)
      return usage(("bad shape '" + std::string(argv[a]) + "' (want C:SIDE, for example 256:56)").c_str());
    const sge::Shape s{1, channels, side, side, groups, block, 1e-5f};
    if (const char* problem = sge::shape_problem(s)) return usage((std::string(argv[a]) + ": " + problem).c_str());
    shapes += (shapes.empty() ? "" : ", ") +
              (block == 8 ? bench_blocked<8>(s, repeats, iterations) : bench_blocked<16>(s, repeats, iterations));
  }
  std::printf(
      "{\"isa\": \"%s\", \"block\": %lld, \"groups\": %lld, \"repeats\": %d, \"iterations\": %d, "
      "\"shapes\": [%s]}\n",
      SGE_TEXT(SGE_BENCH_ISA), block, groups, repeats, iterations, shapes.c_str());
  return 0;
}
