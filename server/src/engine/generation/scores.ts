import { DamagedModelError } from '../errors';

/**
 * Row-wise arithmetic on score matrices (rows * vocab floats, row-major), the way torch computes it in float32:
 * each result is stored in a Float32Array, and a float32 operation done in double and then rounded gives the
 * same bits as torch's float32 operation for +, -, * and /.
 */

/** torch.argmax: the first index of the largest value (NaN never wins here). */
export function argmaxRow(scores: Float32Array, offset: number, length: number): number {
  let best = 0;
  let bestValue = -Infinity;
  let seen = false;
  for (let i = 0; i < length; i++) {
    const v = scores[offset + i]!;
    if (!seen || v > bestValue) {
      if (Number.isNaN(v)) continue;
      best = i;
      bestValue = v;
      seen = true;
    }
  }
  return best;
}

/** log(sum(exp(row))) in double; -Infinity when every entry is -Infinity. */
export function logSumExpRow(scores: Float32Array, offset: number, length: number): number {
  let max = -Infinity;
  for (let i = 0; i < length; i++) {
    const v = scores[offset + i]!;
    if (v > max) max = v;
  }
  if (max === -Infinity || max === Infinity) return max;
  let sum = 0;
  for (let i = 0; i < length; i++) sum += Math.exp(scores[offset + i]! - max);
  return max + Math.log(sum);
}

/** nn.functional.log_softmax over the last dimension, in place. */
export function logSoftmaxRowsInPlace(scores: Float32Array, rows: number, vocab: number): void {
  for (let r = 0; r < rows; r++) {
    const offset = r * vocab;
    let max = -Infinity;
    for (let i = 0; i < vocab; i++) {
      const v = scores[offset + i]!;
      if (v > max) max = v;
    }
    let sum = 0;
    for (let i = 0; i < vocab; i++) sum += Math.exp(scores[offset + i]! - max);
    const logSum = Math.log(sum);
    for (let i = 0; i < vocab; i++) scores[offset + i] = scores[offset + i]! - max - logSum;
  }
}

/** A new matrix whose row i is row rows[i] of src (torch's repeat_interleave / index_select on dim 0). */
export function gatherRows(src: Float32Array, rows: readonly number[], vocab: number): Float32Array {
  const out = new Float32Array(rows.length * vocab);
  for (let i = 0; i < rows.length; i++) out.set(src.subarray(rows[i]! * vocab, (rows[i]! + 1) * vocab), i * vocab);
  return out;
}

/**
 * torch.topk(values[offset:offset+length], k) with sorted output: indices (relative to offset) of the k largest
 * values, largest first. torch leaves the order of equal values unspecified; here the lower index comes first.
 * outIndex/outValue must hold k entries; returns how many were filled (min(k, length)).
 */
export function topKInto(
  values: Float32Array,
  offset: number,
  length: number,
  k: number,
  outIndex: Int32Array,
  outValue: Float64Array,
  /** Ranks by key(value) instead of the value, e.g. value plus Gumbel noise for sampling; -inf stays -inf. */
  key?: (value: number) => number,
): number {
  let count = 0;
  for (let i = 0; i < length; i++) {
    let v = values[offset + i]!;
    if (Number.isNaN(v)) v = -Infinity;
    if (key && v > -Infinity) v = key(v);
    // Scanning in index order and inserting only on a strict improvement keeps earlier indices ahead of ties.
    if (count === k && !(v > outValue[k - 1]!)) continue;
    let pos = count < k ? count : k - 1;
    while (pos > 0 && outValue[pos - 1]! < v) {
      outValue[pos] = outValue[pos - 1]!;
      outIndex[pos] = outIndex[pos - 1]!;
      pos--;
    }
    outValue[pos] = v;
    outIndex[pos] = i;
    if (count < k) count++;
  }
  return count;
}

export function checkLogits(logits: Float32Array, rows: number, vocab: number, call: string): void {
  if (logits.length !== rows * vocab) {
    throw new Error(
      `The language model's ${call} returned ${logits.length} logits; expected ${rows} rows of ${vocab}.`,
    );
  }
  // A healthy model's raw logits are finite; NaN or infinity means damaged weights, which would only decode to garbage.
  for (let i = 0; i < logits.length; i++) {
    if (!Number.isFinite(logits[i])) {
      throw new DamagedModelError(
        `The model is damaged: its ${call} step computed ${logits[i]} for a token score.`,
        'Set the model up again to convert it once more (run "BLIP-2: Set Up Model…", or `blip2 verify` to see which file changed).',
      );
    }
  }
}
