/**
 * Multinomial sampling from processed scores, with our seeded generator. The distributions are transformers'
 * (softmax of the warped scores); the draws cannot be torch's (see random.ts).
 */
import type { DecodeContext } from './decode-context';
import type { SeededRandom } from './random';
import { topKInto } from './scores';
import { decodeSingleBeam, type TokenChooser } from './single-beam';
import type { GenerationResult } from './types';

/** torch.multinomial(softmax(row), 1): a token drawn with probability proportional to exp(score). */
export function multinomialChooser(random: SeededRandom): TokenChooser {
  return (scores, offset, vocab) => {
    let max = -Infinity;
    for (let i = 0; i < vocab; i++) {
      const v = scores[offset + i]!;
      if (v > max) max = v;
    }
    if (!(max > -Infinity) || max === Infinity) {
      throw new Error('Cannot sample: every token of a row has been filtered out or the scores are not finite.');
    }
    let total = 0;
    for (let i = 0; i < vocab; i++) total += Math.exp(scores[offset + i]! - max);
    const target = random.nextDouble() * total;
    let cumulative = 0;
    let last = -1;
    for (let i = 0; i < vocab; i++) {
      const w = Math.exp(scores[offset + i]! - max);
      if (w === 0) continue;
      last = i;
      cumulative += w;
      if (target < cumulative) return i;
    }
    // Rounding can leave the target a hair above the final sum; the last token with any weight takes it.
    return last;
  };
}

export function sample(ctx: DecodeContext, random: SeededRandom): Promise<GenerationResult> {
  return decodeSingleBeam(ctx, multinomialChooser(random));
}

/**
 * torch.multinomial(softmax(values), k, replacement=False) for beam sampling, through the Gumbel-top-k trick: the
 * k largest of value + Gumbel noise are a draw without replacement in the same distribution, in draw order.
 * Entries at -inf are never drawn while others remain (torch would refuse to draw them at all).
 * Fills outIndex (relative to offset) and returns how many were drawn.
 */
export function sampleWithoutReplacementInto(
  values: Float32Array,
  offset: number,
  length: number,
  k: number,
  random: SeededRandom,
  outIndex: Int32Array,
  keys: Float64Array,
): number {
  return topKInto(values, offset, length, k, outIndex, keys, (v) => v - Math.log(-Math.log(random.nextOpenDouble())));
}
