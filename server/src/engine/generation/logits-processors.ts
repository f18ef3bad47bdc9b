/**
 * The logits processors and warpers of transformers' generation/logits_process.py, in the order
 * GenerationMixin._get_logits_processor builds them, working in place on rows * vocab float32 scores.
 *
 * `sequences[r]` is everything row r of the language model has been given or has produced: for BLIP-2 the
 * `<image>` ids, BOS, the prompt, left padding of batched rows, and the generated tokens (and, for rows that have
 * finished while others go on, the pad ids transformers appends to them). transformers' processors see exactly
 * that `input_ids`, so ours do too.
 */
import type { ResolvedGenerationOptions } from './options';

export type TokenSequences = readonly (readonly number[])[];

export interface LogitsProcessor {
  process(sequences: TokenSequences, scores: Float32Array, vocabSize: number): void;
}

export function applyProcessors(
  processors: readonly LogitsProcessor[],
  sequences: TokenSequences,
  scores: Float32Array,
  vocabSize: number,
): void {
  for (const p of processors) p.process(sequences, scores, vocabSize);
}

/**
 * RepetitionPenaltyLogitsProcessor: every id present in the row (prompt included) has its score divided by the
 * penalty when positive and multiplied by it when negative, once however often the id occurs.
 */
export class RepetitionPenaltyProcessor implements LogitsProcessor {
  // torch multiplies a float32 tensor by a Python float in float32, so the penalty is rounded first.
  private readonly penalty: number;
  private seen = new Uint8Array(0);

  constructor(penalty: number) {
    if (!(penalty > 0)) throw new RangeError(`repetition penalty must be > 0, got ${penalty}`);
    this.penalty = Math.fround(penalty);
  }

  process(sequences: TokenSequences, scores: Float32Array, vocabSize: number): void {
    if (this.seen.length !== vocabSize) this.seen = new Uint8Array(vocabSize);
    const seen = this.seen;
    const p = this.penalty;
    for (let r = 0; r < sequences.length; r++) {
      const seq = sequences[r]!;
      const base = r * vocabSize;
      for (const id of seq) {
        if (seen[id]) continue;
        seen[id] = 1;
        const s = scores[base + id]!;
        scores[base + id] = s < 0 ? s * p : s / p;
      }
      for (const id of seq) seen[id] = 0;
    }
  }
}

/**
 * NoRepeatNGramLogitsProcessor: if the last n-1 tokens of the row already occurred followed by token t, t is
 * banned (-inf), so no n-gram of the row ever repeats. Nothing is banned before the row holds n tokens.
 */
export class NoRepeatNGramProcessor implements LogitsProcessor {
  constructor(private readonly n: number) {
    if (!Number.isInteger(n) || n <= 0) throw new RangeError(`ngram size must be a positive integer, got ${n}`);
  }

  process(sequences: TokenSequences, scores: Float32Array, vocabSize: number): void {
    const n = this.n;
    for (let r = 0; r < sequences.length; r++) {
      const seq = sequences[r]!;
      const len = seq.length;
      if (len < n) continue;
      const prefixStart = len - n + 1;
      // The window starting at prefixStart would need one token more than the row has, so it is never compared.
      for (let start = 0; start + n <= len; start++) {
        let match = true;
        for (let i = 0; i < n - 1; i++) {
          if (seq[start + i] !== seq[prefixStart + i]) {
            match = false;
            break;
          }
        }
        if (match) scores[r * vocabSize + seq[start + n - 1]!] = -Infinity;
      }
    }
  }
}

/**
 * MinNewTokensLengthLogitsProcessor (and MinLengthLogitsProcessor, which generate() adds alongside it with
 * min_length = prompt length + min_new_tokens, to the same effect): end tokens are banned while fewer than
 * minNewTokens tokens have been generated.
 */
export class MinNewTokensProcessor implements LogitsProcessor {
  constructor(
    private readonly promptLength: number,
    private readonly minNewTokens: number,
    private readonly eosTokenIds: readonly number[],
  ) {}

  process(sequences: TokenSequences, scores: Float32Array, vocabSize: number): void {
    for (let r = 0; r < sequences.length; r++) {
      if (sequences[r]!.length - this.promptLength >= this.minNewTokens) continue;
      for (const eos of this.eosTokenIds) scores[r * vocabSize + eos] = -Infinity;
    }
  }
}

/** TemperatureLogitsWarper: scores / temperature (in float32, as torch divides by a Python float). */
export class TemperatureWarper implements LogitsProcessor {
  private readonly temperature: number;

  constructor(temperature: number) {
    if (!(temperature > 0)) throw new RangeError(`temperature must be > 0, got ${temperature}`);
    this.temperature = Math.fround(temperature);
  }

  process(_sequences: TokenSequences, scores: Float32Array): void {
    const t = this.temperature;
    for (let i = 0; i < scores.length; i++) scores[i] = scores[i]! / t;
  }
}

/**
 * TopKLogitsWarper: keeps every score at least as large as the k-th largest of its row (ties with it survive, as
 * in transformers), with k raised to minTokensToKeep; the rest become -inf.
 */
export class TopKWarper implements LogitsProcessor {
  private readonly k: number;
  private heap = new Float64Array(0);

  constructor(topK: number, minTokensToKeep = 1) {
    if (!Number.isInteger(topK) || topK <= 0) throw new RangeError(`top-k must be a positive integer, got ${topK}`);
    this.k = Math.max(topK, minTokensToKeep);
  }

