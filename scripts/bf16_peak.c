// The CPU's peak bf16 rates, next to scripts/fma_peak.c's fp32 FMA peak: (i) AMX TDPBF16PS with
// 6 independent 16x16 f32 accumulator tiles (tmm0-5) fed by one A tile (tmm6) and one B tile
// (tmm7), 16*16*32*2 = 16384 FLOP per instruction; (ii) AVX512-BF16 VDPBF16PS with 16 independent
// zmm chains, 16 lanes x 2 products x 2 = 64 FLOP per instruction. No memory traffic in the
// loops. Each on 1 thread and on 2 threads at once. Run it alone on the machine; the rates per
// CPU-second (thread CPU time) are also printed, as they hold up better on a shared machine.
//   gcc -O2 -mavx512f -mavx512bf16 -mamx-tile -mamx-bf16 -pthread scripts/bf16_peak.c -o /tmp/bf16_peak && /tmp/bf16_peak
// Needs AVX512-BF16 and AMX-BF16 (Sapphire Rapids or later) and Linux >= 5.16 for the AMX
// permission request; without them it stops with an illegal instruction or says so.
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/syscall.h>
#define N 16
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
static double now(void) {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9;
}
// CPU time of the calling thread: on a shared machine, the rate per CPU-second is the rate of a
// core while this thread had it (wall-clock rates drop when another process takes turns).
static double cpu_now(void) {
  struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec * 1e-9;
}
struct rate { double wall, cpu; };
static struct rate run_vdp(long iters) {
  __m512 acc[N];
  __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1.0f), _mm512_set1_ps(1.0f));
  __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-9f), _mm512_set1_ps(1e-9f));
  for (int i = 0; i < N; i++) acc[i] = _mm512_set1_ps((float)i);
  double t0 = now(), c0 = cpu_now();
  for (long it = 0; it < iters; it++) {
    #pragma GCC unroll 16
    for (int i = 0; i < N; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  double sec = now() - t0, csec = cpu_now() - c0;
  float s = 0; for (int i = 0; i < N; i++) s += _mm512_reduce_add_ps(acc[i]);
  if (s == 12345.f) printf("x");
  double flop = (double)iters * N * 16 * 2 * 2;
  return (struct rate){flop / sec / 1e9, flop / csec / 1e9};
}
struct __attribute__((aligned(64))) tilecfg { unsigned char palette, start; unsigned char rsv[14];
  unsigned short colsb[16]; unsigned char rows[16]; };
static struct rate run_amx(long iters) {
  struct tilecfg cfg; memset(&cfg, 0, sizeof cfg); cfg.palette = 1;
  for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
  _tile_loadconfig(&cfg);
  static __thread unsigned short src[16 * 32] __attribute__((aligned(64)));
  for (int i = 0; i < 16 * 32; i++) src[i] = 0x3000; // small bf16 values
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); _tile_zero(4); _tile_zero(5);
  _tile_loadd(6, src, 64); _tile_loadd(7, src, 64);
  double t0 = now(), c0 = cpu_now();
  for (long it = 0; it < iters; it++) {
    _tile_dpbf16ps(0, 6, 7); _tile_dpbf16ps(1, 6, 7); _tile_dpbf16ps(2, 6, 7);
    _tile_dpbf16ps(3, 6, 7); _tile_dpbf16ps(4, 6, 7); _tile_dpbf16ps(5, 6, 7);
  }
  double sec = now() - t0, csec = cpu_now() - c0;
  static __thread float out[16 * 16] __attribute__((aligned(64)));
  _tile_stored(0, out, 64);
  _tile_release();
  if (out[0] == 12345.f) printf("x");
  double flop = iters * 6.0 * 16 * 16 * 32 * 2;
  return (struct rate){flop / sec / 1e9, flop / csec / 1e9};
}
static void *w_vdp(void *p) { *(struct rate *)p = run_vdp(200000000L); return 0; }
static void *w_amx(void *p) { *(struct rate *)p = run_amx(20000000L); return 0; }
static struct rate both(void *(*f)(void *)) {
  pthread_t t[2]; struct rate r[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], 0, f, &r[i]);
  for (int i = 0; i < 2; i++) pthread_join(t[i], 0);
  return (struct rate){r[0].wall + r[1].wall, r[0].cpu + r[1].cpu};
}
int main() {
  struct rate one = run_vdp(200000000L), two = both(w_vdp);
  printf("AVX512-BF16 VDPBF16PS peak: 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s"
         " (per CPU-second: %.1f, %.1f)\n", one.wall, two.wall, one.cpu, two.cpu);
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) {
    printf("AMX: arch_prctl(ARCH_REQ_XCOMP_PERM) refused, no AMX peak\n"); return 1;
  }
  one = run_amx(20000000L); two = both(w_amx);
  printf("AMX TDPBF16PS peak: 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s"
         " (per CPU-second: %.1f, %.1f)\n", one.wall, two.wall, one.cpu, two.cpu);
}
