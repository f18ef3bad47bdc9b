import type { LanguageModelSession } from '../generation/types';
import { DECODER_IO } from '../graphs/decoder';
import type { Blip2Model } from './blip2-model';
import { Tensor, type InferenceSession } from './ort';

type KvArray = Float32Array | Uint16Array;

/**
 * The KV-cached state of one generation over onnxruntime: the rows' attention masks and past keys/values.
 * Positions follow transformers: cumsum(mask) - 1, so left padding does not shift a row's positions.
 */
export class DecoderSession implements LanguageModelSession {
  readonly vocabSize: number;
  private masks: number[][];
  private past: { key: KvArray; value: KvArray }[] = [];
  private pastLen = 0;
  private readonly layers: number;
  private readonly heads: number;
  private readonly headDim: number;
  private readonly hidden: number;
  private readonly kvType: 'float32' | 'float16';
  /** Wall time spent in onnxruntime, split by first pass and later steps, for the timings users see. */
  readonly timings = { prefillMs: 0, decodeMs: 0, steps: 0 };

  constructor(
    private readonly model: Blip2Model,
    private readonly session: InferenceSession,
    private readonly inputIds: number[][],
    attentionMask: number[][],
    private readonly imageFeatures: Float32Array,
  ) {
    const t = model.config.text;
    this.vocabSize = model.manifest.vocabSize;
    this.layers = t.numLayers;
    this.heads = t.numHeads;
    this.hidden = t.hiddenSize;
    this.headDim = t.hiddenSize / t.numHeads;
    this.kvType = model.manifest.kvCacheType;
    this.masks = attentionMask.map((m) => [...m]);
    for (let i = 0; i < this.layers; i++) this.past.push({ key: this.emptyKv(0), value: this.emptyKv(0) });
  }

  get rows(): number {
    return this.masks.length;
  }

  async prefill(): Promise<Float32Array> {
    const start = performance.now();
    const rows = this.inputIds.length;
    const len = this.inputIds[0].length;
    const embeds = await this.model.embedTokens(this.inputIds);
    const imageToken = this.model.imageTokenId;
    const q = this.model.config.numQueryTokens;
    const h = this.hidden;
    // masked_scatter: the k-th `<image>` position of row r takes query output k of image r.
    for (let r = 0; r < rows; r++) {
      let k = 0;
      for (let s = 0; s < len && k < q; s++) {
        if (this.inputIds[r][s] !== imageToken) continue;
        embeds.set(this.imageFeatures.subarray((r * q + k) * h, (r * q + k + 1) * h), (r * len + s) * h);
        k++;
      }
    }
    const positions = this.masks.map((m) => {
      let seen = 0;
      return m.map((v) => {
        seen += v;
        return v ? seen - 1 : 1;
      });
    });
    const logits = await this.run(embeds, len, positions);
    this.timings.prefillMs += performance.now() - start;
    return logits;
  }

  async next(tokens: readonly number[]): Promise<Float32Array> {
    const start = performance.now();
    const embeds = await this.model.embedTokens(tokens.map((t) => [t]));
    for (const m of this.masks) m.push(1);
    const positions = this.masks.map((m) => [m.reduce((a, b) => a + b, 0) - 1]);
    const logits = await this.run(embeds, 1, positions);
    this.timings.decodeMs += performance.now() - start;
    this.timings.steps++;
    return logits;
  }

  reorder(rows: readonly number[]): void {
    // Beam search often keeps every beam where it was; copying the whole cache for nothing costs more than a step.
    if (rows.length === this.rows && rows.every((r, i) => r === i)) return;
    const stride = this.heads * this.pastLen * this.headDim;
    const pick = (src: KvArray): KvArray => {
      const out = this.emptyKv(rows.length * stride);
      rows.forEach((from, to) => out.set(src.subarray(from * stride, (from + 1) * stride), to * stride));
      return out;
    };
    this.past = this.past.map((p) => ({ key: pick(p.key), value: pick(p.value) }));
    this.masks = rows.map((r) => [...this.masks[r]]);
  }

  dispose(): void {
    this.past = [];
  }

  private async run(embeds: Float32Array, len: number, positions: number[][]): Promise<Float32Array> {
    const rows = this.rows;
    const total = this.masks[0].length;
    const feeds: Record<string, Tensor> = {
      [DECODER_IO.inputsEmbeds]: new Tensor('float32', embeds, [rows, len, this.hidden]),
      [DECODER_IO.attentionMask]: new Tensor('int64', BigInt64Array.from(this.masks.flat(), BigInt), [rows, total]),
      [DECODER_IO.positionIds]: new Tensor('int64', BigInt64Array.from(positions.flat(), BigInt), [rows, len]),
    };
    const kvDims = [rows, this.heads, this.pastLen, this.headDim];
    this.past.forEach((p, i) => {
      feeds[DECODER_IO.pastKey(i)] = new Tensor(this.kvType, p.key, kvDims);
      feeds[DECODER_IO.pastValue(i)] = new Tensor(this.kvType, p.value, kvDims);
    });
    const out = await this.session.run(feeds);
    this.past = this.past.map((_, i) => ({
      key: out[DECODER_IO.presentKey(i)].data as KvArray,
      value: out[DECODER_IO.presentValue(i)].data as KvArray,
    }));
    this.pastLen = total;
    return out[DECODER_IO.logits].data as Float32Array;
  }

  private emptyKv(length: number): KvArray {
    return this.kvType === 'float16' ? new Uint16Array(length) : new Float32Array(length);
  }
}
