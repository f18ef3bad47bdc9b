// What a 4-bit kernel of our own could do for a decoding step, against onnxruntime's MatMulNBits: the weights of
// one OPT-2.7b step (32 layers x qkv 2560->7680, out 2560->2560, fc1 2560->10240, fc2 10240->2560, and the lm_head
// 2560->50272) in MatMulNBits' layout (4-bit blocks of 256 along K, a float scale and a 4-bit zero point per
// block, as quantize.ts writes them), mapped from a file as onnxruntime maps a model's weights, and multiplied by
// one row of activations quantized to int8 per block (as MatMulNBits' accuracy level 4 does), with AVX-512 VNNI
// dot products on 2 threads. It also times a plain read of the same mapping: the memory's own limit.
// A measurement for the kernel notes in docs/performance.md, not part of the product. Built and run by run.sh.
#define _GNU_SOURCE
#include <fcntl.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLK 256
#define COLS 4

typedef struct { int n, k; const uint8_t *b; const float *s; const uint8_t *zp; } Mat;
// One row of activations per block: the even and the odd elements apart (a byte holds elements 2i and 2i+1), the
// block's scale and the sum of its codes (for the zero points).
typedef struct { int8_t *ev, *od; float *sa; int32_t *sum; } QA;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }

static void quantize_row(const float *a, int k, QA *q) {
  for (int b = 0; b < k / BLK; b++) {
    float m = 0;
    for (int i = 0; i < BLK; i++) m = fmaxf(m, fabsf(a[b * BLK + i]));
    float sc = m / 127.f, inv = sc ? 1.f / sc : 0;
    int32_t s = 0;
    for (int i = 0; i < BLK / 2; i++) {
      int e = (int)lrintf(a[b * BLK + 2 * i] * inv), o = (int)lrintf(a[b * BLK + 2 * i + 1] * inv);
      q->ev[b * 128 + i] = (int8_t)e; q->od[b * 128 + i] = (int8_t)o; s += e + o;
    }
    q->sa[b] = sc; q->sum[b] = s;
  }
}

// Columns n0..n1, COLS at a time so that each block of activations is loaded once for several columns.
static void gemv_cols(const Mat *m, const QA *q, float *y, int n0, int n1) {
  const int nb = m->k / BLK, zpb = (nb + 1) / 2;
  const __m512i lo4 = _mm512_set1_epi8(0x0F);
  int n = n0;
  for (; n < n1; n += COLS) {
    const int cols = n + COLS <= n1 ? COLS : n1 - n;
    const uint8_t *bp = m->b + (size_t)n * nb * 128; const float *sp = m->s + (size_t)n * nb; const uint8_t *zpp = m->zp + (size_t)n * zpb;
    __m512 acc[COLS]; float corr[COLS];
    for (int c = 0; c < COLS; c++) { acc[c] = _mm512_setzero_ps(); corr[c] = 0; }
    for (int b = 0; b < nb; b++) {
      const __m512i e0 = _mm512_loadu_si512(q->ev + b * 128), o0 = _mm512_loadu_si512(q->od + b * 128);
      const __m512i e1 = _mm512_loadu_si512(q->ev + b * 128 + 64), o1 = _mm512_loadu_si512(q->od + b * 128 + 64);
      for (int c = 0; c < cols; c++) {
        const uint8_t *wp = bp + ((size_t)c * nb + b) * 128;
        const __m512i w0 = _mm512_loadu_si512(wp), w1 = _mm512_loadu_si512(wp + 64);
        __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(w0, lo4), e0);
        __m512i d2 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(_mm512_srli_epi16(w0, 4), lo4), o0);
        d = _mm512_dpbusd_epi32(d, _mm512_and_si512(w1, lo4), e1);
        d2 = _mm512_dpbusd_epi32(d2, _mm512_and_si512(_mm512_srli_epi16(w1, 4), lo4), o1);
        const float f = sp[c * nb + b] * q->sa[b];
        const int z = (zpp[c * zpb + (b >> 1)] >> ((b & 1) * 4)) & 15;
        acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d, d2)), _mm512_set1_ps(f), acc[c]);
        corr[c] += f * (float)(z * q->sum[b]);
      }
    }
    for (int c = 0; c < cols; c++) y[n + c] = _mm512_reduce_add_ps(acc[c]) - corr[c];
  }
}

