// int8 matmul forms on onnxruntime-node's CPU provider, at BLIP-2's real shapes: which int8 form the int8
// precision should use (the issue asks for a measured choice between MatMulNBits with 8 bits and dynamic
// quantization).
//
//   node --import tsx test/bench/int8-matmul.ts [--threads 2] [--shapes gemv,gemm] [--forms a,b,...] [--rounds 3] [--keep]
//
// Shapes: gemv = [1x2560]x[2560x10240] (one decode step through OPT's fc1), gemm = [257x1408]x[1408x6144]
// (one image through a ViT-g fc1). Forms:
//   fp32              MatMul on float weights (the reference speed), prepacked at load
//   fp32-mapped       the same with prepacking off, as the fp32 precision's sessions run (weights used where mapped)
//   fp32-wt           prepacking off, the weights as Hugging Face stores them ([N, K]) and first: y = (W x^T)^T
//   fp32-tb           prepacking off, the weights [N, K] as Gemm's transposed B: y = x W^T
//   nbits8-l4         MatMulNBits bits=8 block 32 accuracy_level 4 (A quantized to int8 per block; what int8 converts to today)
//   nbits8-l0         the same weights, accuracy_level 0 (fp32 compute on dequantized blocks)
//   nbits8-l4-b64, nbits8-l4-b128  bits=8 level 4 with larger blocks: fewer scales per weight
//   dq-matmulinteger  DynamicQuantizeLinear(A) + MatMulInteger(per-column int8 W) + Cast + scale Mul, as
//                     onnxruntime's quantize_dynamic(per_channel=True) emits it, at optimization level 'all'
//                     (the app's level; ORT fuses it, the last column shows into what)
//   dq-unfused        the same graph at level 'basic', which leaves it unfused
//   dqmm-fused        com.microsoft DynamicQuantizeMatMul written directly
//   nbits4-l4, nbits4-l0  4-bit MatMulNBits block 32, for reference (what int4 uses)
//
// Each form's model is written to a temporary folder and timed in its own child process, so the resident memory
// a session adds (prepacked weights included) can be read from /proc without the other forms' weights in it, and
// so a form that onnxruntime refuses fails alone. Timing: warm-up, then the median (and best) of 50 runs for GEMV,
// 10 for GEMM, per process; `--rounds` processes per form, interleaved, and the table gives the median of their
// medians and the best run of all. Error: against a float64-accumulated JS matmul on the original float weights, for two activation
// distributions: gaussian, and gaussian with a few channels 40x larger (OPT's LayerNorm outputs have such outlier
// features, and DynamicQuantizeLinear quantizes A with one scale per tensor while MatMulNBits level 4 uses one
// per block of 32).
//
// The machine limits (fp32 and int8 GEMM rates, GEMV streaming) are measured here for test/bench/bench.ts (--roofline).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { writeModel } from '../../server/src/engine/graphs/external-data';
import { DataType, GraphBuilder, MS_DOMAIN, type ElemType } from '../../server/src/engine/graphs/onnx-builder';
import { packMatMulNBits, packZeroPoints, quantizePerChannelInt8, quantizeBlockwise } from '../../server/src/engine/graphs/quantize';

export interface Shape {
  name: string;
  m: number;
  k: number;
  n: number;
  reps: number;
  warmup: number;
}

export const SHAPES: Record<string, Shape> = {
  gemv: { name: 'gemv', m: 1, k: 2560, n: 10240, reps: 50, warmup: 5 },
  gemm: { name: 'gemm', m: 257, k: 1408, n: 6144, reps: 10, warmup: 2 },
  // Three beams decoding at once, and the first pass over the 32 image tokens + BOS.
  beam3: { name: 'beam3', m: 3, k: 2560, n: 10240, reps: 50, warmup: 5 },
  prefill: { name: 'prefill', m: 33, k: 2560, n: 10240, reps: 20, warmup: 3 },
};

export const FORMS = ['fp32', 'fp32-mapped', 'fp32-wt', 'fp32-tb', 'nbits8-l4', 'nbits8-l0', 'nbits8-l4-b64', 'nbits8-l4-b128', 'dq-matmulinteger', 'dq-unfused', 'dqmm-fused', 'nbits4-l4', 'nbits4-l0'] as const;
/** A named form, or any MatMulNBits variant spelled nbits{4|8}-l{level}-b{block}. */
export type Form = (typeof FORMS)[number] | `nbits${number}-l${number}-b${number}`;
const NBITS = /^nbits(4|8)-l(\d)(?:-b(\d+))?(-sym)?$/;

