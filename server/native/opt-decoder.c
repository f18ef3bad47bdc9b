// OPT's decoder on the CPU over 4-bit or 8-bit weights, for the int4 and int8 precisions: onnxruntime 1.30's 4-bit
// kernel reads a decoding step's weights at about half the memory's speed on some CPUs (README, "Kernels beyond
// onnxruntime 1.30"), and this one at nearly all of it. Loaded through koffi by
// server/src/engine/runtime/native-decoder.ts; the weights file is written by
// server/src/engine/convert/native-weights.ts, whose layout this mirrors.
//
// Layout of a linear y = x·Wᵀ + b, W [N, K]: columns in groups of 16, K in blocks of `block` values, each block in
// chunks of 8 values. 4 bits: a chunk is 64 bytes, for each of the 16 columns 4 bytes, byte t holding value t (low
// nibble) and value t + 4 (high nibble). 8 bits: a chunk is 128 bytes, values 0-3 of the 16 columns (4 bytes each)
// and then their values 4-7. Either way one 32-bit lane of a VNNI dot product is one column, the 4 activations it
// multiplies are one broadcast, and the two widths differ only in how a chunk becomes its two vectors of codes.
// Then per group and block the 16 scales, and the 16 scale × zero point products. Codes are unsigned with a zero
// point per block (MatMulNBits' quantization). Activations are quantized to int8 per block, symmetric, as
// onnxruntime's MatMulNBits accuracy level 4 does.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define MAGIC "BLIP2OPT"
// Version 2 names the weights' bits; version 1 (converter version 6's int4 files) had no such field and 4 bits.
#define VERSION 2u
#define COLS 16
#define PER_LAYER 20
#define FINAL 6

// The kernels, narrowest first (opt_simd's numbers); a CPU that runs one runs the narrower ones too.
#define KERNEL_PORTABLE 0
#define KERNEL_AVX2 1
#define KERNEL_AVX512_VNNI 2

typedef struct {
  int n, k, block, bits;
  const uint8_t *w;
  const float *s, *zs, *bias;
} Linear;

typedef struct {
  const float *ln1g, *ln1b, *ln2g, *ln2b;
  Linear qkv, out, fc1, fc2;
} Layer;

// One row's activations for a linear: int8 codes, and per block the scale and the sum of the codes. The codes are
// -127..127 (the 8-bit AVX2 kernel relies on it), but for a block whose scale is denormal, whose inverse overflows:
// whatever they are there, that scale (under 1e-38) makes them nothing.
typedef struct {
  int8_t *a;
  float *sa;
  int32_t *sum;
} Quantized;

typedef struct Pool Pool;
typedef void (*Task)(void *arg, int part, int parts);

typedef struct {
  Pool *pool;
  int part;
} Seat;

struct Pool {
  int threads;
  pthread_t *ids;
  Seat *seats;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  _Atomic unsigned generation;
  _Atomic int remaining;
  Task task;
  void *arg;
  _Atomic int quit;
};

typedef struct {
  uint32_t layers, hidden, heads, head_dim, head_size, ffn, vocab, positions, block;
  Layer *layer;
  const float *lnfg, *lnfb, *pos;
  Linear lm;
  void *map;
  size_t map_bytes;
  int kernel;  // KERNEL_*
  Pool pool;
} Opt;

// --------------------------------------------------------------------------------------------------------------
// Threads: the caller takes part 0 and the workers the others; between runs the workers spin a little (a decoding
// step's 129 matmuls come microseconds apart) and then sleep.

static void *worker_main(void *seat_) {
  const Seat *seat = seat_;
  Pool *p = seat->pool;
  const int part = seat->part;
  // Not read from generation: a run posted before this thread first got the CPU would be taken as already seen.
  unsigned seen = 0;
  for (;;) {
    int spins = 0;
    while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen && !atomic_load(&p->quit)) {
      if (++spins < 200000) {
#if defined(__x86_64__)
        _mm_pause();
#endif
        continue;
      }
      pthread_mutex_lock(&p->lock);
      while (atomic_load(&p->generation) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->wake, &p->lock);
      pthread_mutex_unlock(&p->lock);
    }
    if (atomic_load(&p->quit)) return NULL;
    seen = atomic_load(&p->generation);
    p->task(p->arg, part, p->threads);
    atomic_fetch_sub_explicit(&p->remaining, 1, memory_order_release);
  }
}

static int pool_start(Pool *p, int threads) {
  memset(p, 0, sizeof *p);
  p->threads = threads < 1 ? 1 : threads;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->wake, NULL);
  p->ids = calloc((size_t)p->threads, sizeof(pthread_t));
  p->seats = calloc((size_t)p->threads, sizeof(Seat));
  if (!p->ids || !p->seats) return -1;
  for (int i = 0; i < p->threads - 1; i++) {
    p->seats[i] = (Seat){p, i + 1};
    if (pthread_create(&p->ids[i], NULL, worker_main, &p->seats[i])) {
      // Fewer threads than asked: the parts are split among those that started (the count is read per run).
      p->threads = i + 1;
      break;
    }
  }
  return 0;
}

