/**
 * transformers' GenerationMixin._beam_search (the vectorised version of 4.50 onwards, unchanged through 5.x),
 * step for step:
 *  - log_softmax of the raw logits, then the logits processors on those log-probabilities, then the running beam
 *    score added (so processors such as the repetition penalty act on log-probabilities here, not on logits);
 *  - the top K = max(2, 1 + number of end tokens) * numBeams continuations over all beams of a prompt
 *    (_get_top_k_continuations), drawn without replacement instead when sampling;
 *  - the best numBeams of them that did not just stop become the running beams
 *    (_get_running_beams_for_next_iteration), their stopped rivals scoring -1e9;
 *  - those among the first numBeams that stopped (end token, or max_new_tokens reached) compete with the kept
 *    hypotheses for the numBeams finished slots, scored sum(log-probs) / (generated tokens) ** lengthPenalty
 *    (_update_finished_beams);
 *  - the loop ends when no prompt can improve (_check_early_stop_heuristic), when earlyStopping is true and every
 *    prompt has numBeams finished hypotheses, or when every continuation stopped
 *    (_beam_search_has_unfinished_sequences).
 * Scores are float32 like torch's; -1e9 is transformers' "impossible" score.
 */
import { throwIfAborted } from '../errors';
import type { DecodeContext } from './decode-context';
import { applyProcessors } from './logits-processors';
import type { SeededRandom } from './random';
import { sampleWithoutReplacementInto } from './sampling';
import { checkLogits, gatherRows, logSoftmaxRowsInPlace, topKInto } from './scores';
import type { GeneratedSequence, GenerationResult } from './types';

const IMPOSSIBLE = -1.0e9;
const f32 = Math.fround;

/** How many continuations each prompt keeps per step: enough that numBeams survive even if the best all end. */
export function beamsToKeep(numBeams: number, eosCount: number): number {
  return Math.max(2, 1 + eosCount) * numBeams;
}

/** Indices 0..n-1 ordered by value, largest first; equal values keep index order (torch.topk leaves it open). */
function orderDescending(values: ArrayLike<number>, offset: number, n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => {
    const va = values[offset + a]!;
    const vb = values[offset + b]!;
    return va > vb ? -1 : va < vb ? 1 : a - b;
  });
  return order;
}

