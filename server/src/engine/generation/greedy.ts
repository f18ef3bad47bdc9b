import type { DecodeContext } from './decode-context';
import { argmaxRow } from './scores';
import { decodeSingleBeam } from './single-beam';
import type { GenerationResult } from './types';

/** Greedy search: torch.argmax of the processed scores (the first index on ties). */
export function greedySearch(ctx: DecodeContext): Promise<GenerationResult> {
  return decodeSingleBeam(ctx, argmaxRow);
}