static void pool_run(Pool *p, Task task, void *arg) {
  if (p->threads == 1) {
    task(arg, 0, 1);
    return;
  }
  p->task = task;
  p->arg = arg;
  atomic_store(&p->remaining, p->threads - 1);
  pthread_mutex_lock(&p->lock);
  atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  task(arg, 0, p->threads);
  while (atomic_load_explicit(&p->remaining, memory_order_acquire) > 0) {
#if defined(__x86_64__)
    _mm_pause();
#endif
  }
}

static void pool_stop(Pool *p) {
  atomic_store(&p->quit, 1);
  pthread_mutex_lock(&p->lock);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  for (int i = 0; i < p->threads - 1; i++) pthread_join(p->ids[i], NULL);
  free(p->ids);
  free(p->seats);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->wake);
}

// --------------------------------------------------------------------------------------------------------------
// Linears.

static void quantize(const float *x, int k, int block, Quantized *q) {
  for (int b = 0; b < k / block; b++) {
    const float *v = x + b * block;
    float m = 0;
    for (int i = 0; i < block; i++) m = fmaxf(m, fabsf(v[i]));
    const float scale = m / 127.f, inv = scale > 0 ? 1.f / scale : 0.f;
    int32_t sum = 0;
    for (int i = 0; i < block; i++) {
      const int c = (int)lrintf(v[i] * inv);
      q->a[b * block + i] = (int8_t)c;
      sum += c;
    }
    q->sa[b] = scale;
    q->sum[b] = sum;
  }
}

#if defined(__x86_64__)
// The same codes as quantize(): both round to nearest even and scale by the same floats. A step quantizes 129 rows
// on one thread while the others wait, 3 ms of a 50 ms step in scalar code. Both vector kernels use it (every CPU
// with AVX-512 has AVX2, and 8 lanes make this work small enough).
static __attribute__((target("avx2,fma"))) void quantize_avx2(const float *x, int k, int block, Quantized *q) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int b = 0; b < k / block; b++) {
    const float *v = x + b * block;
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < block; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + i)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    const float scale = _mm_cvtss_f32(h) / 127.f, inv = scale > 0 ? 1.f / scale : 0.f;
    const __m256 vinv = _mm256_set1_ps(inv);
    __m256i sum = _mm256_setzero_si256();
    for (int i = 0; i < block; i += 8) {
      const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + i), vinv));
      const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
      _mm_storel_epi64((__m128i *)(q->a + b * block + i), _mm_packs_epi16(w, w));
      sum = _mm256_add_epi32(sum, c);
    }
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    q->sa[b] = scale;
    q->sum[b] = _mm_cvtsi128_si32(t);
  }
}
#endif

// A chunk (8 values of K for 16 columns) is 64 bytes at 4 bits and 128 at 8.
#define CHUNK_BYTES(bits) (COLS * (bits))

// The chunks of group g (16 columns) and block b.
static inline const uint8_t *weights_at(const Linear *l, int g, int b) {
  const int nb = l->k / l->block;
  return l->w + ((size_t)g * nb + b) * (size_t)(l->block / 8) * CHUNK_BYTES(l->bits);
}

// Column c's code for value t (0-7) of the chunk at w.
static inline int code_at(const uint8_t *w, int bits, int c, int t) {
  if (bits == 8) return w[(t >> 2) * 64 + c * 4 + (t & 3)];
  const uint8_t byte = w[c * 4 + (t & 3)];
  return t < 4 ? byte & 15 : byte >> 4;
}

// Portable: any CPU, and the reference the vector kernels are tested against.
static void linear_groups_scalar(const Linear *l, const Quantized *q, int rows, float *y, int g0, int g1) {
  const int nb = l->k / l->block, chunks = l->block / 8;
  for (int r = 0; r < rows; r++)
    for (int g = g0; g < g1; g++) {
      float acc[COLS] = {0};
      for (int b = 0; b < nb; b++) {
        int32_t d[COLS] = {0};
        const uint8_t *w = weights_at(l, g, b);
        const int8_t *a = q[r].a + b * l->block;
        for (int j = 0; j < chunks; j++)
          for (int c = 0; c < COLS; c++)
            for (int t = 0; t < 8; t++) d[c] += code_at(w + j * CHUNK_BYTES(l->bits), l->bits, c, t) * a[j * 8 + t];
        const float *s = l->s + ((size_t)g * nb + b) * COLS, *zs = l->zs + ((size_t)g * nb + b) * COLS;
        const float sasum = q[r].sa[b] * (float)q[r].sum[b];
        for (int c = 0; c < COLS; c++) acc[c] += (float)d[c] * s[c] * q[r].sa[b] - zs[c] * sasum;
      }
      for (int c = 0; c < COLS; c++) y[(size_t)r * l->n + g * COLS + c] = acc[c] + (l->bias ? l->bias[g * COLS + c] : 0.f);
    }
}