// ---------------------------------------------------------------------------------------------------------------
// Data

/** Seeded so every child process and every run sees the same weights and inputs. */
function gaussian(count: number, seed: number, std = 1): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const a = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(a) * std;
    if (i + 1 < count) out[i + 1] = r * Math.sin(a) * std;
  }
  return out;
}

/** Gaussian activations with a handful of channels 40x larger, at the same channels in every row. */
function withOutliers(a: Float32Array, m: number, k: number): Float32Array {
  const out = a.slice();
  const channels = Math.max(1, Math.round(k / 400));
  for (let c = 0; c < channels; c++) {
    const col = (c * 7919 + 13) % k;
    for (let r = 0; r < m; r++) out[r * k + col] *= 40;
  }
  return out;
}

/** y[m, n] = sum_k a[m, k] * w[n, k], accumulated in float64: the answer every form is compared against. */
function referenceMatmul(a: Float32Array, w: Float32Array, m: number, k: number, n: number): Float32Array {
  const y = new Float32Array(m * n);
  for (let r = 0; r < m; r++) {
    const ar = a.subarray(r * k, (r + 1) * k);
    for (let c = 0; c < n; c++) {
      const wr = w.subarray(c * k, (c + 1) * k);
      let s = 0;
      for (let i = 0; i < k; i++) s += ar[i] * wr[i];
      y[r * n + c] = s;
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------------------------
// Graphs

/** A weight initializer of one matmul. */
interface Init {
  name: string;
  dataType: ElemType;
  dims: number[];
  data: Uint8Array;
}

/** One matmul form: its weight initializers and the nodes that compute `out` from `a` over them. */
interface MatmulForm {
  inits: Init[];
  emit(g: GraphBuilder, a: string, names: string[], out: string): void;
}

// The decoder streams ~2.5 GB of int8 weights per token, far past the 32 MiB L3 cache, while one int8 GEMV weight
// (30 MB) fits in it: timed alone, repeated runs would read it from cache. So each model holds enough distinct
// copies of the weight to total this many bytes, run one after another in a single session.run.
const STREAM_BYTES = 256 * 2 ** 20;
const MAX_COPIES = 16;

function bytesOf(a: Float32Array | Int8Array | Uint8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Copy c of a weight, rotated so its bytes differ from copy 0's (no optimizer can share them). Rotating by a
 * multiple of 4 bytes keeps every element whole and every code valid; the values mean nothing, only copy 0 is
 * checked against the reference.
 */
function rotated(data: Uint8Array, c: number): Uint8Array {
  if (c === 0) return data;
  const shift = (c * 4096) % data.length;
  const out = new Uint8Array(data.length);
  out.set(data.subarray(shift), 0);
  out.set(data.subarray(0, shift), data.length - shift);
  return out;
}

export function copiesFor(form: MatmulForm): number {
  const bytes = form.inits.reduce((s, i) => s + i.data.length, 0);
  return Math.max(1, Math.min(MAX_COPIES, Math.ceil(STREAM_BYTES / bytes)));
}

/**
 * Y0 is copy 0's output (the checked one); Y1.. are the streaming copies. Weights go into external data through the
 * converter's own writer, so onnxruntime loads (and keeps, or releases after prepacking) them as it does the model's.
 */
function buildGraph(form: MatmulForm, shape: Shape, copies: number, label: string): GraphBuilder {
  const g = new GraphBuilder(label);
  for (let c = 0; c < copies; c++) {
    const names = form.inits.map((init) => g.weight(`${init.name}_${c}`, init.dataType, init.dims, [], async () => rotated(init.data, c)));
    g.withScope(`copy${c}`, () => form.emit(g, 'A', names, `Y${c}`));
    g.outputs.push({ name: `Y${c}`, type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimValue: shape.m }, { dimValue: shape.n }] } } } });
  }
  g.inputs.push({ name: 'A', type: { tensorType: { elemType: DataType.FLOAT, shape: { dim: [{ dimValue: shape.m }, { dimValue: shape.k }] } } } });
  return g;
}