// The same weights repacked 16 columns to a vector: per group of 16 columns and per 8 values of K, 64 bytes holding
// 4 bytes per column, byte t = value t | value t+4 << 4, so that each 32-bit lane of a VNNI dot product is one
// column and the 4 activations it multiplies are one broadcast. Per block of 256: the 16 columns' scales and
// scale x zero point as vectors. No per-column scalar work and no horizontal sums: llama.cpp's AMX backend lays its
// 4-bit weights out this way for its one-row kernel.
typedef struct { int n, k; uint8_t *w; float *s, *zs; } Packed;  // 64-byte aligned: every part is a multiple of 64 bytes

static Packed pack_interleaved(const Mat *m) {
  const int nb = m->k / BLK, zpb = (nb + 1) / 2, groups = m->n / 16;
  Packed p = {m->n, m->k, aligned_alloc(64, (size_t)m->n * m->k / 2), aligned_alloc(64, (size_t)m->n * nb * 4), aligned_alloc(64, (size_t)m->n * nb * 4)};
  for (int g = 0; g < groups; g++)
    for (int b = 0; b < nb; b++) {
      for (int c = 0; c < 16; c++) {
        const int n = g * 16 + c;
        const float sc = m->s[(size_t)n * nb + b];
        const int z = (m->zp[(size_t)n * zpb + b / 2] >> ((b & 1) * 4)) & 15;
        p.s[((size_t)g * nb + b) * 16 + c] = sc;
        p.zs[((size_t)g * nb + b) * 16 + c] = sc * (float)z;
        const uint8_t *src = m->b + ((size_t)n * nb + b) * 128;  // byte i: value 2i low, 2i+1 high
        for (int j = 0; j < 32; j++)
          for (int t = 0; t < 4; t++) {
            const int k0 = j * 8 + t, k1 = k0 + 4;
            const int v0 = (src[k0 / 2] >> ((k0 & 1) * 4)) & 15, v1 = (src[k1 / 2] >> ((k1 & 1) * 4)) & 15;
            p.w[(((size_t)g * nb + b) * 32 + j) * 64 + c * 4 + t] = (uint8_t)(v0 | v1 << 4);
          }
      }
    }
  return p;
}

// Activations in their natural order, int8 per block of 256, for the interleaved kernel.
typedef struct { int8_t *a; float *sa; float *sasum; } QN;
static void quantize_natural(const float *a, int k, QN *q) {
  for (int b = 0; b < k / BLK; b++) {
    float m = 0;
    for (int i = 0; i < BLK; i++) m = fmaxf(m, fabsf(a[b * BLK + i]));
    const float sc = m / 127.f, inv = sc ? 1.f / sc : 0;
    int32_t s = 0;
    for (int i = 0; i < BLK; i++) { const int v = (int)lrintf(a[b * BLK + i] * inv); q->a[b * BLK + i] = (int8_t)v; s += v; }
    q->sa[b] = sc; q->sasum[b] = sc * (float)s;
  }
}