typedef void (*Tile)(const Linear *l, const Quantized *q, float *y, int g);

#if defined(__x86_64__)
// A chunk of 16 columns as two vectors of unsigned codes: values 0-3 and 4-7, 4 bytes per column.
static inline __attribute__((target("avx512f,avx512bw"), always_inline)) void chunk512(const uint8_t *w, int bits, __m512i *lo, __m512i *hi) {
  if (bits == 8) {
    *lo = _mm512_loadu_si512(w);
    *hi = _mm512_loadu_si512(w + 64);
    return;
  }
  const __m512i x = _mm512_loadu_si512(w), lo4 = _mm512_set1_epi8(0x0F);
  *lo = _mm512_and_si512(x, lo4);
  *hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), lo4);
}

// Two groups (32 columns) by R rows at a time: each chunk is loaded (and at 4 bits split into nibbles) once for the R
// rows, and 2 x R x 2 independent accumulators hide the dot products' latency. vpdpbusd adds its four u8 × s8
// products into 32 bits without saturating, so 8-bit codes need nothing more than 4-bit ones.
#define TILE(BITS, R)                                                                                               \
  static __attribute__((target("avx512f,avx512bw,avx512vnni"))) void tile##BITS##_##R(                             \
      const Linear *l, const Quantized *q, float *y, int g) {                                                       \
    const int nb = l->k / l->block, chunks = l->block / 8;                                                          \
    const int two = (g + 1) * COLS < l->n;                                                                          \
    __m512 acc[2][R];                                                                                               \
    for (int r = 0; r < R; r++) acc[0][r] = acc[1][r] = _mm512_setzero_ps();                                        \
    for (int b = 0; b < nb; b++) {                                                                                  \
      const uint8_t *w0 = weights_at(l, g, b), *w1 = two ? weights_at(l, g + 1, b) : w0;                            \
      __m512i lo[2][R], hi[2][R];                                                                                   \
      for (int r = 0; r < R; r++) lo[0][r] = hi[0][r] = lo[1][r] = hi[1][r] = _mm512_setzero_si512();               \
      for (int j = 0; j < chunks; j++) {                                                                            \
        __m512i x0l, x0h, x1l, x1h;                                                                                 \
        chunk512(w0 + j * CHUNK_BYTES(BITS), BITS, &x0l, &x0h);                                                     \
        chunk512(w1 + j * CHUNK_BYTES(BITS), BITS, &x1l, &x1h);                                                     \
        for (int r = 0; r < R; r++) {                                                                               \
          const int8_t *a = q[r].a + b * l->block + j * 8;                                                          \
          int32_t alo, ahi;                                                                                         \
          memcpy(&alo, a, 4);                                                                                       \
          memcpy(&ahi, a + 4, 4);                                                                                   \
          const __m512i bl = _mm512_set1_epi32(alo), bh = _mm512_set1_epi32(ahi);                                   \
          lo[0][r] = _mm512_dpbusd_epi32(lo[0][r], x0l, bl);                                                        \
          hi[0][r] = _mm512_dpbusd_epi32(hi[0][r], x0h, bh);                                                        \
          lo[1][r] = _mm512_dpbusd_epi32(lo[1][r], x1l, bl);                                                        \
          hi[1][r] = _mm512_dpbusd_epi32(hi[1][r], x1h, bh);                                                        \
        }                                                                                                           \
      }                                                                                                             \
      for (int h = 0; h < 2; h++) {                                                                                 \
        const size_t o = ((size_t)(g + h) * nb + b) * COLS;                                                         \
        const __m512 s = _mm512_loadu_ps(l->s + o), zs = _mm512_loadu_ps(l->zs + o);                                \
        for (int r = 0; r < R; r++) {                                                                               \
          const __m512 d = _mm512_cvtepi32_ps(_mm512_add_epi32(lo[h][r], hi[h][r]));                                \
          acc[h][r] = _mm512_fmadd_ps(d, _mm512_mul_ps(s, _mm512_set1_ps(q[r].sa[b])), acc[h][r]);                  \
          acc[h][r] = _mm512_fnmadd_ps(zs, _mm512_set1_ps(q[r].sa[b] * (float)q[r].sum[b]), acc[h][r]);             \
        }                                                                                                           \
        if (!two) break;                                                                                            \
      }                                                                                                             \
    }                                                                                                               \
    for (int h = 0; h < 1 + two; h++) {                                                                             \
      const __m512 bias = l->bias ? _mm512_loadu_ps(l->bias + (g + h) * COLS) : _mm512_setzero_ps();                \
      for (int r = 0; r < R; r++) _mm512_storeu_ps(y + (size_t)r * l->n + (g + h) * COLS, _mm512_add_ps(acc[h][r], bias)); \
    }                                                                                                               \
  }
