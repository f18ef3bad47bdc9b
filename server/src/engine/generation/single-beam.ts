/**
 * transformers' GenerationMixin._sample, which serves greedy search and multinomial sampling alike: one running
 * sequence per row, the processors applied to the raw logits, one token chosen per row and step.
 */
import { throwIfAborted } from '../errors';
import type { DecodeContext } from './decode-context';
import { applyProcessors } from './logits-processors';
import { checkLogits, gatherRows, logSumExpRow } from './scores';
import type { FinishReason, GeneratedSequence, GenerationResult } from './types';

/** Picks the next token of the row whose processed scores start at `offset`. */
export type TokenChooser = (scores: Float32Array, offset: number, vocabSize: number) => number;

export async function decodeSingleBeam(ctx: DecodeContext, choose: TokenChooser): Promise<GenerationResult> {
  const { session, prompts, options, processors, callbacks } = ctx;
  const vocab = session.vocabSize;
  const copies = options.numReturnSequences;
  const rows = prompts.length * copies;
  const eos = new Set(options.eosTokenIds);
  const signal = callbacks.signal;
  const onDone = callbacks.onSequenceDone;
  if (onDone && callbacks.keepStepScores) throw new Error('Rows that leave the batch early have no step scores to keep.');

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
  // The session's rows, as rows of the input: all of them, unless ended rows leave (onSequenceDone).
  let live = Array.from({ length: rows }, (_, i) => i);
  let tokens = new Array<number>(rows).fill(options.padTokenId);
  const stepScores: Float32Array[] | undefined = callbacks.keepStepScores ? [] : undefined;

  const finish = (r: number, reason: FinishReason): void => {
    unfinished[r] = 0;
    unfinishedCount--;
    onDone?.(Math.floor(r / copies), r % copies, { tokenIds: generated[r]!, score: logProbSums[r]! }, reason);
  };

  for (let step = 0; ; step++) {
    applyProcessors(processors, live.length === rows ? sequences : live.map((r) => sequences[r]!), logits, vocab);
    stepScores?.push(logits.slice());

    for (let i = 0; i < live.length; i++) {
      const r = live[i]!;
      // Like transformers, rows that have ended are fed the pad id (their scores are still computed and kept, as
      // output_scores keeps them) until every row has ended.
      if (!unfinished[r]) {
        tokens[i] = options.padTokenId;
        continue;
      }
      const offset = i * vocab;
      const token = choose(logits, offset, vocab);
      tokens[i] = token;
      logProbSums[r] += logits[offset + token]! - logSumExpRow(logits, offset, vocab);
      generated[r]!.push(token);
    }
    for (let i = 0; i < live.length; i++) sequences[live[i]!]!.push(tokens[i]!);

    const last = step + 1 >= options.maxNewTokens;
    for (let i = 0; i < live.length; i++) {
      const r = live[i]!;
      if (!unfinished[r]) continue;
      callbacks.onToken?.(Math.floor(r / copies), tokens[i]!, r % copies);
      if (eos.has(tokens[i]!)) finish(r, 'stop');
      else if (onDone && last) finish(r, 'length');
      else if (onDone && callbacks.isStopped?.(Math.floor(r / copies), r % copies)) finish(r, 'stopped');
    }

    if (unfinishedCount === 0 || last) break;
    throwIfAborted(signal);
    if (onDone) {
      const keep = live.flatMap((r, i) => (unfinished[r] ? [i] : []));
      if (keep.length < live.length) {
        session.reorder(keep);
        tokens = keep.map((i) => tokens[i]!);
        live = keep.map((i) => live[i]!);
      }
    }
    logits = await session.next(tokens);
    checkLogits(logits, live.length, vocab, 'next');
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
