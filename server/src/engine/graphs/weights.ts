import type { Checkpoint } from '../checkpoint/checkpoint';
import { f32ArrayToF16 } from '../tensor/half';
import { DataType, MS_DOMAIN, type ElemType, type GraphBuilder } from './onnx-builder';
import { blockSizeFor, packGatherData, packMatMulNBits, packZeroPoints, quantizePerChannelInt8, quantizeBlockwise } from './quantize';

/**
 * How a module's Linear weights are quantized:
 *  - `nbits`: block-wise 4- or 8-bit weights for MatMulNBits (`blockSize` is the preferred block, made smaller only
 *    where it does not divide K); the smallest weights, which memory-bound decoding wants.
 *  - `int8-dynamic`: per-channel int8 weights for DynamicQuantizeMatMul (activations quantized per run); onnxruntime's
 *    fastest int8 GEMM on CPUs with VNNI, which the compute-bound vision encoder wants.
 */
export type QuantSettings =
  | {
      kind: 'nbits';
      bits: 4 | 8;
      blockSize: number;
      /** MatMulNBits accuracy_level: 4 computes in int8 on CPU, measured twice as fast here as the fp32 path. */
      accuracyLevel: number;
    }
  | { kind: 'int8-dynamic' };

/** How one module's weights are stored: the float type of activations and weights, and optional quantization of Linear layers. */
export interface WeightFormat {
  floatType: ElemType;
  quant?: QuantSettings;
}

/** One checkpoint Linear, or a slice of the rows of a fused one, with an optional factor folded into its rows. */
export interface LinearPart {
  weight: string;
  bias?: string;
  /** Multiplies the first `rows` output rows (weight and bias), e.g. attention's 1/sqrt(head_dim) folded into q. */
  scaleRows?: { rows: number; factor: number };
}

/**
 * Attention heads widened with zeros from `dim` to `padded` features, for fused kernels that need a head size that
 * is a multiple of 8: q·k and the attention output are unchanged, since every added feature is zero.
 */
export interface HeadPadding {
  heads: number;
  dim: number;
  padded: number;
}

/** [heads*dim, width] rows -> [heads*padded, width], the added rows zero. */
function padHeadRows(data: Float32Array, pad: HeadPadding, width: number): Float32Array {
  if (pad.padded === pad.dim) return data;
  const out = new Float32Array(pad.heads * pad.padded * width);
  for (let h = 0; h < pad.heads; h++) out.set(data.subarray(h * pad.dim * width, (h + 1) * pad.dim * width), h * pad.padded * width);
  return out;
}

/** [rows, heads*dim] columns -> [rows, heads*padded], the added columns zero. */
function padHeadColumns(data: Float32Array, pad: HeadPadding, rows: number): Float32Array {
  if (pad.padded === pad.dim) return data;
  const inW = pad.heads * pad.dim;
  const outW = pad.heads * pad.padded;
  const out = new Float32Array(rows * outW);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < pad.heads; h++) out.set(data.subarray(r * inW + h * pad.dim, r * inW + (h + 1) * pad.dim), r * outW + h * pad.padded);
  }
  return out;
}

/** Head padding of a fused Linear: `output` on every part's rows (q, k, v projections), `input` on the columns (the output projection). */
export interface LinearHeads {
  output?: HeadPadding;
  input?: HeadPadding;
}

export interface FusedLinear {
  n: number;
  k: number;
  /** The checkpoint tensors of the weight, and of the bias when there is one. */
  weightSources: string[];
  biasSources: string[];
  weight: () => Promise<Float32Array>;
  bias?: () => Promise<Float32Array>;
}

/**
 * y = x·Wᵀ + b over the concatenation of `parts` along the output dimension, as every weight format stores it: its
 * size and its float weight [n, k] and bias [n] (when every part has one), read when asked for.
 */
export function fusedLinear(ckpt: Checkpoint, parts: LinearPart[], heads?: LinearHeads): FusedLinear {
  const widen = (size: number, pad?: HeadPadding) => (pad ? (size / pad.dim) * pad.padded : size);
  const k0 = ckpt.info(parts[0].weight).shape[1];
  const k = widen(k0, heads?.input);
  const n = parts.reduce((s, p) => s + widen(ckpt.info(p.weight).shape[0], heads?.output), 0);
  const hasBias = parts.every((p) => p.bias);
  return {
    n,
    k,
    weightSources: parts.map((p) => p.weight),
    biasSources: hasBias ? parts.map((p) => p.bias!) : [],
    weight: async () => {
      const w = await loadRows(ckpt, parts, (p) => p.weight, n, k0, heads?.output);
      return heads?.input ? padHeadColumns(w, heads.input, n) : w;
    },
    bias: hasBias ? () => loadRows(ckpt, parts, (p) => p.bias!, n, 1, heads?.output) : undefined,
  };
}