TILE(4, 1)
TILE(4, 2)
TILE(4, 3)
TILE(4, 4)
TILE(8, 1)
TILE(8, 2)
TILE(8, 3)
TILE(8, 4)
static const Tile tiles_vnni[2][4] = {{tile4_1, tile4_2, tile4_3, tile4_4}, {tile8_1, tile8_2, tile8_3, tile8_4}};

// Groups outside, rows inside: a pair of groups' weights (8K bytes each at 4 bits, 16K at 8) is read from memory once
// and from the cache for every further tile of 4 rows, so a 33-row prefill streams the weights once, not 9 times.
static void linear_groups_vnni(const Linear *l, const Quantized *q, int rows, float *y, int g0, int g1) {
  const Tile *tile = tiles_vnni[l->bits == 8];
  for (int g = g0; g < g1; g += 2)
    for (int r = 0; r < rows; r += 4) tile[(rows - r < 4 ? rows - r : 4) - 1](l, q + r, y + (size_t)r * l->n, g);
}

// One half (8 columns) of a chunk for AVX2, ready for vpmaddubsw's unsigned operand: values 0-3 and 4-7. At 8 bits
// also the codes minus 128 as signed bytes (see chunk_dot_avx2), and the magnitudes.
typedef struct {
  __m256i lo, hi, slo, shi;
} Half;

static inline __attribute__((target("avx2"), always_inline)) Half half256(const uint8_t *w, int bits, int h) {
  Half x;
  if (bits == 8) {
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    x.slo = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + 32 * h)), flip);
    x.shi = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + 64 + 32 * h)), flip);
    x.lo = _mm256_abs_epi8(x.slo);
    x.hi = _mm256_abs_epi8(x.shi);
    return x;
  }
  const __m256i v = _mm256_loadu_si256((const __m256i *)(w + 32 * h)), lo4 = _mm256_set1_epi8(0x0F);
  x.lo = _mm256_and_si256(v, lo4);
  x.hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
  x.slo = x.shi = _mm256_setzero_si256();
  return x;
}

// Each column's sum over the chunk of code × activation, vl and vh broadcasting activations 0-3 and 4-7. vpmaddubsw
// adds two u8 × s8 products into a saturating int16. Nibbles cannot reach its limit (2 x 15 x 127, and the low and
// high halves' sum 7620). 8-bit codes could (2 x 255 x 127 = 64770), so they go in as codes - 128, a signed byte c:
// |c| (at most 128) times the activation with c's sign (vpsignb; activations are -127..127, so that never
// overflows) is c × a, and two of them at most 2 x 128 x 127 = 32512. The kernel adds the 128 × Σa back per block.
static inline __attribute__((target("avx2"), always_inline)) __m256i chunk_dot_avx2(int bits, Half x, __m256i vl, __m256i vh) {
  const __m256i ones = _mm256_set1_epi16(1);
  if (bits == 8) {
    const __m256i pl = _mm256_maddubs_epi16(x.lo, _mm256_sign_epi8(vl, x.slo));
    const __m256i ph = _mm256_maddubs_epi16(x.hi, _mm256_sign_epi8(vh, x.shi));
    return _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones));
  }
  return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(x.lo, vl), _mm256_maddubs_epi16(x.hi, vh)), ones);
}