static void gemv_interleaved(const Packed *p, const QN *q, float *y, int g0, int g1) {
  const int nb = p->k / BLK;
  const __m512i lo4 = _mm512_set1_epi8(0x0F);
  for (int g = g0; g < g1; g += 2) {
    const int two = g + 1 < g1;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
      const uint8_t *w0 = p->w + ((size_t)g * nb + b) * 32 * 64, *w1 = w0 + (size_t)nb * 32 * 64;
      const int8_t *a = q->a + b * BLK;
      __m512i d0 = _mm512_setzero_si512(), e0 = d0, d1 = d0, e1 = d0;
      for (int j = 0; j < 32; j++) {
        const __m512i alo = _mm512_set1_epi32(*(const int32_t *)(a + j * 8)), ahi = _mm512_set1_epi32(*(const int32_t *)(a + j * 8 + 4));
        const __m512i x0 = _mm512_load_si512(w0 + j * 64);
        d0 = _mm512_dpbusd_epi32(d0, _mm512_and_si512(x0, lo4), alo);
        e0 = _mm512_dpbusd_epi32(e0, _mm512_and_si512(_mm512_srli_epi16(x0, 4), lo4), ahi);
        if (two) {
          const __m512i x1 = _mm512_load_si512(w1 + j * 64);
          d1 = _mm512_dpbusd_epi32(d1, _mm512_and_si512(x1, lo4), alo);
          e1 = _mm512_dpbusd_epi32(e1, _mm512_and_si512(_mm512_srli_epi16(x1, 4), lo4), ahi);
        }
      }
      const __m512 sa = _mm512_set1_ps(q->sa[b]), sasum = _mm512_set1_ps(q->sasum[b]);
      const size_t o0 = ((size_t)g * nb + b) * 16, o1 = o0 + (size_t)nb * 16;
      acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d0, e0)), _mm512_mul_ps(_mm512_load_ps(p->s + o0), sa), acc0);
      acc0 = _mm512_fnmadd_ps(_mm512_load_ps(p->zs + o0), sasum, acc0);
      if (two) {
        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(d1, e1)), _mm512_mul_ps(_mm512_load_ps(p->s + o1), sa), acc1);
        acc1 = _mm512_fnmadd_ps(_mm512_load_ps(p->zs + o1), sasum, acc1);
      }
    }
    _mm512_storeu_ps(y + g * 16, acc0);
    if (two) _mm512_storeu_ps(y + (g + 1) * 16, acc1);
  }
}

// The second thread takes the upper half of each matrix's columns; it spins between matrices, as onnxruntime's
// pool does within a run.
static struct { const Mat *m; const QA *q; const Packed *p; const QN *qn; float *y; } job;
static _Atomic int posted = 0, finished = 0;
static int half(int n) { return (n / 2 + COLS - 1) / COLS * COLS; }
static void *worker(void *arg) {
  (void)arg;
  for (int seen = 0;; seen++) {
    while (atomic_load_explicit(&posted, memory_order_acquire) == seen) _mm_pause();
    if (job.p) gemv_interleaved(job.p, job.qn, job.y, job.p->n / 32, job.p->n / 16);
    else gemv_cols(job.m, job.q, job.y, half(job.m->n), job.m->n);
    atomic_fetch_add_explicit(&finished, 1, memory_order_release);
  }
  return NULL;
}
static void gemv(const Mat *m, const QA *q, float *y, int threads) {
  if (threads == 1) { gemv_cols(m, q, y, 0, m->n); return; }
  job.m = m; job.q = q; job.p = NULL; job.y = y;
  const int before = atomic_load(&finished);
  atomic_fetch_add_explicit(&posted, 1, memory_order_release);
  gemv_cols(m, q, y, 0, half(m->n));
  while (atomic_load_explicit(&finished, memory_order_acquire) == before) _mm_pause();
}

static void gemv_packed(const Packed *p, const QN *q, float *y, int threads) {
  const int groups = p->n / 16;
  if (threads == 1) { gemv_interleaved(p, q, y, 0, groups); return; }
  job.p = p; job.qn = q; job.y = y;
  const int before = atomic_load(&finished);
  atomic_fetch_add_explicit(&posted, 1, memory_order_release);
  gemv_interleaved(p, q, y, 0, groups / 2);
  while (atomic_load_explicit(&finished, memory_order_acquire) == before) _mm_pause();
}

typedef struct { const uint8_t *p; size_t n; int64_t sum; } Span;
static void *read_span(void *arg) {
  Span *s = arg; __m512i a = _mm512_setzero_si512(), b = a;
  for (size_t i = 0; i + 128 <= s->n; i += 128) { a = _mm512_add_epi64(a, _mm512_loadu_si512(s->p + i)); b = _mm512_add_epi64(b, _mm512_loadu_si512(s->p + i + 64)); }
  s->sum = _mm512_reduce_add_epi64(_mm512_add_epi64(a, b));
  return NULL;
}