async function writeFormModel(form: MatmulForm, shape: Shape, copies: number, label: string, file: string): Promise<void> {
  await writeModel(buildGraph(form, shape, copies, label), file, `int8-matmul bench ${label}`);
}

/** w is a Hugging Face Linear weight, [N, K]. */
export function fp32Form(w: Float32Array, shape: Shape): MatmulForm {
  const { k, n } = shape;
  const wT = new Float32Array(k * n);
  for (let r = 0; r < n; r++) for (let c = 0; c < k; c++) wT[c * n + r] = w[r * k + c];
  return {
    inits: [{ name: 'W', dataType: DataType.FLOAT, dims: [k, n], data: bytesOf(wT) }],
    emit: (g, a, [W], out) => void g.op('MatMul', [a, W], {}, { outputs: [out] }),
  };
}

/**
 * w kept as Hugging Face stores it, [N, K], as MatMul's first operand: y = (W x^T)^T. MLAS packs its second operand
 * at every run when prepacking is off, so this way it packs the activations (kilobytes) instead of the weights.
 */
export function fp32WeightsFirstForm(w: Float32Array, shape: Shape): MatmulForm {
  const { k, n } = shape;
  return {
    inits: [{ name: 'W', dataType: DataType.FLOAT, dims: [n, k], data: bytesOf(w) }],
    emit: (g, a, [W], out) => {
      const yT = g.op('MatMul', [W, g.op('Transpose', [a], { perm: [1, 0] })]);
      g.op('Transpose', [yT], { perm: [1, 0] }, { outputs: [out] });
    },
  };
}

/**
 * w kept [N, K] as Gemm's B with transB: one row of activations takes MLAS's transposed-B GEMV kernel (a dot product
 * per weight row, nothing packed); more rows pack B at every run, as fp32-mapped does.
 */
export function fp32TransposedBForm(w: Float32Array, shape: Shape): MatmulForm {
  const { k, n } = shape;
  return {
    inits: [{ name: 'W', dataType: DataType.FLOAT, dims: [n, k], data: bytesOf(w) }],
    emit: (g, a, [W], out) => void g.op('Gemm', [a, W], { transB: 1 }, { outputs: [out] }),
  };
}

/** Forms timed with onnxruntime's prepacking off, as the fp32 precision's sessions run (runtime/ort.ts). */
const MAPPED: readonly string[] = ['fp32-mapped', 'fp32-wt', 'fp32-tb'];

/** The converter's own layout (quantize.ts), so these numbers are the ones the int8/int4 precisions get. */
export function nbitsForm(w: Float32Array, shape: Shape, bits: 4 | 8, blockSize: number, accuracyLevel: number): MatmulForm {
  const { k, n } = shape;
  const q = quantizeBlockwise(w, n, k, bits, blockSize);
  const blocks = q.blocksPerRow;
  return {
    inits: [
      { name: 'B', dataType: DataType.UINT8, dims: [n, blocks, (blockSize * bits) / 8], data: packMatMulNBits(q) },
      { name: 'scales', dataType: DataType.FLOAT, dims: [n * blocks], data: bytesOf(q.scales) },
      { name: 'zp', dataType: DataType.UINT8, dims: [n * (bits === 4 ? Math.ceil(blocks / 2) : blocks)], data: packZeroPoints(q) },
    ],
    emit: (g, a, names, out) =>
      void g.op('MatMulNBits', [a, ...names], { K: k, N: n, bits, block_size: blockSize, accuracy_level: accuracyLevel }, { domain: MS_DOMAIN, outputs: [out] }),
  };
}

export function dynamicForm(w: Float32Array, shape: Shape, fused: boolean): MatmulForm {
  const { k, n } = shape;
  // Symmetric int8 per output column, as quantize_dynamic(per_channel=True, weight_type=QInt8) stores it: W as [K, N].
  const { codes: q, scales: scale } = quantizePerChannelInt8(w, n, k);
  return {
    inits: [
      { name: 'W_quantized', dataType: DataType.INT8, dims: [k, n], data: bytesOf(q) },
      { name: 'W_scale', dataType: DataType.FLOAT, dims: [n], data: bytesOf(scale) },
      { name: 'W_zero_point', dataType: DataType.INT8, dims: [n], data: new Uint8Array(n) },
    ],
    emit: (g, a, [Wq, Ws, Wzp], out) => {
      if (fused) {
        g.op('DynamicQuantizeMatMul', [a, Wq, Ws, Wzp], {}, { domain: MS_DOMAIN, outputs: [out] });
        return;
      }
      const [aq, as, azp] = g.opMulti('DynamicQuantizeLinear', [a], {}, { count: 3 });
      const yi = g.op('MatMulInteger', [aq, Wq, azp, Wzp]);
      g.op('Mul', [g.cast(yi, DataType.FLOAT), g.mul(as, Ws)], {}, { outputs: [out] });
    },
  };
}