// AVX2 without VNNI (most laptops): one group of 16 columns, as two vectors of 8, by R rows.
#define TILE_AVX2(BITS, R)                                                                                          \
  static __attribute__((target("avx2,fma"))) void tile_avx2_##BITS##_##R(const Linear *l, const Quantized *q,      \
                                                                          float *y, int g) {                       \
    const int nb = l->k / l->block, chunks = l->block / 8;                                                          \
    __m256 acc[2][R];                                                                                               \
    for (int r = 0; r < R; r++) acc[0][r] = acc[1][r] = _mm256_setzero_ps();                                        \
    for (int b = 0; b < nb; b++) {                                                                                  \
      const uint8_t *w = weights_at(l, g, b);                                                                       \
      __m256i d[2][R];                                                                                              \
      for (int r = 0; r < R; r++) d[0][r] = d[1][r] = _mm256_setzero_si256();                                       \
      for (int j = 0; j < chunks; j++) {                                                                            \
        const Half xa = half256(w + j * CHUNK_BYTES(BITS), BITS, 0), xb = half256(w + j * CHUNK_BYTES(BITS), BITS, 1); \
        for (int r = 0; r < R; r++) {                                                                               \
          const int8_t *a = q[r].a + b * l->block + j * 8;                                                          \
          int32_t alo, ahi;                                                                                         \
          memcpy(&alo, a, 4);                                                                                       \
          memcpy(&ahi, a + 4, 4);                                                                                   \
          const __m256i vl = _mm256_set1_epi32(alo), vh = _mm256_set1_epi32(ahi);                                   \
          d[0][r] = _mm256_add_epi32(d[0][r], chunk_dot_avx2(BITS, xa, vl, vh));                                    \
          d[1][r] = _mm256_add_epi32(d[1][r], chunk_dot_avx2(BITS, xb, vl, vh));                                    \
        }                                                                                                           \
      }                                                                                                             \
      const size_t o = ((size_t)g * nb + b) * COLS;                                                                 \
      for (int h = 0; h < 2; h++) {                                                                                 \
        const __m256 s = _mm256_loadu_ps(l->s + o + h * 8), zs = _mm256_loadu_ps(l->zs + o + h * 8);                \
        for (int r = 0; r < R; r++) {                                                                               \
          if (BITS == 8) d[h][r] = _mm256_add_epi32(d[h][r], _mm256_set1_epi32(128 * q[r].sum[b]));                 \
          acc[h][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d[h][r]), _mm256_mul_ps(s, _mm256_set1_ps(q[r].sa[b])), acc[h][r]); \
          acc[h][r] = _mm256_fnmadd_ps(zs, _mm256_set1_ps(q[r].sa[b] * (float)q[r].sum[b]), acc[h][r]);             \
        }                                                                                                           \
      }                                                                                                             \
    }                                                                                                               \
    for (int h = 0; h < 2; h++) {                                                                                   \
      const __m256 bias = l->bias ? _mm256_loadu_ps(l->bias + g * COLS + h * 8) : _mm256_setzero_ps();              \
      for (int r = 0; r < R; r++) _mm256_storeu_ps(y + (size_t)r * l->n + g * COLS + h * 8, _mm256_add_ps(acc[h][r], bias)); \
    }                                                                                                               \
  }
TILE_AVX2(4, 1)
TILE_AVX2(4, 2)
TILE_AVX2(4, 3)
TILE_AVX2(8, 1)
TILE_AVX2(8, 2)
TILE_AVX2(8, 3)
static const Tile tiles_avx2[2][3] = {{tile_avx2_4_1, tile_avx2_4_2, tile_avx2_4_3}, {tile_avx2_8_1, tile_avx2_8_2, tile_avx2_8_3}};

static void linear_groups_avx2(const Linear *l, const Quantized *q, int rows, float *y, int g0, int g1) {
  const Tile *tile = tiles_avx2[l->bits == 8];
  for (int g = g0; g < g1; g++)
    for (int r = 0; r < rows; r += 3) tile[(rows - r < 3 ? rows - r : 3) - 1](l, q + r, y + (size_t)r * l->n, g);
}
#endif

typedef struct {
  const Opt *m;
  const Linear *l;
  const Quantized *q;
  int rows;
  float *y;
} LinearJob;

static void linear_part(void *arg, int part, int parts) {
  const LinearJob *j = arg;
  // Pairs of groups, split evenly between the threads.
  const int groups = j->l->n / COLS, pairs = (groups + 1) / 2;
  const int p0 = (int)((long)pairs * part / parts), p1 = (int)((long)pairs * (part + 1) / parts);
  const int g0 = p0 * 2, g1 = p1 * 2 < groups ? p1 * 2 : groups;
#if defined(__x86_64__)
  if (j->m->kernel == KERNEL_AVX512_VNNI) {
    linear_groups_vnni(j->l, j->q, j->rows, j->y, g0, g1);
    return;
  }
  if (j->m->kernel == KERNEL_AVX2) {
    linear_groups_avx2(j->l, j->q, j->rows, j->y, g0, g1);
    return;
  }
#endif
  linear_groups_scalar(j->l, j->q, j->rows, j->y, g0, g1);
}

// Room for `rows` quantized rows of up to k values in blocks of `block`, in one allocation (free() releases it).
static Quantized *quantized_rows(int rows, int k, int block) {
  const size_t nb = (size_t)k / block;
  Quantized *q = malloc((sizeof(Quantized) + nb * (sizeof(float) + sizeof(int32_t)) + (size_t)k) * rows);
  if (!q) return NULL;
  float *sa = (float *)(q + rows);
  int32_t *sum = (int32_t *)(sa + nb * rows);
  int8_t *a = (int8_t *)(sum + nb * rows);
  for (int i = 0; i < rows; i++) q[i] = (Quantized){a + (size_t)i * k, sa + nb * i, sum + nb * i};
  return q;
}

// x [rows, k] -> y [rows, n]; q has room for rows quantized rows of the largest k.
static void linear(Opt *m, const Linear *l, const float *x, int rows, Quantized *q, float *y) {
  for (int r = 0; r < rows; r++) {
#if defined(__x86_64__)
    if (m->kernel >= KERNEL_AVX2) {
      quantize_avx2(x + (size_t)r * l->k, l->k, l->block, &q[r]);
      continue;
    }
#endif
    quantize(x + (size_t)r * l->k, l->k, l->block, &q[r]);
  }
  LinearJob job = {m, l, q, rows, y};
  pool_run(&m->pool, linear_part, &job);
}