export async function beamSearch(ctx: DecodeContext, random?: SeededRandom): Promise<GenerationResult> {
  const { session, prompts, options, processors, callbacks } = ctx;
  const vocab = session.vocabSize;
  const batch = prompts.length;
  const numBeams = options.numBeams;
  const rows = batch * numBeams;
  // generate() has checked that the vocabulary offers this many candidates.
  const keep = beamsToKeep(numBeams, options.eosTokenIds.length);
  const eos = new Set(options.eosTokenIds);
  const lengthPenalty = options.lengthPenalty;
  const earlyStopping = options.earlyStopping;
  const maxNewTokens = options.maxNewTokens;
  const signal = callbacks.signal;

  throwIfAborted(signal);
  const first = await session.prefill();
  checkLogits(first, batch, vocab, 'prefill');
  // transformers expands every prompt to numBeams rows before the first pass; those rows are identical, so the
  // pass runs on the prompts once and the cache is copied to the beams.
  const expand = Array.from({ length: rows }, (_, i) => Math.floor(i / numBeams));
  session.reorder(expand);
  let logits = gatherRows(first, expand, vocab);

  // Running beams, row b * numBeams + j. Only the first beam of a prompt starts at 0, so the first step draws
  // all its continuations from one beam instead of numBeams identical ones.
  let runningSequences = expand.map((p) => [...prompts[p]!]);
  let runningTokens = expand.map(() => [] as number[]);
  let runningScores = new Float32Array(rows);
  for (let r = 0; r < rows; r++) if (r % numBeams !== 0) runningScores[r] = IMPOSSIBLE;

  // Finished slots, numBeams per prompt, kept sorted best first.
  let finishedTokens = expand.map(() => [] as number[]);
  let finishedScores = new Float32Array(rows).fill(IMPOSSIBLE);
  let finishedDone = new Uint8Array(rows);
  const improvable = new Uint8Array(batch).fill(1);

  const candidateIndex = new Int32Array(keep);
  const candidateKey = new Float64Array(keep);
  const candidateBeam = new Int32Array(batch * keep);
  const candidateToken = new Int32Array(batch * keep);
  const candidateScore = new Float32Array(batch * keep);
  const candidateStops = new Uint8Array(batch * keep);
  const maskedScore = new Float32Array(keep);
  const mergedScore = new Float32Array(numBeams + keep);
  const nextTokens = new Array<number>(rows);
  const sourceRows = new Array<number>(rows);
  const stepScores: Float32Array[] | undefined = callbacks.keepStepScores ? [] : undefined;

  for (let step = 0; ; step++) {
    logSoftmaxRowsInPlace(logits, rows, vocab);
    applyProcessors(processors, runningSequences, logits, vocab);
    stepScores?.push(logits.slice());
    for (let r = 0; r < rows; r++) {
      const s = runningScores[r]!;
      const base = r * vocab;
      for (let i = 0; i < vocab; i++) logits[base + i] = logits[base + i]! + s;
    }

    const reachesMaxLength = step + 1 >= maxNewTokens;
    let allStop = true;
    for (let b = 0; b < batch; b++) {
      const offset = b * numBeams * vocab;
      const span = numBeams * vocab;
      if (random) sampleWithoutReplacementInto(logits, offset, span, keep, random, candidateIndex, candidateKey);
      else topKInto(logits, offset, span, keep, candidateIndex, candidateKey);
      for (let k = 0; k < keep; k++) {
        const c = b * keep + k;
        const index = candidateIndex[k]!;
        candidateBeam[c] = Math.floor(index / vocab);
        candidateToken[c] = index % vocab;
        candidateScore[c] = logits[offset + index]!;
        candidateStops[c] = reachesMaxLength || eos.has(candidateToken[c]!) ? 1 : 0;
        if (!candidateStops[c]) allStop = false;
      }
    }

    const newRunningSequences: number[][] = new Array(rows);
    const newRunningTokens: number[][] = new Array(rows);
    const newRunningScores = new Float32Array(rows);
    const newFinishedTokens: number[][] = new Array(rows);
    const newFinishedScores = new Float32Array(rows);
    const newFinishedDone = new Uint8Array(rows);

    for (let b = 0; b < batch; b++) {
      // The continuations that carry on: the best numBeams that did not stop.
      for (let k = 0; k < keep; k++) {
        const c = b * keep + k;
        maskedScore[k] = candidateStops[c] ? f32(candidateScore[c]! + IMPOSSIBLE) : candidateScore[c]!;
      }
      const carryOn = orderDescending(maskedScore, 0, keep);
      for (let j = 0; j < numBeams; j++) {
        const c = b * keep + carryOn[j]!;
        const source = b * numBeams + candidateBeam[c]!;
        const r = b * numBeams + j;
        sourceRows[r] = source;
        nextTokens[r] = candidateToken[c]!;
        newRunningSequences[r] = [...runningSequences[source]!, candidateToken[c]!];
        newRunningTokens[r] = [...runningTokens[source]!, candidateToken[c]!];
        newRunningScores[r] = maskedScore[carryOn[j]!]!;
      }

      // The continuations that stopped, among the first numBeams, against the finished hypotheses so far.
      let full = true;
      for (let j = 0; j < numBeams; j++) if (!finishedDone[b * numBeams + j]) full = false;
      const closed = earlyStopping === true && full;
      const divisor = f32(Math.pow(step + 1, lengthPenalty));
      for (let j = 0; j < numBeams; j++) mergedScore[j] = finishedScores[b * numBeams + j]!;
      for (let k = 0; k < keep; k++) {
        const c = b * keep + k;
        const justFinished = candidateStops[c] === 1 && k < numBeams;
        let score = f32(candidateScore[c]! / divisor);
        if (closed) score = f32(score + IMPOSSIBLE);
        if (!improvable[b]) score = f32(score + IMPOSSIBLE);
        if (!justFinished) score = f32(score + IMPOSSIBLE);
        mergedScore[numBeams + k] = score;
      }
      const best = orderDescending(mergedScore, 0, numBeams + keep);
      for (let j = 0; j < numBeams; j++) {
        const m = best[j]!;
        const r = b * numBeams + j;
        newFinishedScores[r] = mergedScore[m]!;
        if (m < numBeams) {
          newFinishedTokens[r] = finishedTokens[b * numBeams + m]!;
          newFinishedDone[r] = finishedDone[b * numBeams + m]!;
        } else {
          const c = b * keep + (m - numBeams);
          newFinishedTokens[r] = [...runningTokens[b * numBeams + candidateBeam[c]!]!, candidateToken[c]!];
          newFinishedDone[r] = candidateStops[c] === 1 && m - numBeams < numBeams ? 1 : 0;
        }
      }
    }

    runningSequences = newRunningSequences;
    runningTokens = newRunningTokens;
    runningScores = newRunningScores;
    finishedTokens = newFinishedTokens;
    finishedScores = newFinishedScores;
    finishedDone = newFinishedDone;

    // Can a running beam still beat the worst finished hypothesis? Once a prompt says no, it stays no.
    const bestLength = earlyStopping === 'never' && lengthPenalty > 0 ? maxNewTokens : step + 1;
    const lengthDivisor = f32(Math.pow(bestLength, lengthPenalty));
    let anyImprovable = false;
    let allFull = true;
    for (let b = 0; b < batch; b++) {
      let worst = Infinity;
      for (let j = 0; j < numBeams; j++) worst = Math.min(worst, finishedScores[b * numBeams + j]!);
      const bestPossible = f32(runningScores[b * numBeams]! / lengthDivisor);
      let beats = false;
      let full = true;
      for (let j = 0; j < numBeams; j++) {
        const done = finishedDone[b * numBeams + j] === 1;
        if (!done) full = false;
        if (bestPossible > (done ? worst : IMPOSSIBLE)) beats = true;
      }
      if (!beats) improvable[b] = 0;
      if (improvable[b]) anyImprovable = true;
      if (!full) allFull = false;
      if (improvable[b] && !(earlyStopping === true && full)) {
        const tokens = runningTokens[b * numBeams]!;
        callbacks.onToken?.(b, tokens[tokens.length - 1]!, 0);
      }
    }

    const goOn = anyImprovable && !(allFull && earlyStopping === true) && !allStop;
    if (!goOn) break;
    throwIfAborted(signal);
    session.reorder(sourceRows);
    logits = await session.next(nextTokens);
    checkLogits(logits, rows, vocab, 'next');
  }

  const sequences: GeneratedSequence[][] = [];
  for (let b = 0; b < batch; b++) {
    const group: GeneratedSequence[] = [];
    for (let j = 0; j < options.numReturnSequences; j++) {
      const r = b * numBeams + j;
      group.push({ tokenIds: finishedTokens[r]!, score: finishedScores[r]! });
    }
    sequences.push(group);
  }
  return stepScores ? { sequences, stepScores } : { sequences };
}