/** Reads each part's tensor, folds its row scale in, pads its heads, and stacks the parts along the output rows. */
async function loadRows(ckpt: Checkpoint, parts: LinearPart[], pick: (p: LinearPart) => string, n: number, width: number, pad?: HeadPadding): Promise<Float32Array> {
  const out = parts.length === 1 ? undefined : new Float32Array(n * width);
  let row = 0;
  for (const p of parts) {
    let data = await ckpt.read(pick(p));
    if (p.scaleRows) {
      // A copy: what read() returns may be shared with the other outputs made from the same tensor.
      data = data.slice();
      const end = p.scaleRows.rows * width;
      for (let i = 0; i < end; i++) data[i] *= p.scaleRows.factor;
    }
    if (pad) data = padHeadRows(data, pad, width);
    if (!out) return data;
    out.set(data, row * width);
    row += data.length / width;
  }
  return out!;
}

/**
 * Emits weights into a graph in the chosen format. Weights are read from the checkpoint only when the
 * external-data writer asks for them, and fused Linears (q|k|v) are concatenated along the output rows.
 */
export class WeightEmitter {
  constructor(
    private readonly g: GraphBuilder,
    private readonly ckpt: Checkpoint,
    readonly format: WeightFormat,
  ) {}

  withFormat(format: WeightFormat): WeightEmitter {
    return new WeightEmitter(this.g, this.ckpt, format);
  }

  get floatType(): ElemType {
    return this.format.floatType;
  }

  /** A float tensor copied as-is (embeddings, norms, biases), in this module's float type. */
  tensor(name: string, dims?: number[], transform?: (data: Float32Array) => Float32Array): string {
    const info = this.ckpt.info(name);
    const id = `${name}${this.suffix()}`;
    return this.g.weight(id, this.floatType, dims ?? info.shape, [name], async () => {
      let data = await this.ckpt.read(name);
      if (transform) data = transform(data);
      return this.floatBytes(data);
    });
  }

  layerNorm(x: string, prefix: string, eps: number): string {
    return this.g.layerNorm(x, this.tensor(`${prefix}.weight`), this.tensor(`${prefix}.bias`), eps);
  }

  /** y = x·Wᵀ + b over the concatenation of `parts` (fusedLinear), in this emitter's format. */
  linear(x: string, parts: LinearPart[], id: string, heads?: LinearHeads): string {
    const { n, k, weight: load, bias, weightSources, biasSources } = fusedLinear(this.ckpt, parts, heads);
    let y: string;
    const quant = this.format.quant;
    if (quant?.kind === 'nbits') {
      const blockSize = blockSizeFor(k, quant.blockSize);
      const shared = shareOnce(async () => quantizeBlockwise(await load(), n, k, quant.bits, blockSize), 3);
      const blocks = Math.ceil(k / blockSize);
      const B = this.g.weight(`${id}.qweight`, DataType.UINT8, [n, blocks, (blockSize * quant.bits) / 8], weightSources, async () => packMatMulNBits(await shared()));
      const scales = this.g.weight(`${id}.scales`, DataType.FLOAT, [n * blocks], weightSources, async () => bytes((await shared()).scales));
      const zp = this.g.weight(`${id}.zero_points`, DataType.UINT8, [n * (quant.bits === 4 ? Math.ceil(blocks / 2) : blocks)], weightSources, async () => packZeroPoints(await shared()));
      y = this.g.op('MatMulNBits', [x, B, scales, zp], {
        K: k,
        N: n,
        bits: quant.bits,
        block_size: blockSize,
        accuracy_level: quant.accuracyLevel,
      }, { domain: MS_DOMAIN });
    } else if (quant?.kind === 'int8-dynamic') {
      const shared = shareOnce(async () => quantizePerChannelInt8(await load(), n, k), 2);
      const B = this.g.weight(`${id}.qweight_t`, DataType.INT8, [k, n], weightSources, async () => bytes((await shared()).codes));
      const scales = this.g.weight(`${id}.scales`, DataType.FLOAT, [n], weightSources, async () => bytes((await shared()).scales));
      const zp = this.g.weight(`${id}.zero_points`, DataType.INT8, [n], weightSources, async () => new Uint8Array(n));
      y = this.g.op('DynamicQuantizeMatMul', [x, B, scales, zp], {}, { domain: MS_DOMAIN });
    } else if (this.floatType === DataType.FLOAT) {
      // Float32 weights are used where they are mapped (no prepacking), and MLAS packs a MatMul's second operand at
      // every run: as Gemm's transposed B, one row takes a GEMV kernel that packs nothing, and more rows pack their
      // panels from [N, K] faster (test/bench/int8-matmul.ts, form fp32-tb: 3 beams 18.5 -> 7.8 ms per 100 MB,
      // 33 rows 24.8 -> 15.3, the encoder's shape 30.5 -> 26.8, one row unchanged).
      const W = this.g.weight(`${id}.weight`, this.floatType, [n, k], weightSources, async () => this.floatBytes(await load()));
      y = this.g.op('FusedMatMul', [x, W], { transB: 1 }, { domain: MS_DOMAIN });
    } else {
      const wT = this.g.weight(`${id}.weight_t${this.suffix()}`, this.floatType, [k, n], weightSources, async () => this.floatBytes(transpose(await load(), n, k)));
      y = this.g.matmul(x, wT);
    }
    if (bias) {
      const b = this.g.weight(`${id}.bias${this.suffix()}`, this.floatType, [n], biasSources, async () => this.floatBytes(await bias()));
      y = this.g.add(y, b);
    }
    return y;
  }