// --------------------------------------------------------------------------------------------------------------
// The rest of a layer.

static void layer_norm(const float *x, const float *g, const float *b, int n, float *y) {
  double mean = 0, var = 0;
  for (int i = 0; i < n; i++) mean += x[i];
  mean /= n;
  for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
  var /= n;
  const float inv = (float)(1.0 / sqrt(var + 1e-5));
  for (int i = 0; i < n; i++) y[i] = (float)(x[i] - mean) * inv * g[i] + b[i];
}

typedef struct {
  const Opt *m;
  int rows, len, total, capacity;
  const uint8_t *mask;
  const float *qkv;
  float *keys, *values, *out, *scores;
} AttentionJob;

// A float reduction in C stays one scalar chain of dependent adds (no reassociation without -ffast-math): at 40
// cached positions the query-key products were several milliseconds of a step.
#if defined(__x86_64__)
static __attribute__((target("avx2,fma"))) float dot_avx2(const float *a, const float *b, int n) {
  __m256 s = _mm256_setzero_ps();
  int d = 0;
  for (; d + 8 <= n; d += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float t = _mm_cvtss_f32(h);
  for (; d < n; d++) t += a[d] * b[d];
  return t;
}
#endif

static float dot(const Opt *m, const float *a, const float *b, int n) {
#if defined(__x86_64__)
  if (m->kernel >= KERNEL_AVX2) return dot_avx2(a, b, n);
#endif
  float s = 0;
  for (int d = 0; d < n; d++) s += a[d] * b[d];
  return s;
}

// One (row, head) pair after another: softmax(q·kᵀ + mask) · v over the cache's filled positions and the run's own.
static void attention_part(void *arg, int part, int parts) {
  const AttentionJob *j = arg;
  const Opt *m = j->m;
  const int hs = (int)m->head_size, heads = (int)m->heads, width = heads * hs, filled = j->total - j->len;
  const int pairs = j->rows * heads;
  float *scores = j->scores + (size_t)part * j->total;
  for (int p = pairs * part / parts; p < pairs * (part + 1) / parts; p++) {
    const int r = p / heads, h = p % heads;
    const float *kc = j->keys + ((size_t)r * heads + h) * j->capacity * hs;
    const float *vc = j->values + ((size_t)r * heads + h) * j->capacity * hs;
    const uint8_t *mask = j->mask + (size_t)r * j->total;
    for (int i = 0; i < j->len; i++) {
      const float *q = j->qkv + ((size_t)r * j->len + i) * 3 * width + h * hs;
      const int upto = filled + i + 1;
      float best = -FLT_MAX;
      for (int t = 0; t < upto; t++) {
        float s = dot(m, q, kc + (size_t)t * hs, hs);
        if (!mask[t]) s += -FLT_MAX;
        scores[t] = s;
        if (s > best) best = s;
      }
      float sum = 0;
      for (int t = 0; t < upto; t++) sum += scores[t] = expf(scores[t] - best);
      float *o = j->out + ((size_t)r * j->len + i) * width + h * hs;
      for (int d = 0; d < hs; d++) o[d] = 0;
      for (int t = 0; t < upto; t++) {
        const float w = scores[t] / sum;
        for (int d = 0; d < hs; d++) o[d] += w * vc[(size_t)t * hs + d];
      }
    }
  }
}

// --------------------------------------------------------------------------------------------------------------
// The library's functions.

static int fail(char *err, int err_len, const char *what) {
  if (err && err_len > 0) snprintf(err, (size_t)err_len, "%s", what);
  return -1;
}

static int simd_available(void) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return KERNEL_PORTABLE;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni")) return KERNEL_AVX512_VNNI;
  return KERNEL_AVX2;
#endif
  return KERNEL_PORTABLE;
}

/** The widest kernel this CPU runs: 2 AVX-512 VNNI, 1 AVX2, 0 the portable one. */
int opt_simd(void) { return simd_available(); }

// The widest kernel both this CPU and the caller allow.
static int kernel_for(int widest) {
  const int best = simd_available();
  return widest < best ? (widest < 0 ? 0 : widest) : best;
}

/**
 * Maps a weights file and starts `threads` threads; NULL with a sentence in err when the file is not one. `widest`:
 * the widest kernel to use (as opt_simd numbers them; tests compare the narrower ones with it).
 */
