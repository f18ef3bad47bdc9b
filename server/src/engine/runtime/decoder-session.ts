import type { LanguageModelSession } from '../generation/types';
import { DECODER_IO, kvHeadSize } from '../graphs/decoder';
import type { Blip2Model } from './blip2-model';
import { NativeDecoder } from './native-decoder';
import { Tensor, type InferenceSession } from './ort';

type KvArray = Float32Array | Uint16Array;

/**
 * The keys and values of the `<image>` positions at the start of a single prompt row: the same for every prompt
 * about that image, so a second question starts from them instead of running the image tokens again.
 * Per layer, [heads, length, head size] (the cache layout without the unfilled tail).
 */
export interface ImagePrefix {
  length: number;
  keys: KvArray[];
  values: KvArray[];
}

export interface DecoderOptions {
  /** Positions the cache holds: the prompt length plus the most new tokens the generation may add. */
  capacity: number;
  /** Keys and values of the image positions, computed by an earlier request on the same image (single rows only). */
  reusePrefix?: ImagePrefix;
  /** Receives the image positions' keys and values after a single-row first pass that computed them. */
  onPrefix?: (prefix: ImagePrefix) => void;
}

/**
 * The KV-cached state of one generation over onnxruntime. Each layer's cache is one preallocated buffer
 * [rows, heads, capacity, head size] given as the past input; a run returns only its new positions' keys and values,
 * which are written after the filled ones (onnxruntime-node copies whatever a run returns into new buffers, so the
 * cache itself never goes out). Beam reordering moves rows.
 * Positions follow transformers: cumsum(mask) - 1, so left padding does not shift a row's positions.
 * With the native decoder (int4 and int8 on CPUs with AVX-512 VNNI or AVX2) the same cache is one buffer, every
 * layer's a view of it, which the native code reads and writes in place.
 */
export class DecoderSession implements LanguageModelSession {
  readonly vocabSize: number;
  private masks: number[][];
  private keys: KvArray[] = [];
  private values: KvArray[] = [];
  /** Every layer's keys (values) in one buffer, [layers, rows, heads, capacity, head size]: the views above. */
  private allKeys: KvArray = new Float32Array(0);
  private allValues: KvArray = new Float32Array(0);
  private keyTensors: Tensor[] = [];
  private valueTensors: Tensor[] = [];
  private filled = 0;
  private readonly layers: number;
  private readonly heads: number;
  private readonly headSize: number;
  private readonly hidden: number;
  private readonly capacity: number;
  private readonly kvType: 'float32' | 'float16';
  /** Wall time spent in onnxruntime, split by first pass and later steps, for the timings users see. */
  readonly timings = { prefillMs: 0, decodeMs: 0, steps: 0, prefixReused: false };

  constructor(
    private readonly model: Blip2Model,
    private readonly runner: InferenceSession | NativeDecoder,
    private readonly inputIds: number[][],
    attentionMask: number[][],
    private readonly imageFeatures: Float32Array,
    private readonly options: DecoderOptions,
  ) {
    const t = model.config.text;
    this.vocabSize = model.manifest.vocabSize;
    this.layers = t.numLayers;
    this.heads = t.numHeads;
    this.hidden = t.hiddenSize;
    this.headSize = kvHeadSize(t.hiddenSize / t.numHeads);
    this.kvType = model.manifest.kvCacheType;
    this.capacity = Math.max(options.capacity, inputIds[0].length);
    this.masks = attentionMask.map((m) => [...m]);
    this.allocate(this.masks.length);
  }

  get rows(): number {
    return this.masks.length;
  }