function formOf(form: Form, w: Float32Array, shape: Shape): MatmulForm {
  const nb = NBITS.exec(form);
  if (nb) {
    const f = nbitsForm(w, shape, Number(nb[1]) as 4 | 8, Number(nb[3] ?? 32), Number(nb[2]));
    // -sym: without zero points (the kernel's default zero point), to see whether the zero-point path costs time.
    if (nb[4]) return { inits: f.inits.slice(0, 2), emit: f.emit };
    return f;
  }
  switch (form) {
    case 'fp32':
    case 'fp32-mapped': return fp32Form(w, shape);
    case 'fp32-wt': return fp32WeightsFirstForm(w, shape);
    case 'fp32-tb': return fp32TransposedBForm(w, shape);
    case 'dq-matmulinteger':
    case 'dq-unfused': return dynamicForm(w, shape, false);
    case 'dqmm-fused': return dynamicForm(w, shape, true);
    default: throw new Error(`unknown form ${form}`);
  }
}

/** Bytes of one copy's weight initializers per weight, scales and zero points included. */
function bytesPerWeight(form: MatmulForm, shape: Shape): number {
  return form.inits.reduce((s, i) => s + i.data.length, 0) / (shape.k * shape.n);
}

// ---------------------------------------------------------------------------------------------------------------
// Timing

export interface Timing {
  runsMs: number[];
  medianMs: number;
  bestMs: number;
}

export function summarize(runsMs: number[]): Timing {
  const sorted = [...runsMs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const medianMs = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { runsMs, medianMs, bestMs: sorted[0] };
}

/** prepack false: weights used where mapped, as the fp32 precision's sessions run. BENCH_LUT=1: MLAS's LUT GEMM. */
export function sessionOptions(threads: number, level: 'basic' | 'all' = 'all', prepack = true): ort.InferenceSession.SessionOptions {
  // The settings the app's sessions use (server/src/engine/runtime/ort.ts), so kernels match.
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: level,
    logSeverityLevel: 3,
    extra: {
      ...(!prepack && { session: { disable_prepacking: '1' } }),
      ...(process.env.BENCH_LUT && { mlas: { use_lut_gemm: '1' } }),
    },
  };
}

/** Times whole runs and reports per matmul: a run computes `copies` matmuls over distinct weights. */
export async function timeRuns(session: ort.InferenceSession, a: Float32Array, shape: Shape, warmup: number, reps: number, copies: number): Promise<Timing> {
  const feeds = { A: new ort.Tensor('float32', a, [shape.m, shape.k]) };
  let warm = 0;
  for (let i = 0; i < warmup; i++) {
    const t = performance.now();
    await session.run(feeds);
    warm = performance.now() - t;
  }
  // A form with no fast kernel (seconds per run) would take minutes to time to the same count; a few runs tell enough.
  const count = warm > 1000 ? Math.min(reps, 5) : reps;
  const runs: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await session.run(feeds);
    runs.push((performance.now() - t) / copies);
  }
  return summarize(runs);
}

export interface RooflineRates {
  threads: number;
  /** fp32 MatMul [257x1408]x[1408x6144], GFLOP/s per matmul. */
  gemm: { bestGflops: number; medianGflops: number; runs: number; copies: number };
  /** The same shape in int8 (DynamicQuantizeMatMul, onnxruntime's fastest int8 GEMM here), GOP/s. */
  int8: { bestGops: number; medianGops: number; runs: number; copies: number };
  /** fp32 MatMul [1x2560]x[2560x10240]: weight bytes streamed per second, GB/s (1e9). */
  gemv: { bestGBs: number; medianGBs: number; runs: number; copies: number };
}