void *opt_open(const char *path, int threads, int widest, char *err, int err_len) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { fail(err, err_len, strerror(errno)); return NULL; }
  struct stat st;
  if (fstat(fd, &st) || st.st_size < 64) { close(fd); fail(err, err_len, "the file is too short"); return NULL; }
  void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) { fail(err, err_len, strerror(errno)); return NULL; }
  const uint8_t *base = map;
  // Version 2: version, the 9 sizes, bits, and a zero that keeps the offsets after it 8-byte aligned. Version 1: no
  // bits (4) and no padding.
  uint32_t head[12];
  memcpy(head, base + 8, sizeof head);
  const uint32_t bits = head[0] == 1 ? 4 : head[10];
  Opt *m = calloc(1, sizeof *m);
  if (!m || memcmp(base, MAGIC, 8) || (head[0] != 1 && head[0] != VERSION) || (bits != 4 && bits != 8)) {
    free(m);
    munmap(map, (size_t)st.st_size);
    fail(err, err_len, "not a weights file of this version");
    return NULL;
  }
  m->map = map;
  m->map_bytes = (size_t)st.st_size;
  m->layers = head[1]; m->hidden = head[2]; m->heads = head[3]; m->head_dim = head[4]; m->head_size = head[5];
  m->ffn = head[6]; m->vocab = head[7]; m->positions = head[8]; m->block = head[9];
  const size_t count = (size_t)m->layers * PER_LAYER + FINAL;
  const size_t header = 8 + 4 * (head[0] == 1 ? 10 : 12);
  if (header + count * 8 > m->map_bytes) { munmap(map, m->map_bytes); free(m); fail(err, err_len, "the file is truncated"); return NULL; }
  const uint64_t *offsets = (const uint64_t *)(base + header);
  for (size_t i = 0; i < count; i++)
    if (offsets[i] >= m->map_bytes || offsets[i] % 64) { munmap(map, m->map_bytes); free(m); fail(err, err_len, "an offset is outside the file"); return NULL; }
  const uint32_t width_ = m->heads * m->head_size;
  if (!m->block || m->block % 8 || m->hidden % m->block || width_ % m->block || m->ffn % m->block || m->hidden % 32 ||
      width_ % 32 || m->ffn % 32 || m->vocab % COLS || m->head_size < m->head_dim) {
    munmap(map, m->map_bytes); free(m); fail(err, err_len, "the model's sizes do not suit this kernel"); return NULL;
  }
#define AT(i) ((const void *)(base + offsets[i]))
  const int width = (int)width_, blk = (int)m->block, nbits = (int)bits;
  m->layer = calloc(m->layers, sizeof(Layer));
  for (uint32_t i = 0; i < m->layers; i++) {
    const size_t o = (size_t)i * PER_LAYER;
    Layer *L = &m->layer[i];
    L->ln1g = AT(o + 0); L->ln1b = AT(o + 1);
    L->qkv = (Linear){3 * width, (int)m->hidden, blk, nbits, AT(o + 2), AT(o + 3), AT(o + 4), AT(o + 5)};
    L->out = (Linear){(int)m->hidden, width, blk, nbits, AT(o + 6), AT(o + 7), AT(o + 8), AT(o + 9)};
    L->ln2g = AT(o + 10); L->ln2b = AT(o + 11);
    L->fc1 = (Linear){(int)m->ffn, (int)m->hidden, blk, nbits, AT(o + 12), AT(o + 13), AT(o + 14), AT(o + 15)};
    L->fc2 = (Linear){(int)m->hidden, (int)m->ffn, blk, nbits, AT(o + 16), AT(o + 17), AT(o + 18), AT(o + 19)};
  }
  const size_t f = (size_t)m->layers * PER_LAYER;
  m->lnfg = AT(f + 0); m->lnfb = AT(f + 1);
  m->lm = (Linear){(int)m->vocab, (int)m->hidden, blk, nbits, AT(f + 2), AT(f + 3), AT(f + 4), NULL};
  m->pos = AT(f + 5);
#undef AT
  m->kernel = kernel_for(widest);
  pool_start(&m->pool, threads);
  return m;
}

void opt_close(void *m_) {
  Opt *m = m_;
  if (!m) return;
  pool_stop(&m->pool);
  munmap(m->map, m->map_bytes);
  free(m->layer);
  free(m);
}

/**
 * One run over `len` new positions of `rows` rows: embeds [rows, len, hidden] (token embeddings, without positions),
 * positions [rows, len], mask [rows, total] (1 for real positions); keys and values [layers, rows, heads, capacity,
 * head size] hold the first total - len positions and receive the new ones. logits [rows, vocab], of each row's last
 * position. 0, or -1 with a sentence in err.
 */
