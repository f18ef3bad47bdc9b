// The int4 and int8 decoders computed by server/native/opt-decoder.c instead of onnxruntime, on CPUs where that
// kernel is the faster one (docs/performance.md, "Kernels beyond onnxruntime 1.30"). Loaded through koffi, as
// mapped-weights.ts calls madvise; the library is built by scripts/build-native.mjs into dist/native/.
import * as fs from 'node:fs';
import * as path from 'node:path';

const LIBRARY = `opt-decoder-${process.platform}-${process.arch}.so`;

interface Library {
  simd: () => number;
  open: (file: string, threads: number, widest: number, err: Buffer, errLen: number) => unknown;
  run: (
    m: unknown, rows: number, len: number, total: number, capacity: number,
    embeds: Float32Array, positions: Int32Array, mask: Uint8Array, keys: Float32Array, values: Float32Array,
    logits: Float32Array, err: Buffer, errLen: number,
  ) => number;
  close: (m: unknown) => void;
  linear: (
    bits: number, widest: number, threads: number, n: number, k: number, block: number,
    w: Uint8Array, s: Float32Array, zs: Float32Array, bias: Float32Array | null, rows: number, x: Float32Array, y: Float32Array,
    err: Buffer, errLen: number,
  ) => number;
}

let library: Library | null | undefined;

/** The native decoder's kernels, narrowest first, as opt_simd numbers them. */
export const NATIVE_KERNELS = ['portable', 'avx2', 'avx512-vnni'] as const;
export type NativeKernel = (typeof NATIVE_KERNELS)[number];

/** Where the built library is: beside the bundles (dist/native), or the repository's dist/native from source. */
function libraryPath(): string | undefined {
  return [path.join(__dirname, 'native', LIBRARY), path.join(__dirname, '../../../../dist/native', LIBRARY)].find((f) => fs.existsSync(f));
}

function load(): Library | null {
  if (library !== undefined) return library;
  library = null;
  const file = libraryPath();
  if (!file) return null;
  try {
    const koffi = require('koffi') as typeof import('koffi');
    const lib = koffi.load(file);
    koffi.opaque('Opt');
    library = {
      simd: lib.func('int opt_simd(void)') as Library['simd'],
      open: lib.func('Opt *opt_open(const char *path, int threads, int widest, _Out_ uint8_t *err, int err_len)') as Library['open'],
      run: lib.func(
        'int opt_run(Opt *m, int rows, int len, int total, int capacity, const float *embeds, const int32_t *positions, const uint8_t *mask, float *keys, float *values, _Out_ float *logits, _Out_ uint8_t *err, int err_len)',
      ) as Library['run'],
      close: lib.func('void opt_close(Opt *m)') as Library['close'],
      linear: lib.func(
        'int opt_linear(int bits, int widest, int threads, int n, int k, int block, const uint8_t *w, const float *s, const float *zs, const float *bias, int rows, const float *x, _Out_ float *y, _Out_ uint8_t *err, int err_len)',
      ) as Library['linear'],
    };
  } catch {
    // No prebuilt koffi for this platform, or a library that does not load: onnxruntime's decoder is used.
  }
  return library;
}

/** The widest kernel this CPU runs, or undefined when the library is not built or does not load. */
export function nativeKernel(): NativeKernel | undefined {
  const lib = load();
  return lib ? NATIVE_KERNELS[lib.simd()] : undefined;
}

/** Whether the native decoder is there and this CPU runs one of its vector kernels (the portable one is for tests). */
export function nativeDecoderAvailable(): boolean {
  const kernel = nativeKernel();
  return kernel !== undefined && kernel !== 'portable';
}

function message(err: Buffer): string {
  const end = err.indexOf(0);
  return err.subarray(0, end < 0 ? err.length : end).toString('utf8');
}

/** Weights of one linear in the native layout (quantize.ts's packColumnInterleaved): W [n, k] in blocks of `block`. */
export interface NativeLinearWeights {
  bits: 4 | 8;
  n: number;
  k: number;
  block: number;
  codes: Uint8Array;
  scales: Float32Array;
  scaledZeros: Float32Array;
  bias?: Float32Array;
}

/**
 * y [rows, n] = x [rows, k] · Wᵀ + bias computed by one kernel of the native decoder (or this CPU's widest, if
 * narrower): the kernels' tests give it chosen codes and activations.
 */
export function nativeLinear(weights: NativeLinearWeights, x: Float32Array, rows: number, kernel: NativeKernel, threads = 2): Float32Array {
  const lib = load();
  if (!lib) throw new Error(`the native decoder library (${LIBRARY}) is not built`);
  const { bits, n, k, block } = weights;
  // The C side trusts the sizes: a short array would be read past its end.
  if (weights.codes.length !== (n * k * bits) / 8 || weights.scales.length !== (n * k) / block || weights.scaledZeros.length !== (n * k) / block || (weights.bias && weights.bias.length !== n) || x.length !== rows * k) {
    throw new Error(`the native linear's arrays do not match ${n}x${k} in ${bits}-bit blocks of ${block} and ${rows} rows`);
  }
  const y = new Float32Array(rows * n);
  const err = Buffer.alloc(256);
  const rc = lib.linear(bits, NATIVE_KERNELS.indexOf(kernel), threads, n, k, block, weights.codes, weights.scales, weights.scaledZeros, weights.bias ?? null, rows, x, y, err, err.length);
  if (rc !== 0) throw new Error(`the native linear failed: ${message(err)}`);
  return y;
}

/** An opened weights file (convert/native-weights.ts) and its threads. */
export class NativeDecoder {
  private handle: unknown;

  private constructor(
    private readonly lib: Library,
    handle: unknown,
    readonly file: string,
    /** The kernel it computes with: the widest of this CPU's, or a narrower one when asked for. */
    readonly kernel: NativeKernel,
  ) {
    this.handle = handle;
  }

  /** `widest`: a narrower kernel than this CPU's widest, to compare the kernels. */
  static open(file: string, threads: number, widest: NativeKernel = 'avx512-vnni'): NativeDecoder {
    const lib = load();
    if (!lib) throw new Error(`the native decoder library (${LIBRARY}) is not built`);
    const err = Buffer.alloc(256);
    const cap = Math.min(NATIVE_KERNELS.indexOf(widest), lib.simd());
    const handle = lib.open(file, threads, cap, err, err.length);
    if (!handle) throw new Error(`the native decoder cannot open ${file}: ${message(err)}`);
    return new NativeDecoder(lib, handle, file, NATIVE_KERNELS[cap]);
  }

  /**
   * `len` new positions of `rows` rows. keys and values: every layer's cache, [layers, rows, heads, capacity, head
   * size], the first `total - len` positions filled; the run writes its own after them. Logits of each row's last
   * position, [rows, vocab].
   */
  run(rows: number, len: number, total: number, capacity: number, embeds: Float32Array, positions: Int32Array, mask: Uint8Array, keys: Float32Array, values: Float32Array, vocab: number): Float32Array {
    if (!this.handle) throw new Error('the native decoder is closed');
    const logits = new Float32Array(rows * vocab);
    const err = Buffer.alloc(256);
    if (this.lib.run(this.handle, rows, len, total, capacity, embeds, positions, mask, keys, values, logits, err, err.length) !== 0) {
      throw new Error(`the native decoder failed: ${message(err)}`);
    }
    return logits;
  }

  close(): void {
    if (this.handle) this.lib.close(this.handle);
    this.handle = undefined;
  }
}