  process(_sequences: TokenSequences, scores: Float32Array, vocabSize: number): void {
    const k = Math.min(this.k, vocabSize);
    if (k >= vocabSize) return;
    if (this.heap.length < k) this.heap = new Float64Array(k);
    const rows = scores.length / vocabSize;
    for (let r = 0; r < rows; r++) {
      const base = r * vocabSize;
      const threshold = kthLargest(scores, base, vocabSize, k, this.heap);
      for (let i = 0; i < vocabSize; i++) if (scores[base + i]! < threshold) scores[base + i] = -Infinity;
    }
  }
}

/** The k-th largest value of a row, through a min-heap of size k (O(vocab log k), no sort of the whole row). */
function kthLargest(values: Float32Array, offset: number, length: number, k: number, heap: Float64Array): number {
  let size = 0;
  for (let i = 0; i < length; i++) {
    const v = values[offset + i]!;
    if (Number.isNaN(v)) continue;
    if (size < k) {
      let pos = size++;
      while (pos > 0) {
        const parent = (pos - 1) >> 1;
        if (heap[parent]! <= v) break;
        heap[pos] = heap[parent]!;
        pos = parent;
      }
      heap[pos] = v;
    } else if (v > heap[0]!) {
      let pos = 0;
      for (;;) {
        const left = 2 * pos + 1;
        if (left >= k) break;
        const right = left + 1;
        const child = right < k && heap[right]! < heap[left]! ? right : left;
        if (heap[child]! >= v) break;
        heap[pos] = heap[child]!;
        pos = child;
      }
      heap[pos] = v;
    }
  }
  return size < k ? -Infinity : heap[0]!;
}

/**
 * TopPLogitsWarper: sorts the row ascending, and removes the tokens whose cumulative probability (from the least
 * likely up) is at most 1 - topP, except the minTokensToKeep most likely. Tokens already at -inf have probability 0
 * and are removed anyway, so only the finite ones are sorted. torch.sort does not order ties; here ties are
 * ordered by token id.
 */
export class TopPWarper implements LogitsProcessor {
  private readonly topP: number;
  private order = new Uint32Array(0);

  constructor(
    topP: number,
    private readonly minTokensToKeep = 1,
  ) {
    if (!(topP >= 0 && topP <= 1)) throw new RangeError(`top-p must be within [0, 1], got ${topP}`);
    if (!Number.isInteger(minTokensToKeep) || minTokensToKeep < 1) {
      throw new RangeError(`minTokensToKeep must be a positive integer, got ${minTokensToKeep}`);
    }
    this.topP = topP;
  }

  process(_sequences: TokenSequences, scores: Float32Array, vocabSize: number): void {
    if (this.order.length < vocabSize) this.order = new Uint32Array(vocabSize);
    // The comparison is a float32 tensor against a Python float, done in float32.
    const threshold = Math.fround(1 - this.topP);
    const rows = scores.length / vocabSize;
    for (let r = 0; r < rows; r++) {
      const base = r * vocabSize;
      let n = 0;
      for (let i = 0; i < vocabSize; i++) if (scores[base + i]! > -Infinity) this.order[n++] = i;
      if (n === 0) continue;
      const order = this.order.subarray(0, n);
      order.sort((a, b) => scores[base + a]! - scores[base + b]! || a - b);
      const max = scores[base + order[n - 1]!]!;
      let sum = 0;
      for (let j = 0; j < n; j++) sum += Math.exp(scores[base + order[j]!]! - max);
      let cumulative = 0;
      const removable = n - this.minTokensToKeep;
      for (let j = 0; j < removable; j++) {
        cumulative += Math.fround(Math.exp(scores[base + order[j]!]! - max) / sum);
        // Cumulative probabilities only grow, so the first survivor ends the removals.
        if (Math.fround(cumulative) > threshold) break;
        scores[base + order[j]!] = -Infinity;
      }
    }
  }
}

/**
 * The processors generate() would build for these options, in transformers' order: repetition penalty, no-repeat
 * n-grams, minimum length; then, only when sampling, temperature, top-k and top-p. Beam sampling keeps at least
 * (number of end tokens + 1) tokens in top-k/top-p, as transformers does, so a non-ending continuation survives.
 */
export function buildLogitsProcessors(options: ResolvedGenerationOptions, promptLength: number): LogitsProcessor[] {
  const list: LogitsProcessor[] = [];
  if (options.repetitionPenalty !== 1.0) list.push(new RepetitionPenaltyProcessor(options.repetitionPenalty));
  if (options.noRepeatNgramSize > 0) list.push(new NoRepeatNGramProcessor(options.noRepeatNgramSize));
  if (options.minNewTokens > 0 && options.eosTokenIds.length > 0) {
    list.push(new MinNewTokensProcessor(promptLength, options.minNewTokens, options.eosTokenIds));
  }
  if (options.doSample) {
    const minTokensToKeep = options.numBeams > 1 ? Math.max(options.eosTokenIds.length, 1) + 1 : 1;
    if (options.temperature !== 1.0) list.push(new TemperatureWarper(options.temperature));
    if (options.topK !== 0) list.push(new TopKWarper(options.topK, minTokensToKeep));
    if (options.topP < 1.0) list.push(new TopPWarper(options.topP, minTokensToKeep));
  }
  return list;
}