  /**
   * An embedding lookup: ids [..] -> [.., dim]. Quantized formats keep the table block-quantized
   * (GatherBlockQuantized) so the largest tensor of the model shrinks with the rest.
   */
  embedding(ids: string, name: string, outType: ElemType): string {
    const [rows, cols] = this.ckpt.info(name).shape;
    const quant = this.format.quant;
    if (quant?.kind !== 'nbits') {
      const y = this.g.gather(this.tensor(name), ids);
      return this.floatType === outType ? y : this.g.cast(y, outType);
    }
    const blockSize = blockSizeFor(cols, quant.blockSize);
    const shared = shareOnce(async () => quantizeBlockwise(await this.ckpt.read(name), rows, cols, quant.bits, blockSize), 3);
    const blocks = Math.ceil(cols / blockSize);
    const data = this.g.weight(`${name}.qdata`, DataType.UINT8, [rows, (cols * quant.bits) / 8], [name], async () => packGatherData(await shared()));
    const scales = this.g.weight(`${name}.scales`, DataType.FLOAT, [rows, blocks], [name], async () => bytes((await shared()).scales));
    const zp = this.g.weight(`${name}.zero_points`, DataType.UINT8, [rows, quant.bits === 4 ? Math.ceil(blocks / 2) : blocks], [name], async () => packZeroPoints(await shared()));
    return this.g.op('GatherBlockQuantized', [data, ids, scales, zp], {
      bits: quant.bits,
      block_size: blockSize,
      gather_axis: 0,
      quantize_axis: 1,
    }, { domain: MS_DOMAIN });
  }

  private floatBytes(data: Float32Array): Uint8Array {
    return this.floatType === DataType.FLOAT16 ? bytes(f32ArrayToF16(data)) : bytes(data);
  }

  private suffix(): string {
    return this.floatType === DataType.FLOAT16 ? '.fp16' : '';
  }
}

function bytes(a: Float32Array | Uint16Array | Uint8Array | Int8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  // Blocked to stay in cache: a 10240x2560 weight would otherwise stride through memory on every read.
  const T = 64;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(rows, r0 + T);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(cols, c0 + T);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[c * rows + r] = w[r * cols + c];
    }
  }
  return out;
}

/**
 * Runs `fn` once for `consumers` callers and then drops the result, so a quantized weight's codes,
 * scales and zero points come from one quantization and do not outlive their writing.
 */
function shareOnce<T>(fn: () => Promise<T>, consumers: number): () => Promise<T> {
  let pending: Promise<T> | undefined;
  let left = consumers;
  return () => {
    pending ??= fn();
    const p = pending;
    if (--left === 0) pending = undefined;
    return p;
  };
}
