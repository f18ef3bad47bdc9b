/**
 * transformers' GenerationMixin._sample, which serves greedy search and multinomial sampling alike: one running
 * sequence per row, the processors applied to the raw logits, one token chosen per row and step.
 */
import { throwIfAborted } from '../errors';
import type { DecodeContext } from './decode-context';
import { applyProcessors } from './logits-processors';
import { checkLogits, gatherRows, logSumExpRow } from './scores';
import type { GeneratedSequence, GenerationResult } from './types';

/** Picks the next token of the row whose processed scores start at `offset`. */
export type TokenChooser = (scores: Float32Array, offset: number, vocabSize: number) => number;

export async function decodeSingleBeam(ctx: DecodeContext, choose: TokenChooser): Promise<GenerationResult> {
  const { session, prompts, options, processors, callbacks } = ctx;
  const vocab = session.vocabSize;
  const copies = options.numReturnSequences;
  const rows = prompts.length * copies;
  const eos = new Set(options.eosTokenIds);
  const signal = callbacks.signal;

  throwIfAborted(signal);
  let logits = await session.prefill();
  checkLogits(logits, prompts.length, vocab, 'prefill');
  if (copies > 1) {
    // transformers repeats each prompt num_return_sequences times before the first pass; running the pass on the
    // prompts once and copying rows afterwards gives the same numbers for less work.
    const expand = Array.from({ length: rows }, (_, i) => Math.floor(i / copies));
    session.reorder(expand);
    logits = gatherRows(logits, expand, vocab);
  }

  const sequences = Array.from({ length: rows }, (_, i) => [...prompts[Math.floor(i / copies)]!]);
  const generated = Array.from({ length: rows }, () => [] as number[]);
  const logProbSums = new Float64Array(rows);
  const unfinished = new Uint8Array(rows).fill(1);
  let unfinishedCount = rows;
  const tokens = new Array<number>(rows).fill(options.padTokenId);
  const stepScores: Float32Array[] | undefined = callbacks.keepStepScores ? [] : undefined;

  for (let step = 0; ; step++) {
    applyProcessors(processors, sequences, logits, vocab);
    stepScores?.push(logits.slice());

    for (let r = 0; r < rows; r++) {
      // Like transformers, rows that have ended are fed the pad id (their scores are still computed and kept, as
      // output_scores keeps them) until every row has ended.
      if (!unfinished[r]) {
        tokens[r] = options.padTokenId;
        continue;
      }
      const offset = r * vocab;
      const token = choose(logits, offset, vocab);
      tokens[r] = token;
      logProbSums[r] += logits[offset + token]! - logSumExpRow(logits, offset, vocab);
      generated[r]!.push(token);
    }
    for (let r = 0; r < rows; r++) sequences[r]!.push(tokens[r]!);

    for (let r = 0; r < rows; r++) {
      if (!unfinished[r]) continue;
      callbacks.onToken?.(Math.floor(r / copies), tokens[r]!, r % copies);
      if (eos.has(tokens[r]!)) {
        unfinished[r] = 0;
        unfinishedCount--;
      }
    }

    if (unfinishedCount === 0 || step + 1 >= options.maxNewTokens) break;
    throwIfAborted(signal);
    logits = await session.next(tokens);
    checkLogits(logits, rows, vocab, 'next');
  }

  const result: GeneratedSequence[][] = [];
  for (let p = 0; p < prompts.length; p++) {
    const group: GeneratedSequence[] = [];
    for (let c = 0; c < copies; c++) {
      const r = p * copies + c;
      group.push({ tokenIds: generated[r]!, score: logProbSums[r]! });
    }
    result.push(group);
  }
  return stepScores ? { sequences: result, stepScores } : { sequences: result };
}