  async prefill(): Promise<Float32Array> {
    const start = performance.now();
    const rows = this.inputIds.length;
    const q = this.model.config.numQueryTokens;
    const prefix = this.options.reusePrefix;
    const single = rows === 1 && this.startsWithImage(this.inputIds[0]);
    let logits: Float32Array;
    if (single && prefix && prefix.length === q && this.inputIds[0].length > q) {
      this.restorePrefix(prefix);
      const rest = this.inputIds[0].slice(q);
      const embeds = await this.model.embedTokens([rest]);
      logits = await this.run(embeds, rest.length, [rest.map((_, i) => q + i)]);
      this.timings.prefixReused = true;
    } else {
      logits = await this.run(await this.promptEmbeddings(), this.inputIds[0].length, this.promptPositions());
      if (single && this.options.onPrefix) this.options.onPrefix(this.capturePrefix(q));
    }
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
    // Beam search often keeps every beam where it was; copying rows for nothing costs more than a step.
    if (rows.length === this.rows && rows.every((r, i) => r === i)) return;
    if (rows.length !== this.rows) {
      // Expanding prompts to beams: new buffers, each row a copy of its source's filled positions.
      const oldKeys = this.keys;
      const oldValues = this.values;
      this.allocate(rows.length);
      for (let l = 0; l < this.layers; l++) {
        rows.forEach((from, to) => {
          this.copyRow(oldKeys[l], from, this.keys[l], to);
          this.copyRow(oldValues[l], from, this.values[l], to);
        });
      }
    } else {
      // In place: rows that change are first saved (a source may itself be overwritten), then written.
      const moves = rows.map((from, to) => ({ from, to })).filter((m) => m.from !== m.to);
      const sources = [...new Set(moves.map((m) => m.from))];
      const scratch = this.emptyKv(sources.length * this.rowSize());
      for (const buffer of [...this.keys, ...this.values]) {
        sources.forEach((from, i) => this.copyRow(buffer, from, scratch, i));
        for (const m of moves) this.copyRow(scratch, sources.indexOf(m.from), buffer, m.to);
      }
    }
    this.masks = rows.map((r) => [...this.masks[r]]);
  }

  dispose(): void {
    this.keys = [];
    this.values = [];
    this.allKeys = this.allValues = new Float32Array(0);
    this.keyTensors = [];
    this.valueTensors = [];
  }

  private startsWithImage(ids: readonly number[]): boolean {
    const q = this.model.config.numQueryTokens;
    const image = this.model.imageTokenId;
    for (let i = 0; i < q; i++) if (ids[i] !== image) return false;
    return true;
  }

  /** The prompt rows' embeddings, with the k-th `<image>` position of row r taking query output k of image r (masked_scatter). */
  private async promptEmbeddings(): Promise<Float32Array> {
    const rows = this.inputIds.length;
    const len = this.inputIds[0].length;
    const embeds = await this.model.embedTokens(this.inputIds);
    const imageToken = this.model.imageTokenId;
    const q = this.model.config.numQueryTokens;
    const h = this.hidden;
    for (let r = 0; r < rows; r++) {
      let k = 0;
      for (let s = 0; s < len && k < q; s++) {
        if (this.inputIds[r][s] !== imageToken) continue;
        embeds.set(this.imageFeatures.subarray((r * q + k) * h, (r * q + k + 1) * h), (r * len + s) * h);
        k++;
      }
    }
    return embeds;
  }

  private promptPositions(): number[][] {
    return this.masks.map((m) => {
      let seen = 0;
      return m.map((v) => {
        seen += v;
        return v ? seen - 1 : 1;
      });
    });
  }

