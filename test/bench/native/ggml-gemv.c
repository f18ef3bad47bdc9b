// The same decoding-step volume as q4-gemv.c through ggml (llama.cpp's tensor library, as node-llama-cpp ships it
// prebuilt per CPU kind): weights quantized by ggml itself and placed in the CPU backend's buffer type for them
// (AMX, or the repacked interleaved layouts, or plain), multiplied by `rows` rows of activations on 2 threads.
// A measurement for the kernel notes in docs/performance.md, not part of the product. Built and run by run.sh:
//   ggml-gemv TYPE ROWS REPS   (TYPE q4_0 | q4_k | q8_0; BUFT=AMX|CPU_REPACK picks the buffer type, PLAIN=1 none)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include "ggml.h"
#include "ggml-cpu.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
int main(int argc, char **argv) {
  ggml_cpu_init();
  enum ggml_type type = argc > 1 && !strcmp(argv[1], "q4_k") ? GGML_TYPE_Q4_K : argc > 1 && !strcmp(argv[1], "q8_0") ? GGML_TYPE_Q8_0 : argc > 1 && !strcmp(argv[1], "iq4_nl") ? GGML_TYPE_IQ4_NL : GGML_TYPE_Q4_0;
  int rows = argc > 2 ? atoi(argv[2]) : 1, reps = argc > 3 ? atoi(argv[3]) : 10; int useExtra = !getenv("PLAIN");
  int shapes[5][2] = {{2560, 7680}, {2560, 2560}, {2560, 10240}, {10240, 2560}, {2560, 50272}};
  int nm = 32 * 4 + 1;
  ggml_backend_t cpu = ggml_backend_cpu_init();
  ggml_backend_cpu_set_n_threads(cpu, getenv("T") ? atoi(getenv("T")) : 2);
  ggml_backend_dev_t dev = ggml_backend_get_device(cpu);
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
  ggml_backend_dev_get_extra_bufts_t get_extra = (ggml_backend_dev_get_extra_bufts_t)ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts");
  ggml_backend_buffer_type_t buft = ggml_backend_cpu_buffer_type();
  if (get_extra && useExtra) { ggml_backend_buffer_type_t *e = get_extra(dev); for (; e && *e; e++) { if (strstr(ggml_backend_buft_name(*e), getenv("BUFT") ? getenv("BUFT") : "REPACK")) buft = *e; } }
  printf("weights in %s\n", ggml_backend_buft_name(buft));
  struct ggml_init_params wp = { .mem_size = ggml_tensor_overhead() * (nm + 8), .mem_buffer = NULL, .no_alloc = true };
  struct ggml_context *wctx = ggml_init(wp);
  struct ggml_tensor *ws[200]; size_t wbytes = 0;
  for (int i = 0; i < nm; i++) { int s = i == nm - 1 ? 4 : i % 4; ws[i] = ggml_new_tensor_2d(wctx, type, shapes[s][0], shapes[s][1]); wbytes += ggml_nbytes(ws[i]); }
  ggml_backend_buffer_t wbuf = ggml_backend_alloc_ctx_tensors_from_buft(wctx, buft);
  if (!wbuf) { printf("alloc failed\n"); return 1; }
  ggml_backend_buffer_set_usage(wbuf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
  uint64_t r = 88172645463325252ull;
  for (int i = 0; i < nm; i++) {
    int k = ws[i]->ne[0], n = ws[i]->ne[1]; size_t rs = ggml_row_size(type, k);
    float *src = malloc(sizeof(float) * k * 64); char *tmp = malloc(rs * 64);
    for (int j = 0; j < k * 64; j++) { r ^= r << 13; r ^= r >> 7; r ^= r << 17; src[j] = ((double)(r >> 11) / 9007199254740992.0 - 0.5) * 0.1; }
    ggml_quantize_chunk(type, src, tmp, 0, 64, k, NULL);
    char *full = malloc(rs * n); for (int row = 0; row < n; row++) memcpy(full + (size_t)row * rs, tmp + (size_t)(row % 64) * rs, rs);
    ggml_backend_tensor_set(ws[i], full, 0, rs * n);
    free(src); free(tmp); free(full);
  }
  struct ggml_init_params cp = { .mem_size = ggml_tensor_overhead() * 1024 + ggml_graph_overhead_custom(1024, false), .mem_buffer = NULL, .no_alloc = true };
  struct ggml_context *ctx = ggml_init(cp);
  struct ggml_tensor *x1 = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 2560, rows), *x2 = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 10240, rows);
  struct ggml_cgraph *gf = ggml_new_graph_custom(ctx, 1024, false);
  for (int i = 0; i < nm; i++) ggml_build_forward_expand(gf, ggml_mul_mat(ctx, ws[i], ws[i]->ne[0] == 2560 ? x1 : x2));
  ggml_backend_buffer_t abuf = ggml_backend_alloc_ctx_tensors_from_buft(ctx, ggml_backend_cpu_buffer_type());
  float *xs = malloc(sizeof(float) * 10240 * rows); for (int i = 0; i < 10240 * rows; i++) xs[i] = (float)((i * 37) % 101) / 101.f - 0.5f;
  ggml_backend_tensor_set(x1, xs, 0, 2560 * rows * 4); ggml_backend_tensor_set(x2, xs, 0, 10240 * rows * 4);
  printf("%s, %d row(s): weights %.2f GB (%p)\n", ggml_type_name(type), rows, wbytes / 1e9, (void *)abuf);
  double best = 1e9;
  for (int i = 0; i < reps; i++) { double t0 = now(); ggml_backend_graph_compute(cpu, gf); double t = now() - t0; if (i > 0 && t < best) best = t; printf("  %.1f ms\n", t); }
  printf("best %.1f ms, %.1f GB/s, %.0f GOP/s\n", best, wbytes / 1e6 / best, 2.0 * rows * 2.65e9 / 1e6 / best);
  return 0;
}