int opt_run(void *m_, int rows, int len, int total, int capacity, const float *embeds, const int32_t *positions,
            const uint8_t *mask, float *keys, float *values, float *logits, char *err, int err_len) {
  Opt *m = m_;
  const int hidden = (int)m->hidden, hs = (int)m->head_size, heads = (int)m->heads, width = heads * hs;
  const int n = rows * len, filled = total - len;
  if (rows < 1 || len < 1 || filled < 0 || total > capacity) return fail(err, err_len, "bad run shape");
  for (int i = 0; i < n; i++)
    if (positions[i] < 0 || (uint32_t)positions[i] + 2 >= m->positions) return fail(err, err_len, "a position is past the model's table");
  const size_t widest = m->ffn > 3u * (uint32_t)width ? m->ffn : 3u * (uint32_t)width;
  float *x = malloc(sizeof(float) * (size_t)n * hidden), *h = malloc(sizeof(float) * (size_t)n * hidden);
  float *big = malloc(sizeof(float) * (size_t)n * widest), *att = malloc(sizeof(float) * (size_t)n * width);
  float *scores = malloc(sizeof(float) * (size_t)m->pool.threads * total);
  const int kmax = (int)(m->ffn > m->hidden ? m->ffn : m->hidden) > width ? (int)(m->ffn > m->hidden ? m->ffn : m->hidden) : width;
  Quantized *q = quantized_rows(n, kmax, (int)m->block);
  int rc = 0;
  if (!x || !h || !big || !att || !scores || !q) { rc = fail(err, err_len, "out of memory"); goto done; }
  for (int i = 0; i < n; i++) {
    const float *p = m->pos + ((size_t)positions[i] + 2) * hidden;
    for (int d = 0; d < hidden; d++) x[(size_t)i * hidden + d] = embeds[(size_t)i * hidden + d] + p[d];
  }
  const size_t layer_kv = (size_t)rows * heads * capacity * hs;
  for (uint32_t li = 0; li < m->layers; li++) {
    const Layer *L = &m->layer[li];
    float *kc = keys + li * layer_kv, *vc = values + li * layer_kv;
    for (int i = 0; i < n; i++) layer_norm(x + (size_t)i * hidden, L->ln1g, L->ln1b, hidden, h + (size_t)i * hidden);
    linear(m, &L->qkv, h, n, q, big);
    // The run's keys and values into the cache, after the filled positions.
    for (int r = 0; r < rows; r++)
      for (int i = 0; i < len; i++) {
        const float *row = big + ((size_t)r * len + i) * 3 * width;
        for (int hd = 0; hd < heads; hd++) {
          const size_t at = (((size_t)r * heads + hd) * capacity + filled + i) * hs;
          memcpy(kc + at, row + width + hd * hs, sizeof(float) * hs);
          memcpy(vc + at, row + 2 * width + hd * hs, sizeof(float) * hs);
        }
      }
    AttentionJob aj = {m, rows, len, total, capacity, mask, big, kc, vc, att, scores};
    pool_run(&m->pool, attention_part, &aj);
    linear(m, &L->out, att, n, q, h);
    for (size_t i = 0; i < (size_t)n * hidden; i++) x[i] += h[i];
    for (int i = 0; i < n; i++) layer_norm(x + (size_t)i * hidden, L->ln2g, L->ln2b, hidden, h + (size_t)i * hidden);
    linear(m, &L->fc1, h, n, q, big);
    for (size_t i = 0; i < (size_t)n * m->ffn; i++) big[i] = big[i] > 0 ? big[i] : 0;
    linear(m, &L->fc2, big, n, q, h);
    for (size_t i = 0; i < (size_t)n * hidden; i++) x[i] += h[i];
  }
  // Only each row's last position goes through the final norm and the vocabulary.
  for (int r = 0; r < rows; r++) layer_norm(x + ((size_t)r * len + len - 1) * hidden, m->lnfg, m->lnfb, hidden, h + (size_t)r * hidden);
  linear(m, &m->lm, h, rows, q, logits);
done:
  free(x); free(h); free(big); free(att); free(scores); free(q);
  return rc;
}

/**
 * One linear, y [rows, n] = x [rows, k] · Wᵀ + bias, over weights in the file's layout (4 or 8 bits; w, s and zs as
 * native-weights.ts packs them; bias may be NULL), with the kernel `widest` (or this CPU's widest, if narrower) on
 * `threads` threads: the kernels' tests give it chosen codes and activations. 0, or -1 with a sentence in err.
 */
int opt_linear(int bits, int widest, int threads, int n, int k, int block, const uint8_t *w, const float *s,
               const float *zs, const float *bias, int rows, const float *x, float *y, char *err, int err_len) {
  if ((bits != 4 && bits != 8) || n < COLS || n % COLS || block < 8 || block % 8 || k < block || k % block || rows < 1)
    return fail(err, err_len, "bad linear shape");
  Opt m = {.kernel = kernel_for(widest)};
  const Linear l = {n, k, block, bits, w, s, zs, bias};
  Quantized *q = quantized_rows(rows, k, block);
  if (!q || pool_start(&m.pool, threads)) {
    free(q);
    return fail(err, err_len, "out of memory");
  }
  linear(&m, &l, x, rows, q, y);
  pool_stop(&m.pool);
  free(q);
  return 0;
}