  private async run(embeds: Float32Array, len: number, positions: number[][]): Promise<Float32Array> {
    const rows = this.rows;
    const total = this.masks[0].length;
    if (total > this.capacity) throw new Error(`The KV cache holds ${this.capacity} positions; step ${total} does not fit.`);
    if (this.runner instanceof NativeDecoder) {
      const logits = this.runner.run(rows, len, total, this.capacity, embeds, Int32Array.from(positions.flat()), Uint8Array.from(this.masks.flat()), this.allKeys as Float32Array, this.allValues as Float32Array, this.vocabSize);
      this.filled = total;
      return logits;
    }
    const feeds: Record<string, Tensor> = {
      [DECODER_IO.inputsEmbeds]: new Tensor('float32', embeds, [rows, len, this.hidden]),
      [DECODER_IO.attentionMask]: new Tensor('int64', BigInt64Array.from(this.masks.flat(), BigInt), [rows, total]),
      [DECODER_IO.positionIds]: new Tensor('int64', BigInt64Array.from(positions.flat(), BigInt), [rows, len]),
    };
    for (let i = 0; i < this.layers; i++) {
      feeds[DECODER_IO.pastKey(i)] = this.keyTensors[i];
      feeds[DECODER_IO.pastValue(i)] = this.valueTensors[i];
    }
    const out = await this.runner.run(feeds);
    for (let i = 0; i < this.layers; i++) {
      this.append(out[DECODER_IO.newKey(i)].data as KvArray, this.keys[i], len, total - len);
      this.append(out[DECODER_IO.newValue(i)].data as KvArray, this.values[i], len, total - len);
    }
    this.filled = total;
    return out[DECODER_IO.logits].data as Float32Array;
  }

  /** Writes a run's keys or values, [rows, heads, len, head size], into the cache at positions from..from+len. */
  private append(src: KvArray, cache: KvArray, len: number, from: number): void {
    const run = len * this.headSize;
    for (let rh = 0; rh < this.rows * this.heads; rh++) {
      cache.set(src.subarray(rh * run, (rh + 1) * run), (rh * this.capacity + from) * this.headSize);
    }
  }

  private allocate(rows: number): void {
    const dims = [rows, this.heads, this.capacity, this.headSize];
    const layer = rows * this.rowSize();
    this.allKeys = this.emptyKv(this.layers * layer);
    this.allValues = this.emptyKv(this.layers * layer);
    this.keys = [];
    this.values = [];
    for (let i = 0; i < this.layers; i++) {
      this.keys.push(this.allKeys.subarray(i * layer, (i + 1) * layer));
      this.values.push(this.allValues.subarray(i * layer, (i + 1) * layer));
    }
    this.keyTensors = this.keys.map((k) => new Tensor(this.kvType, k, dims));
    this.valueTensors = this.values.map((v) => new Tensor(this.kvType, v, dims));
  }

  private rowSize(): number {
    return this.heads * this.capacity * this.headSize;
  }

  /** Copies the filled positions of one row, head by head (the unfilled tail of each head is left as it is). */
  private copyRow(src: KvArray, fromRow: number, dst: KvArray, toRow: number): void {
    const head = this.capacity * this.headSize;
    const used = this.filled * this.headSize;
    for (let h = 0; h < this.heads; h++) {
      const s = (fromRow * this.heads + h) * head;
      dst.set(src.subarray(s, s + used), (toRow * this.heads + h) * head);
    }
  }

  private capturePrefix(length: number): ImagePrefix {
    const take = (buffer: KvArray) => {
      const out = this.emptyKv(this.heads * length * this.headSize);
      for (let h = 0; h < this.heads; h++) {
        const s = h * this.capacity * this.headSize;
        out.set(buffer.subarray(s, s + length * this.headSize), h * length * this.headSize);
      }
      return out;
    };
    return { length, keys: this.keys.map(take), values: this.values.map(take) };
  }

  private restorePrefix(prefix: ImagePrefix): void {
    const n = prefix.length * this.headSize;
    for (let l = 0; l < this.layers; l++) {
      for (let h = 0; h < this.heads; h++) {
        const d = h * this.capacity * this.headSize;
        this.keys[l].set(prefix.keys[l].subarray(h * n, (h + 1) * n), d);
        this.values[l].set(prefix.values[l].subarray(h * n, (h + 1) * n), d);
      }
    }
    this.filled = prefix.length;
  }

  private emptyKv(length: number): KvArray {
    return this.kvType === 'float16' ? new Uint16Array(length) : new Float32Array(length);
  }
}