int main(int argc, char **argv) {
  const char *file = argc > 1 ? argv[1] : "q4-gemv.weights";
  const int threads = argc > 2 ? atoi(argv[2]) : 2, reps = argc > 3 ? atoi(argv[3]) : 10;
  const int shapes[5][2] = {{7680, 2560}, {2560, 2560}, {10240, 2560}, {2560, 10240}, {50272, 2560}};
  const int nm = 32 * 4 + 1;
  Mat ms[32 * 4 + 1];
  size_t total = 0, codes = 0;
  for (int i = 0; i < nm; i++) {
    const int s = i == nm - 1 ? 4 : i % 4, nb = shapes[s][1] / BLK;
    ms[i].n = shapes[s][0]; ms[i].k = shapes[s][1];
    codes += (size_t)ms[i].n * nb * 128;
    total += (size_t)ms[i].n * nb * 128 + (size_t)ms[i].n * nb * 4 + (size_t)ms[i].n * ((nb + 1) / 2);
  }
  int fd = open(file, O_RDWR | O_CREAT, 0644);
  struct stat st;
  if (fd < 0 || fstat(fd, &st)) { perror(file); return 1; }
  if ((size_t)st.st_size != total) {
    // Random codes and zero points, and scales of a plausible size: the time does not depend on the values.
    if (ftruncate(fd, (off_t)total)) { perror("ftruncate"); return 1; }
    uint8_t *w = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i + 8 <= total; i += 8) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; memcpy(w + i, &x, 8); }
    size_t off = 0;
    for (int i = 0; i < nm; i++) {
      const int nb = ms[i].k / BLK;
      off += (size_t)ms[i].n * nb * 128;
      float *s = (float *)(w + off);
      for (size_t j = 0; j < (size_t)ms[i].n * nb; j++) s[j] = 0.01f * (float)(1 + j % 7);
      off += (size_t)ms[i].n * nb * 4 + (size_t)ms[i].n * ((nb + 1) / 2);
    }
    msync(w, total, MS_SYNC);
    munmap(w, total);
  }
  const uint8_t *w = mmap(NULL, total, PROT_READ, MAP_PRIVATE, fd, 0);
  size_t off = 0;
  for (int i = 0; i < nm; i++) {
    const int nb = ms[i].k / BLK;
    ms[i].b = w + off; off += (size_t)ms[i].n * nb * 128;
    ms[i].s = (const float *)(w + off); off += (size_t)ms[i].n * nb * 4;
    ms[i].zp = w + off; off += (size_t)ms[i].n * ((nb + 1) / 2);
  }
  float *a = malloc(10240 * sizeof(float)), *y = malloc(50272 * sizeof(float));
  for (int i = 0; i < 10240; i++) a[i] = sinf((float)i * 0.37f);
  QA q = {aligned_alloc(64, 5120), aligned_alloc(64, 5120), malloc(40 * sizeof(float)), malloc(40 * sizeof(int32_t))};

  // The kernel against a scalar reference on the first 64 columns of an fc1 weight.
  {
    const Mat *m = &ms[2];
    const int nb = m->k / BLK;
    double worst = 0;
    quantize_row(a, m->k, &q);
    gemv_cols(m, &q, y, 0, 64);
    for (int n = 0; n < 64; n++) {
      double s = 0;
      for (int b = 0; b < nb; b++) {
        const int z = (m->zp[n * ((nb + 1) / 2) + b / 2] >> ((b & 1) * 4)) & 15;
        for (int i = 0; i < 128; i++) {
          const uint8_t v = m->b[((size_t)n * nb + b) * 128 + i];
          s += (double)q.sa[b] * m->s[n * nb + b] * (((v & 15) - z) * (double)q.ev[b * 128 + i] + ((v >> 4) - z) * (double)q.od[b * 128 + i]);
        }
      }
      worst = fmax(worst, fabs(s - y[n]) / (1 + fabs(s)));
    }
    printf("kernel vs scalar reference: largest relative difference %.2g\n", worst);
  }

  // The plain reads first: the GEMV's second thread spins while it waits, and would take a core from them.
  double best_read = 1e30, best_gemv = 1e30;
  for (int r = 0; r < reps; r++) {
    // The first round faults the mapping in; the best of the others counts.
    const size_t mid = threads == 2 ? total / 2 / 128 * 128 : total;
    Span spans[2] = {{w, mid, 0}, {w + mid, total - mid, 0}};
    const double t0 = now();
    pthread_t rt;
    if (threads == 2) pthread_create(&rt, NULL, read_span, &spans[1]);
    read_span(&spans[0]);
    if (threads == 2) pthread_join(rt, NULL);
    if (r > 0) best_read = fmin(best_read, now() - t0);
  }
  pthread_t th;
  if (threads == 2) pthread_create(&th, NULL, worker, NULL);
  for (int r = 0; r < reps; r++) {
    const double t0 = now();
    for (int i = 0; i < nm; i++) { quantize_row(a, ms[i].k, &q); gemv(&ms[i], &q, y, threads); }
    if (r > 0) best_gemv = fmin(best_gemv, now() - t0);
  }
  // The interleaved copy (in memory here; a converter would write it): checked against the first kernel.
  Packed *ps = malloc(sizeof(Packed) * nm);
  for (int i = 0; i < nm; i++) ps[i] = pack_interleaved(&ms[i]);
  // Mapped from a file like the first kernel's weights (4 KiB pages, as onnxruntime maps a model), not the heap.
  {
    char packed_file[4096];
    snprintf(packed_file, sizeof packed_file, "%s.interleaved", file);
    const int pf = open(packed_file, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (pf < 0) { perror(packed_file); return 1; }
    size_t bytes = 0;
    for (int i = 0; i < nm; i++) {
      const size_t nb = (size_t)ps[i].k / BLK, wb = (size_t)ps[i].n * ps[i].k / 2, sb = (size_t)ps[i].n * nb * 4;
      if (write(pf, ps[i].w, wb) != (ssize_t)wb || write(pf, ps[i].s, sb) != (ssize_t)sb || write(pf, ps[i].zs, sb) != (ssize_t)sb) { perror("write"); return 1; }
      free(ps[i].w); free(ps[i].s); free(ps[i].zs);
      bytes += wb + 2 * sb;
    }
    uint8_t *pm = mmap(NULL, bytes, PROT_READ, MAP_PRIVATE, pf, 0);
    size_t o = 0;
    for (int i = 0; i < nm; i++) {
      const size_t nb = (size_t)ps[i].k / BLK, wb = (size_t)ps[i].n * ps[i].k / 2, sb = (size_t)ps[i].n * nb * 4;
      ps[i].w = pm + o; o += wb; ps[i].s = (float *)(pm + o); o += sb; ps[i].zs = (float *)(pm + o); o += sb;
    }
  }
  QN qn = {aligned_alloc(64, 10240), malloc(40 * sizeof(float)), malloc(40 * sizeof(float))};
  {
    float *y2 = malloc(50272 * sizeof(float));
    quantize_row(a, ms[2].k, &q); gemv_cols(&ms[2], &q, y, 0, ms[2].n);
    quantize_natural(a, ps[2].k, &qn); gemv_interleaved(&ps[2], &qn, y2, 0, ps[2].n / 16);
    double worst = 0;
    for (int n = 0; n < ms[2].n; n++) worst = fmax(worst, fabs((double)y[n] - y2[n]) / (1 + fabs((double)y[n])));
    printf("interleaved kernel vs the first: largest relative difference %.2g\n", worst);
    free(y2);
  }
  double best_packed = 1e30;
  for (int r = 0; r < reps; r++) {
    const double t0 = now();
    for (int i = 0; i < nm; i++) { quantize_natural(a, ps[i].k, &qn); gemv_packed(&ps[i], &qn, y, threads); }
    if (r > 0) best_packed = fmin(best_packed, now() - t0);
  }
  printf("%d thread(s), %.2f GB mapped (%.2f GB of 4-bit codes), best of %d rounds after one to fault it in:\n", threads, total / 1e9, codes / 1e9, reps - 1);
  printf("  plain read  %6.1f ms  %5.1f GB/s\n", best_read, total / 1e6 / best_read);
  printf("  4-bit GEMV  %6.1f ms  %5.1f GB/s\n", best_gemv, total / 1e6 / best_gemv);
  printf("  4-bit GEMV, 16 columns to a vector (mapped from a file as well)  %6.1f ms  %5.1f GB/s\n", best_packed, total / 1e6 / best_packed);
  return 0;
}