/**
 * environment.md's roofline, measured now: machines differ and are noisy, so a benchmark compares against
 * rates taken in the same run. Both run over copies of the weight totalling 256 MiB, so weights come from RAM
 * as they do in the model, never from the last-level cache.
 */
export async function measureRoofline(threads: number, gemmRuns = 10, gemvRuns = 30): Promise<RooflineRates> {
  const rate = async (shape: Shape, runs: number, int8 = false) => {
    const w = gaussian(shape.n * shape.k, 1, 0.02);
    const form = int8 ? dynamicForm(w, shape, true) : fp32Form(w, shape);
    const copies = copiesFor(form);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'roofline-'));
    try {
      const file = path.join(dir, `${shape.name}.onnx`);
      await writeFormModel(form, shape, copies, 'fp32', file);
      const session = await ort.InferenceSession.create(file, sessionOptions(threads));
      try {
        return { copies, t: await timeRuns(session, gaussian(shape.m * shape.k, 2), shape, 2, runs, copies) };
      } finally {
        await session.release();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
  const gm = SHAPES.gemm;
  const gemm = await rate(gm, gemmRuns);
  const int8 = await rate(gm, gemmRuns, true);
  const flops = 2 * gm.m * gm.k * gm.n;
  const gv = SHAPES.gemv;
  const gemv = await rate(gv, gemvRuns);
  const weightBytes = 4 * gv.k * gv.n;
  return {
    threads,
    gemm: { bestGflops: flops / gemm.t.bestMs / 1e6, medianGflops: flops / gemm.t.medianMs / 1e6, runs: gemmRuns, copies: gemm.copies },
    int8: { bestGops: flops / int8.t.bestMs / 1e6, medianGops: flops / int8.t.medianMs / 1e6, runs: gemmRuns, copies: int8.copies },
    gemv: { bestGBs: weightBytes / gemv.t.bestMs / 1e6, medianGBs: weightBytes / gemv.t.medianMs / 1e6, runs: gemvRuns, copies: gemv.copies },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// One form, in a child process

interface ErrorStats {
  maxAbs: number;
  /** maxAbs / max |reference|. */
  maxRel: number;
  /** ||y - ref|| / ||ref||. */
  relL2: number;
}

interface ChildResult {
  form: Form;
  shape: string;
  ok: boolean;
  error?: string;
  createMs?: number;
  /** Resident memory the session added, per weight copy, after creation: prepacked weights are resident by then. */
  sessionRssMB?: number;
  /** The same after the timed runs: weights ORT left in the mapped file count only once they have been read. */
  runningRssMB?: number;
  timing?: Timing;
  gaussian?: ErrorStats;
  outliers?: ErrorStats;
  /** Op types left after optimization: shows whether ORT fused the dynamic-quantization graph. */
  ops?: string[];
}

function compare(y: Float32Array, ref: Float32Array): ErrorStats {
  let maxAbs = 0;
  let maxRef = 0;
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = y[i] - ref[i];
    maxAbs = Math.max(maxAbs, Math.abs(d));
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
    num += d * d;
    den += ref[i] * ref[i];
  }
  return { maxAbs, maxRel: maxAbs / maxRef, relL2: Math.sqrt(num / den) };
}

function rssMB(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

async function child(form: Form, shapeName: string, dir: string, threads: number, copies: number): Promise<void> {
  const shape = SHAPES[shapeName];
  const result: ChildResult = { form, shape: shapeName, ok: false };
  try {
    const aGauss = readF32(path.join(dir, `${shapeName}.a-gauss.f32`));
    const aOut = readF32(path.join(dir, `${shapeName}.a-outliers.f32`));
    const refGauss = readF32(path.join(dir, `${shapeName}.ref-gauss.f32`));
    const refOut = readF32(path.join(dir, `${shapeName}.ref-outliers.f32`));
    const optimized = path.join(dir, `${shapeName}.${form}.optimized.onnx`);
    const before = rssMB();
    const t = performance.now();
    const file = path.join(dir, `${shapeName}.${form}.onnx`);
    const level = form === 'dq-unfused' ? 'basic' : 'all';
    const options = sessionOptions(threads, level, !MAPPED.includes(form));
    const session = await ort.InferenceSession.create(file, options);
    result.createMs = performance.now() - t;
    result.sessionRssMB = (rssMB() - before) / copies;
    result.timing = await timeRuns(session, aGauss, shape, shape.warmup, shape.reps, copies);
    result.runningRssMB = (rssMB() - before) / copies;
    const run = async (a: Float32Array) => (await session.run({ A: new ort.Tensor('float32', a, [shape.m, shape.k]) }, ['Y0'])).Y0.data as Float32Array;
    result.gaussian = compare(await run(aGauss), refGauss);
    result.outliers = compare(await run(aOut), refOut);
    await session.release();
    // A second session just to save the optimized graph, so saving it cannot change what the timed one did.
    await (await ort.InferenceSession.create(file, { ...options, optimizedModelFilePath: optimized })).release();
    const opt = onnx.ModelProto.decode(fs.readFileSync(optimized));
    result.ops = [...new Set((opt.graph?.node ?? []).map((nd) => nd.opType ?? ''))];
    fs.rmSync(optimized, { force: true });
    result.ok = true;
  } catch (e) {
    result.error = String(e instanceof Error ? e.message : e).split('\n')[0];
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

// ---------------------------------------------------------------------------------------------------------------
// Driver

function arg(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === '--child') return child(argv[1] as Form, argv[2], argv[3], Number(argv[4]), Number(argv[5]));
  if (argv[0] === '--roofline') {
    // The machine limits for test/bench/bench.ts, as one JSON line.
    process.stdout.write(JSON.stringify(await measureRoofline(Number(arg(argv, '--threads') ?? 2))) + '\n');
    return;
  }
  const threads = Number(arg(argv, '--threads') ?? 2);
  const shapes = (arg(argv, '--shapes') ?? 'gemv,gemm').split(',');
  const forms = (arg(argv, '--forms')?.split(',') ?? [...FORMS]) as Form[];
  const roundCount = Number(arg(argv, '--rounds') ?? 3);
  for (const f of forms) if (!FORMS.includes(f as (typeof FORMS)[number]) && !NBITS.test(f)) throw new Error(`unknown form ${f}; forms: ${FORMS.join(', ')}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'int8-matmul-'));
  const results: Row[] = [];
  try {
    for (const shapeName of shapes) {
      const shape = SHAPES[shapeName];
      if (!shape) throw new Error(`unknown shape ${shapeName}`);
      const { m, k, n } = shape;
      process.stderr.write(`${shapeName}: [${m}x${k}]x[${k}x${n}], reference matmuls in JS ...\n`);
      // Linear weights of a trained transformer are roughly gaussian with std ~0.02.
      const w = gaussian(n * k, 11, 0.02);
      const aGauss = gaussian(m * k, 12);
      const aOut = withOutliers(aGauss, m, k);
      fs.writeFileSync(path.join(dir, `${shapeName}.a-gauss.f32`), bytesOf(aGauss));
      fs.writeFileSync(path.join(dir, `${shapeName}.a-outliers.f32`), bytesOf(aOut));
      fs.writeFileSync(path.join(dir, `${shapeName}.ref-gauss.f32`), bytesOf(referenceMatmul(aGauss, w, m, k, n)));
      fs.writeFileSync(path.join(dir, `${shapeName}.ref-outliers.f32`), bytesOf(referenceMatmul(aOut, w, m, k, n)));
      const built = [];
      for (const form of forms) {
        const f = formOf(form, w, shape);
        const copies = copiesFor(f);
        await writeFormModel(f, shape, copies, form, path.join(dir, `${shapeName}.${form}.onnx`));
        built.push({ form, copies, bytesPerWeight: bytesPerWeight(f, shape) });
      }
      // Rounds go through every form in turn, so a change in memory bandwidth (other VMs share the host) hits
      // all forms alike instead of whichever happened to be running.
      const rounds = new Map<Form, ChildResult[]>();
      for (let round = 1; round <= roundCount; round++) {
        for (const { form, copies } of built) {
          const p = spawnSync(process.execPath, [...process.execArgv, __filename, '--child', form, shapeName, dir, String(threads), String(copies)], {
            encoding: 'utf8',
            maxBuffer: 1 << 24,
          });
          const line = p.stdout.trim().split('\n').pop() ?? '';
          let r: ChildResult;
          try {
            r = JSON.parse(line) as ChildResult;
          } catch {
            r = { form, shape: shapeName, ok: false, error: `child exited ${p.status ?? p.signal}: ${(p.stderr || line).trim().split('\n').slice(-1)[0]}` };
          }
          rounds.set(form, [...(rounds.get(form) ?? []), r]);
          process.stderr.write(`  round ${round} ${form.padEnd(17)} ${r.ok ? `${r.timing!.medianMs.toFixed(3)} ms median` : `FAILED: ${r.error}`}\n`);
        }
      }
      for (const { form, copies, bytesPerWeight: bpw } of built) {
        const rs = rounds.get(form)!;
        const ok = rs.filter((r) => r.ok);
        if (ok.length === 0) {
          results.push({ ...rs[0], bytesPerWeight: bpw, copies, roundMedians: [] });
          continue;
        }
        const roundMedians = ok.map((r) => r.timing!.medianMs);
        const med = (xs: number[]) => summarize(xs).medianMs;
        results.push({
          ...ok[0],
          timing: { runsMs: [], medianMs: med(roundMedians), bestMs: Math.min(...ok.map((r) => r.timing!.bestMs)) },
          sessionRssMB: med(ok.map((r) => r.sessionRssMB!)),
          runningRssMB: med(ok.map((r) => r.runningRssMB!)),
          bytesPerWeight: bpw,
          copies,
          roundMedians,
        });
      }
      for (const { form } of built) for (const ext of ['.onnx', '.onnx_data']) fs.rmSync(path.join(dir, `${shapeName}.${form}${ext}`), { force: true });
    }
  } finally {
    if (!argv.includes('--keep')) fs.rmSync(dir, { recursive: true, force: true });
  }
  printTable(results, threads);
  process.stdout.write(JSON.stringify({ threads, cpu: os.cpus()[0]?.model, loadavg: os.loadavg(), results: results.map(({ timing, ...r }) => ({ ...r, timing: timing && { medianMs: timing.medianMs, bestMs: timing.bestMs } })) }) + '\n');
}

type Row = ChildResult & { bytesPerWeight: number; copies: number; roundMedians: number[] };

function printTable(results: Row[], threads: number): void {
  const e = (x: number) => x.toExponential(2);
  const lines = [
    `\nint8 matmul forms, onnxruntime-node ${ort.env.versions.common}, CPU, ${threads} threads (error vs float64 JS matmul on the float weights)`,
    '(times per matmul, each run going through `copies` distinct copies of the weight so it streams from RAM; median ms = median of the rounds\' medians;',
    ' rate: GEMV = weight bytes/s, GEMM = FLOP/s; RSS per copy, "running" includes the outputs, 6 MiB per copy for GEMM)',
    '| shape | form | copies | median ms | best ms | round medians | rate | B/weight in file | file MiB | RSS MiB after create / running | gauss max abs | gauss rel L2 | outliers max abs | outliers rel L2 | ops after optimization |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    const shape = SHAPES[r.shape];
    if (!r.ok) {
      lines.push(`| ${r.shape} | ${r.form} | FAILED: ${r.error} |`);
      continue;
    }
    const t = r.timing!;
    const rate = shape.m === 1
      ? `${((r.bytesPerWeight * shape.k * shape.n) / t.medianMs / 1e6).toFixed(1)} GB/s`
      : `${((2 * shape.m * shape.k * shape.n) / t.medianMs / 1e6).toFixed(0)} GFLOP/s`;
    lines.push(
      `| ${r.shape} | ${r.form} | ${r.copies} | ${t.medianMs.toFixed(3)} | ${t.bestMs.toFixed(3)} | ${r.roundMedians.map((x) => x.toFixed(2)).join(' ')} | ${rate} | ${r.bytesPerWeight.toFixed(4)} | ${((r.bytesPerWeight * shape.k * shape.n) / 2 ** 20).toFixed(1)} | ${r.sessionRssMB!.toFixed(1)} / ${r.runningRssMB!.toFixed(1)} | ${e(r.gaussian!.maxAbs)} | ${e(r.gaussian!.relL2)} | ${e(r.outliers!.maxAbs)} | ${e(r.outliers!.relL2)} | ${r.ops!.join(' ')} |`,
    );
  }
  process.stdout.write(lines.join('\n') + '\n\n');
}

if (path.resolve(process.argv[1] ?? '') === __filename) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`int8-matmul: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  });
}
