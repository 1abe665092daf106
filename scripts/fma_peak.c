// The CPU's peak fp32 rate, for the FLOP efficiency of `bench` and
// bench_vs_sentence_transformers.py: 16 independent AVX-512 FMA chains per thread (no memory
// traffic), on 1 thread and on 2 threads at once. Run it alone on the machine.
//   gcc -O2 -mavx512f -pthread scripts/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
// Needs AVX-512F (an AVX2-only CPU stops with an illegal instruction).
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
#include <pthread.h>
#define N 16
static double run(long iters) {
  __m512 acc[N]; __m512 a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(0.9999999f);
  for (int i = 0; i < N; i++) acc[i] = _mm512_set1_ps((float)i);
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long it = 0; it < iters; it++) {
    #pragma GCC unroll 16
    for (int i = 0; i < N; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  float s = 0; for (int i = 0; i < N; i++) s += _mm512_reduce_add_ps(acc[i]);
  double sec = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  if (s == 12345.f) printf("x");
  return iters * N * 16 * 2 / sec / 1e9;
}
static void *worker(void *p) { *(double *)p = run(400000000L); return 0; }
int main() {
  double one = run(400000000L);
  pthread_t t[2]; double r[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], 0, worker, &r[i]);
  for (int i = 0; i < 2; i++) pthread_join(t[i], 0);
  printf("fp32 FMA peak: 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n", one, r[0] + r[1]);
}
