import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CancelledError, UserError } from '../../server/src/engine/errors';
import { generate } from '../../server/src/engine/generation/generate';
import {
  applyProcessors,
  buildLogitsProcessors,
  MinNewTokensProcessor,
  NoRepeatNGramProcessor,
  RepetitionPenaltyProcessor,
  TemperatureWarper,
  TopKWarper,
  TopPWarper,
} from '../../server/src/engine/generation/logits-processors';
import { resolveOptions } from '../../server/src/engine/generation/options';
import { SeededRandom } from '../../server/src/engine/generation/random';
import type {
  GenerationOptions,
  GenerationResult,
  LanguageModelSession,
} from '../../server/src/engine/generation/types';
import { generationOptionsFor, loadManifest, readTensor, type ReferenceCase } from '../helpers/reference';

// ---------------------------------------------------------------------------------------------------------------
// Test models

type LogitsFn = (history: readonly number[]) => ArrayLike<number>;

/**
 * A language model in plain TypeScript: each row's logits are a function of everything the row has seen, and
 * reorder() really moves the rows, so a loop that loses track of its beams gets the wrong numbers.
 */
class FunctionSession implements LanguageModelSession {
  rows: number[][];
  prefills = 0;
  nextCalls: number[][] = [];
  reorders: number[][] = [];
  disposed = false;

  constructor(
    readonly vocabSize: number,
    prompts: readonly (readonly number[])[],
    private readonly fn: LogitsFn,
  ) {
    this.rows = prompts.map((p) => [...p]);
  }

  async prefill(): Promise<Float32Array> {
    this.prefills++;
    return this.logits();
  }

  async next(tokens: readonly number[]): Promise<Float32Array> {
    assert.equal(tokens.length, this.rows.length, 'one token per row');
    this.nextCalls.push([...tokens]);
    this.rows.forEach((row, i) => row.push(tokens[i]!));
    return this.logits();
  }

  reorder(rows: readonly number[]): void {
    for (const r of rows) assert.ok(r >= 0 && r < this.rows.length, `reorder row ${r} out of range`);
    this.reorders.push([...rows]);
    this.rows = rows.map((r) => [...this.rows[r]!]);
  }

  dispose(): void {
    this.disposed = true;
  }

  private logits(): Float32Array {
    const v = this.vocabSize;
    const out = new Float32Array(this.rows.length * v);
    this.rows.forEach((row, i) => {
      const values = this.fn(row);
      assert.equal(values.length, v);
      for (let t = 0; t < v; t++) out[i * v + t] = values[t]!;
    });
    return out;
  }
}

/** FNV-1a over the history and the candidate token, mapped to [-4, 4): deterministic, irregular logits. */
function hashLogits(vocab: number, salt = 0): LogitsFn {
  return (history) => {
    let h = (0x811c9dc5 ^ salt) >>> 0;
    for (const t of history) h = Math.imul(h ^ t, 0x01000193) >>> 0;
    const out: number[] = [];
    for (let v = 0; v < vocab; v++) {
      let x = Math.imul(h ^ (v + 1), 0x01000193) >>> 0;
      x ^= x >>> 15;
      x = Math.imul(x, 0x2c1b3c6d) >>> 0;
      x ^= x >>> 12;
      out.push(((x >>> 0) / 2 ** 32) * 8 - 4);
    }
    return out;
  };
}

function options(extra: Partial<GenerationOptions> = {}): GenerationOptions {
  return { maxNewTokens: 5, eosTokenIds: [], padTokenId: 0, ...extra };
}

function logSoftmax(values: ArrayLike<number>): number[] {
  const f = Float32Array.from(values);
  let max = -Infinity;
  for (const v of f) max = Math.max(max, v);
  let sum = 0;
  for (const v of f) sum += Math.exp(v - max);
  return [...f].map((v) => v - max - Math.log(sum));
}

// ---------------------------------------------------------------------------------------------------------------
// Logits processors against hand-checked cases

describe('logits processors', () => {
  it('repetition penalty divides positive and multiplies negative scores of every id in the row, once', () => {
    const scores = Float32Array.from([2, -2, 3, 0.5, -1, 4]);
    // Id 1 occurs twice but is penalised once; ids 0 (a "prompt" id) and 4 are penalised too; 2, 3, 5 are not.
    new RepetitionPenaltyProcessor(2).process([[0, 1, 1, 4]], scores, 6);
    assert.deepEqual([...scores], [1, -4, 3, 0.5, -2, 4]);
  });

  it('repetition penalty works per row', () => {
    const scores = Float32Array.from([3, 3, 3, -3, -3, -3]);
    new RepetitionPenaltyProcessor(1.5).process([[0], [2]], scores, 3);
    assert.deepEqual([...scores], [2, 3, 3, -3, -3, -4.5]);
  });

  it('no-repeat n-gram bans exactly the completions of n-grams already seen', () => {
    const v = 6;
    const banned = (seq: number[], n: number): number[] => {
      const s = new Float32Array(v);
      new NoRepeatNGramProcessor(n).process([seq], s, v);
      return [...s.keys()].filter((i) => s[i] === -Infinity);
    };
    // Trigram (1,2,3) was seen and the row ends in 1,2: only 3 is banned.
    assert.deepEqual(banned([1, 2, 3, 1, 2], 3), [3]);
    // Bigrams starting with 1: (1,2) and (1,3).
    assert.deepEqual(banned([1, 2, 1, 3, 1], 2), [2, 3]);
    // The row's own suffix does not ban its successor: (4,5) has not been completed before.
    assert.deepEqual(banned([1, 2, 4, 5], 3), []);
    // Fewer tokens than n: nothing to ban.
    assert.deepEqual(banned([1, 2], 3), []);
    // n = 1 bans every token seen.
    assert.deepEqual(banned([5, 1, 5], 1), [1, 5]);
  });

  it('min new tokens bans the end tokens until enough tokens are generated', () => {
    const p = new MinNewTokensProcessor(3, 2, [1, 4]);
    const early = new Float32Array(5);
    p.process([[9, 9, 9, 0]], early, 5);
    assert.deepEqual([...early], [0, -Infinity, 0, 0, -Infinity]);
    const late = new Float32Array(5);
    p.process([[9, 9, 9, 0, 0]], late, 5);
    assert.deepEqual([...late], [0, 0, 0, 0, 0]);
  });

  it('temperature divides in float32', () => {
    const s = Float32Array.from([1, -2, 0.3]);
    new TemperatureWarper(0.7).process([[]], s);
    assert.deepEqual([...s], [1, -2, 0.3].map((x) => Math.fround(Math.fround(x) / Math.fround(0.7))));
  });

  it('top-k keeps the k best and anything tied with the k-th', () => {
    // Row 2's third best is a 3, and both 3s survive.
    const s = Float32Array.from([1, 5, 3, 3, 2, 0, 3, 4, 4, 1, 3, 2]);
    new TopKWarper(3).process([[], []], s, 6);
    const I = -Infinity;
    assert.deepEqual([...s], [I, 5, 3, 3, I, I, 3, 4, 4, I, 3, I]);
  });

  it('top-k honours min tokens to keep', () => {
    const s = Float32Array.from([1, 2, 3, 4]);
    new TopKWarper(1, 3).process([[]], s, 4);
    assert.deepEqual([...s], [-Infinity, 2, 3, 4]);
  });

  it('top-p keeps the smallest set of most likely tokens reaching p', () => {
    const probs = [0.5, 0.3, 0.15, 0.05];
    const run = (p: number, minKeep = 1): number[] => {
      const s = Float32Array.from(probs.map(Math.log));
      new TopPWarper(p, minKeep).process([[]], s, 4);
      return [...s.keys()].filter((i) => s[i]! > -Infinity);
    };
    assert.deepEqual(run(0.8), [0, 1]); // 0.5 + 0.3 reaches 0.8
    assert.deepEqual(run(0.81), [0, 1, 2]);
    assert.deepEqual(run(0.5), [0]);
    assert.deepEqual(run(0.0), [0]);
    assert.deepEqual(run(0.5, 3), [0, 1, 2]);
    assert.deepEqual(run(1.0), [0, 1, 2, 3]);
  });

  it('are built in transformers order, warpers only when sampling', () => {
    const names = (o: GenerationOptions): string[] =>
      buildLogitsProcessors(resolveOptions(o, 10), 4).map((p) => p.constructor.name);
    const all = options({
      repetitionPenalty: 1.2,
      noRepeatNgramSize: 2,
      minNewTokens: 1,
      eosTokenIds: [2],
      temperature: 0.5,
      topK: 5,
      topP: 0.9,
    });
    assert.deepEqual(names(all), ['RepetitionPenaltyProcessor', 'NoRepeatNGramProcessor', 'MinNewTokensProcessor']);
    assert.deepEqual(names({ ...all, doSample: true }), [
      'RepetitionPenaltyProcessor',
      'NoRepeatNGramProcessor',
      'MinNewTokensProcessor',
      'TemperatureWarper',
      'TopKWarper',
      'TopPWarper',
    ]);
    // transformers' default top_k is 50, so plain sampling still filters.
    assert.deepEqual(names(options({ doSample: true })), ['TopKWarper']);
    assert.deepEqual(names(options({ doSample: true, topK: 0 })), []);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Against transformers' own numbers (tiny-blip2 reference)

describe('against the transformers reference', () => {
  const manifest = loadManifest();
  const greedyCases = manifest.cases.filter((c) => c.step_scores);

  const optionsFor = (c: ReferenceCase) => generationOptionsFor(c, manifest);

  it('the processors turn the first-step logits into the first step scores', () => {
    for (const c of greedyCases) {
      const [rows, steps, vocab] = c.step_scores!.shape as [number, number, number];
      const scores = readTensor(c.first_step_last_logits);
      const expected = readTensor(c.step_scores!);
      const opts = resolveOptions(optionsFor(c), vocab);
      applyProcessors(buildLogitsProcessors(opts, c.input_ids[0]!.length), c.input_ids, scores, vocab);
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < vocab; i++) {
          // first_step_last_logits came from a separate forward pass, a float32 ulp or two off generate()'s.
          const a = scores[r * vocab + i]!;
          const b = expected[(r * steps) * vocab + i]!;
          assert.ok(a === b || Math.abs(a - b) < 1e-5, `${c.id} row ${r} id ${i}: ${a} vs ${b}`);
        }
      }
    }
  });

  it('no-repeat n-grams ban what transformers banned at every step, prompt included', () => {
    for (const c of greedyCases.filter((c) => c.generate.no_repeat_ngram_size)) {
      const [, steps, vocab] = c.step_scores!.shape as [number, number, number];
      const expected = readTensor(c.step_scores!);
      const p = new NoRepeatNGramProcessor(c.generate.no_repeat_ngram_size as number);
      let bans = 0;
      for (let t = 0; t < steps; t++) {
        const s = new Float32Array(vocab);
        p.process([[...c.input_ids[0]!, ...c.new_token_ids[0]!.slice(0, t)]], s, vocab);
        for (let i = 0; i < vocab; i++) {
          assert.equal(s[i] === -Infinity, expected[t * vocab + i] === -Infinity, `${c.id} step ${t} id ${i}`);
          if (s[i] === -Infinity) bans++;
        }
      }
      assert.ok(bans > 0, `${c.id} exercises at least one ban`);
    }
  });

  /**
   * Plays back a reference case: the logits of step t are the recorded processed scores, undone through the
   * repetition penalty where one was used (a banned token's logit does not matter, it is banned again).
   */
  function replaySession(c: ReferenceCase): FunctionSession {
    const [rows, steps, vocab] = c.step_scores!.shape as [number, number, number];
    const recorded = readTensor(c.step_scores!);
    const penalty = Math.fround((c.generate.repetition_penalty as number | undefined) ?? 1);
    const promptLength = c.input_ids[0]!.length;
    const rowOf = new Map(c.input_ids.map((ids, r) => [ids.join(','), r]));
    return new FunctionSession(vocab, c.input_ids, (history) => {
      const r = rowOf.get(history.slice(0, promptLength).join(','))!;
      const t = history.length - promptLength;
      assert.ok(t < steps, 'the loop asked for more steps than transformers ran');
      const raw = recorded.slice((r * steps + t) * vocab, (r * steps + t + 1) * vocab);
      if (penalty !== 1) {
        for (const id of new Set(history)) {
          const s = raw[id]!;
          raw[id] = s === -Infinity ? 0 : s < 0 ? s / penalty : s * penalty;
        }
      }
      for (let i = 0; i < vocab; i++) if (raw[i] === -Infinity) raw[i] = 0;
      return raw;
    });
  }

  for (const c of manifest.cases.filter((c) => c.step_scores)) {
    it(`greedy reproduces ${c.id}`, async () => {
      const session = replaySession(c);
      const result = await generate(session, { inputIds: c.input_ids }, optionsFor(c), { keepStepScores: true });
      assert.deepEqual(
        result.sequences.map((s) => s[0]!.tokenIds),
        c.new_token_ids,
      );
      const [rows, steps, vocab] = c.step_scores!.shape as [number, number, number];
      assert.equal(result.stepScores!.length, steps);
      if (!c.generate.repetition_penalty) {
        // Without a penalty to undo, the recorded scores come back bit for bit.
        const recorded = readTensor(c.step_scores!);
        for (let t = 0; t < steps; t++) {
          for (let r = 0; r < rows; r++) {
            const mine = result.stepScores![t]!.subarray(r * vocab, (r + 1) * vocab);
            assert.deepEqual(mine, recorded.subarray((r * steps + t) * vocab, (r * steps + t + 1) * vocab));
          }
        }
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Greedy search

describe('greedy search', () => {
  it('picks the argmax of the processed scores and records them', async () => {
    const vocab = 7;
    const fn = hashLogits(vocab);
    const prompt = [1, 2, 3];
    const session = new FunctionSession(vocab, [prompt], fn);
    const opts = options({ maxNewTokens: 6, repetitionPenalty: 1.3 });
    const result = await generate(session, { inputIds: [prompt] }, opts, { keepStepScores: true });
    const history = [...prompt];
    const tokens = result.sequences[0]![0]!.tokenIds;
    assert.equal(tokens.length, 6);
    let logProbSum = 0;
    for (let t = 0; t < 6; t++) {
      const expected = Float32Array.from(fn(history));
      for (const id of new Set(history)) {
        const s = expected[id]!;
        expected[id] = s < 0 ? s * Math.fround(1.3) : s / Math.fround(1.3);
      }
      assert.deepEqual(result.stepScores![t], expected);
      let best = 0;
      for (let i = 1; i < vocab; i++) if (expected[i]! > expected[best]!) best = i;
      assert.equal(tokens[t], best);
      logProbSum += logSoftmax(expected)[best]!;
      history.push(best);
    }
    assert.ok(Math.abs(result.sequences[0]![0]!.score - logProbSum) < 1e-9);
    assert.equal(session.prefills, 1);
    assert.equal(session.nextCalls.length, 5, 'no model call after the last token');
    assert.equal(session.disposed, false, 'the caller owns the session');
  });

  it('stops a row at its end token, keeps the token, and stops calling the model once all rows end', async () => {
    const vocab = 5;
    const eos = 4;
    // Row A (prompt [1]) says eos after two tokens; row B (prompt [2]) after four.
    const fn: LogitsFn = (h) => {
      const generated = h.length - 1;
      const stopAt = h[0] === 1 ? 2 : 4;
      const out = [0, 0, 0, 0, 0];
      out[generated >= stopAt ? eos : 3] = 5;
      return out;
    };
    const session = new FunctionSession(vocab, [[1], [2]], fn);
    const streamed: [number, number][] = [];
    const opts = options({ maxNewTokens: 10, eosTokenIds: [eos], padTokenId: 0 });
    const result = await generate(session, { inputIds: [[1], [2]] }, opts, {
      onToken: (row, token) => streamed.push([row, token]),
    });
    assert.deepEqual(result.sequences[0]![0]!.tokenIds, [3, 3, eos]);
    assert.deepEqual(result.sequences[1]![0]!.tokenIds, [3, 3, 3, 3, eos]);
    // After row A ends it is fed the pad id, as transformers does, and the loop stops when row B ends.
    assert.deepEqual(session.nextCalls, [
      [3, 3],
      [3, 3],
      [eos, 3],
      [0, 3],
    ]);
    assert.equal(streamed.filter(([r]) => r === 0).length, 3);
    assert.equal(streamed.filter(([r]) => r === 1).length, 5);
  });

  it('min new tokens holds the end token back', async () => {
    const vocab = 4;
    const eos = 3;
    const fn: LogitsFn = () => [0, 1, 0.5, 9];
    const run = async (minNewTokens: number) =>
      generate(
        new FunctionSession(vocab, [[0]], fn),
        { inputIds: [[0]] },
        options({ maxNewTokens: 8, minNewTokens, eosTokenIds: [eos] }),
        { keepStepScores: true },
      );
    assert.deepEqual((await run(0)).sequences[0]![0]!.tokenIds, [eos]);
    const held = await run(3);
    assert.deepEqual(held.sequences[0]![0]!.tokenIds, [1, 1, 1, eos]);
    assert.deepEqual(
      held.stepScores!.map((s) => s[eos]),
      [-Infinity, -Infinity, -Infinity, 9],
    );
  });

  it('stops at max new tokens without an end token', async () => {
    const session = new FunctionSession(5, [[1, 2]], hashLogits(5));
    const result = await generate(session, { inputIds: [[1, 2]] }, options({ maxNewTokens: 3, eosTokenIds: [] }));
    assert.equal(result.sequences[0]![0]!.tokenIds.length, 3);
    assert.equal(session.nextCalls.length, 2);
  });

  it('stops between steps when aborted, and never starts when aborted already', async () => {
    const controller = new AbortController();
    const session = new FunctionSession(6, [[1]], hashLogits(6));
    let seen = 0;
    await assert.rejects(
      generate(session, { inputIds: [[1]] }, options({ maxNewTokens: 20 }), {
        signal: controller.signal,
        onToken: () => {
          if (++seen === 2) controller.abort();
        },
      }),
      CancelledError,
    );
    assert.equal(session.nextCalls.length, 1, 'no model call after the abort');

    const idle = new FunctionSession(6, [[1]], hashLogits(6));
    await assert.rejects(
      generate(idle, { inputIds: [[1]] }, options(), { signal: AbortSignal.abort() }),
      CancelledError,
    );
    assert.equal(idle.prefills, 0);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Beam search

interface Hypothesis {
  tokens: number[];
  score: number;
}

/**
 * Every sequence a model can produce, scored as transformers scores finished beams: the sum of the token
 * log-probabilities divided by (generated length) ** lengthPenalty. A sequence ends at an end token or at maxNew.
 */
function exhaustive(
  fn: LogitsFn,
  prompt: number[],
  maxNew: number,
  eos: number[],
  lengthPenalty: number,
): Hypothesis[] {
  const out: Hypothesis[] = [];
  const walk = (tokens: number[], logProb: number): void => {
    const lp = logSoftmax(fn([...prompt, ...tokens]));
    lp.forEach((l, token) => {
      const next = [...tokens, token];
      const sum = logProb + l;
      if (eos.includes(token) || next.length === maxNew) {
        out.push({ tokens: next, score: sum / next.length ** lengthPenalty });
      } else {
        walk(next, sum);
      }
    });
  };
  walk([], 0);
  return out.sort((a, b) => b.score - a.score);
}

describe('rows that finish independently (onSequenceDone)', () => {
  const vocab = 7;
  const eos = 6;
  const prompts = [
    [1, 2],
    [3, 4],
    [5, 1],
    [2, 2],
  ];
  // Each row's end token wins at a different step: the row's first prompt id decides when.
  const fn: LogitsFn = (h) => {
    const out = Array.from(hashLogits(vocab, 3)(h));
    if (h.length - 2 >= 1 + h[0]!) out[eos] = 10;
    return out;
  };

  it('gives every row the sequence it gets alone, reports it the step it ends and drops it from the session', async () => {
    const session = new FunctionSession(vocab, prompts, fn);
    const done: { row: number; tokens: number[]; finish: string; at: number }[] = [];
    const result = await generate(session, { inputIds: prompts }, options({ maxNewTokens: 8, eosTokenIds: [eos] }), {
      onSequenceDone: (row, sequence, s, finish) => {
        assert.equal(sequence, 0);
        done.push({ row, tokens: [...s.tokenIds], finish, at: session.nextCalls.length });
      },
    });
    for (let p = 0; p < prompts.length; p++) {
      const alone = await generate(new FunctionSession(vocab, [prompts[p]!], fn), { inputIds: [prompts[p]!] }, options({ maxNewTokens: 8, eosTokenIds: [eos] }));
      assert.deepEqual(result.sequences[p]![0]!.tokenIds, alone.sequences[0]![0]!.tokenIds);
      const reported = done.find((d) => d.row === p)!;
      assert.deepEqual(reported.tokens, alone.sequences[0]![0]!.tokenIds);
      assert.equal(reported.finish, 'stop');
      // Reported at the step it ended: as many steps after the first pass as it has tokens, less one.
      assert.equal(reported.at, reported.tokens.length - 1);
    }
    // Step k feeds only the rows that have more than k tokens: each row leaves the session the step after it ends.
    const lengths = done.map((d) => d.tokens.length);
    assert.ok(new Set(lengths).size > 2, `the rows end at different steps (${lengths})`);
    assert.deepEqual(
      session.nextCalls.map((t) => t.length),
      Array.from({ length: Math.max(...lengths) - 1 }, (_, k) => lengths.filter((n) => n > k + 1).length),
    );
    assert.ok(session.nextCalls.every((tokens) => !tokens.includes(eos)), 'an ended row is never fed again');
  });

  it("ends a row the step isStopped says so, and the rows left carry on as they would have", async () => {
    const stopAfter = new Map([[1, 2]]);
    const seen = new Map<number, number>();
    const done = new Map<number, { tokens: number[]; finish: string }>();
    const result = await generate(new FunctionSession(vocab, prompts, fn), { inputIds: prompts }, options({ maxNewTokens: 8, eosTokenIds: [eos] }), {
      onToken: (row) => seen.set(row, (seen.get(row) ?? 0) + 1),
      onSequenceDone: (row, _sequence, s, finish) => done.set(row, { tokens: [...s.tokenIds], finish }),
      isStopped: (row) => (seen.get(row) ?? 0) >= (stopAfter.get(row) ?? Infinity),
    });
    assert.equal(done.get(1)!.finish, 'stopped');
    assert.equal(done.get(1)!.tokens.length, 2);
    const together = await generate(new FunctionSession(vocab, prompts, fn), { inputIds: prompts }, options({ maxNewTokens: 8, eosTokenIds: [eos] }));
    for (const p of [0, 2, 3]) assert.deepEqual(result.sequences[p]![0]!.tokenIds, together.sequences[p]![0]!.tokenIds);
    assert.deepEqual(done.get(1)!.tokens, together.sequences[1]![0]!.tokenIds.slice(0, 2));
  });

  it("reports 'length' for rows that reach maxNewTokens, and every sequence of a sampled prompt on its own", async () => {
    const finishes: string[] = [];
    const sequences = new Set<string>();
    await generate(new FunctionSession(vocab, [[1, 2], [4, 4]], hashLogits(vocab, 9)), { inputIds: [[1, 2], [4, 4]] }, options({ maxNewTokens: 3, doSample: true, numReturnSequences: 2, seed: 5 }), {
      onSequenceDone: (row, sequence, s, finish) => {
        finishes.push(finish);
        sequences.add(`${row}/${sequence}`);
        assert.equal(s.tokenIds.length, 3);
      },
    });
    assert.deepEqual(finishes, ['length', 'length', 'length', 'length']);
    assert.deepEqual([...sequences].sort(), ['0/0', '0/1', '1/0', '1/1']);
  });
});

describe('beam search', () => {
  const vocab = 3;
  const eos = 2;
  const prompt = [0, 1];

  it('finds the best sequence when the beams cover every live prefix', async () => {
    for (const [salt, lengthPenalty] of [
      [1, 1],
      [2, 1],
      [3, 0],
      [4, 2],
      [5, -1],
    ] as const) {
      const fn = hashLogits(vocab, salt);
      const all = exhaustive(fn, prompt, 3, [eos], lengthPenalty);
      // Two non-ending tokens, three steps: at most 4 live prefixes and 12 continuations, so 12 beams see them all.
      const session = new FunctionSession(vocab, [prompt], fn);
      const result = await generate(
        session,
        { inputIds: [prompt] },
        options({
          maxNewTokens: 3,
          numBeams: 12,
          numReturnSequences: 4,
          lengthPenalty,
          earlyStopping: 'never',
          eosTokenIds: [eos],
        }),
      );
      const got = result.sequences[0]!;
      assert.equal(got.length, 4);
      got.forEach((h, i) => {
        assert.deepEqual(h.tokenIds, all[i]!.tokens, `salt ${salt} rank ${i}`);
        assert.ok(Math.abs(h.score - all[i]!.score) < 1e-5, `salt ${salt} rank ${i}: ${h.score} vs ${all[i]!.score}`);
      });
      // Prefill ran on the prompt alone, then the cache was expanded to the beams.
      assert.deepEqual(session.reorders[0], new Array(12).fill(0));
    }
  });

  it('returns the best beams in order, best first', async () => {
    const fn = hashLogits(5, 9);
    const result = await generate(
      new FunctionSession(5, [prompt], fn),
      { inputIds: [prompt] },
      options({ maxNewTokens: 4, numBeams: 4, numReturnSequences: 3, eosTokenIds: [4] }),
    );
    const scores = result.sequences[0]!.map((s) => s.score);
    assert.equal(scores.length, 3);
    assert.ok(scores[0]! >= scores[1]! && scores[1]! >= scores[2]!, `${scores}`);
    for (const s of result.sequences[0]!) {
      // Each score is its own tokens' log-probabilities over their length.
      const h = [...prompt];
      let sum = 0;
      for (const t of s.tokenIds) {
        sum += logSoftmax(fn(h))[t]!;
        h.push(t);
      }
      assert.ok(Math.abs(s.score - sum / s.tokenIds.length) < 1e-5);
    }
  });

  it('expands each prompt to its beams and follows them with reorder', async () => {
    const prompts = [
      [0, 1],
      [1, 1],
    ];
    const session = new FunctionSession(6, prompts, hashLogits(6, 3));
    await generate(session, { inputIds: prompts }, options({ maxNewTokens: 4, numBeams: 3, eosTokenIds: [5] }));
    assert.deepEqual(session.reorders[0], [0, 0, 0, 1, 1, 1]);
    assert.equal(session.reorders.length, session.nextCalls.length + 1, 'a reorder before every step');
    for (const r of session.reorders.slice(1)) {
      assert.equal(r.length, 6);
      // Beams never cross from one prompt to another.
      r.forEach((source, i) => assert.equal(Math.floor(source / 3), Math.floor(i / 3)));
    }
  });

  it('gives each prompt of a batch the result it gets alone', async () => {
    const fn = hashLogits(6, 11);
    const prompts = [
      [0, 1],
      [3, 4],
    ];
    const opts = options({ maxNewTokens: 5, numBeams: 3, numReturnSequences: 2, eosTokenIds: [5], lengthPenalty: 1.5 });
    const together = await generate(new FunctionSession(6, prompts, fn), { inputIds: prompts }, opts);
    for (let p = 0; p < 2; p++) {
      const alone = await generate(new FunctionSession(6, [prompts[p]!], fn), { inputIds: [prompts[p]!] }, opts);
      assert.deepEqual(together.sequences[p], alone.sequences[0]);
    }
  });

  it('keeps the end token and stops once numBeams hypotheses finish with earlyStopping true', async () => {
    const vocab = 5;
    const eos = 4;
    // The end token is always the most likely continuation.
    const fn: LogitsFn = (h) => [0, 1, 0.5, 0.2, 3].map((x, i) => x + (i === h.length % 4 ? 0.1 : 0));
    const session = new FunctionSession(vocab, [prompt], fn);
    const result = await generate(
      session,
      { inputIds: [prompt] },
      options({ maxNewTokens: 10, numBeams: 2, numReturnSequences: 2, earlyStopping: true, eosTokenIds: [eos] }),
    );
    for (const s of result.sequences[0]!) assert.equal(s.tokenIds[s.tokenIds.length - 1], eos);
    assert.deepEqual(result.sequences[0]![0]!.tokenIds, [eos]);
    assert.equal(session.nextCalls.length, 1, 'two finished hypotheses after two steps end the search');
  });

  it('records the processed log-probabilities of every beam', async () => {
    const fn = hashLogits(4, 5);
    const result = await generate(
      new FunctionSession(4, [prompt], fn),
      { inputIds: [prompt] },
      options({ maxNewTokens: 2, numBeams: 2, eosTokenIds: [3] }),
      { keepStepScores: true },
    );
    const first = result.stepScores![0]!;
    assert.equal(first.length, 2 * 4);
    const expected = logSoftmax(fn(prompt));
    for (let i = 0; i < 4; i++) {
      assert.ok(Math.abs(first[i]! - expected[i]!) < 1e-6);
      assert.ok(Math.abs(first[4 + i]! - expected[i]!) < 1e-6);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Sampling

describe('sampling', () => {
  const vocab = 8;
  const prompt = [1, 2];

  async function run(extra: Partial<GenerationOptions>, callbacks = {}): Promise<GenerationResult> {
    return generate(
      new FunctionSession(vocab, [prompt], hashLogits(vocab, 7)),
      { inputIds: [prompt] },
      options({ maxNewTokens: 12, doSample: true, topK: 0, ...extra }),
      callbacks,
    );
  }

  it('is reproducible for a seed and varies between seeds', async () => {
    const a = await run({ seed: 42, numReturnSequences: 3 });
    const b = await run({ seed: 42, numReturnSequences: 3 });
    const c = await run({ seed: 43, numReturnSequences: 3 });
    assert.deepEqual(a.sequences, b.sequences);
    assert.notDeepEqual(a.sequences, c.sequences);
    assert.equal(a.sequences[0]!.length, 3);
  });

  it('draws only from the top-k and top-p supports', async () => {
    for (const extra of [{ topK: 2 }, { topP: 0.5 }, { topK: 3, topP: 0.7, temperature: 0.6 }]) {
      for (let seed = 0; seed < 5; seed++) {
        const r = await run({ seed, numReturnSequences: 2, ...extra }, { keepStepScores: true });
        r.sequences[0]!.forEach((s, row) => {
          s.tokenIds.forEach((token, step) => {
            const scores = r.stepScores![step]!.subarray(row * vocab, (row + 1) * vocab);
            assert.ok(scores[token]! > -Infinity, `${JSON.stringify(extra)}: token outside the support`);
            if ('topK' in extra) assert.ok(scores.filter((x) => x > -Infinity).length <= extra.topK!);
          });
        });
      }
    }
  });

  it('top-k 1 is greedy', async () => {
    const session = new FunctionSession(vocab, [prompt], hashLogits(vocab, 7));
    const greedy = await generate(session, { inputIds: [prompt] }, options({ maxNewTokens: 12 }));
    const sampled = await run({ topK: 1, seed: 3 });
    assert.deepEqual(sampled.sequences[0]![0]!.tokenIds, greedy.sequences[0]![0]!.tokenIds);
  });

  it('follows the softmax of the scores', async () => {
    const logits = [0, 1, 2, -1];
    const n = 4000;
    const result = await generate(
      new FunctionSession(4, [[0]], () => logits),
      { inputIds: [[0]] },
      options({ maxNewTokens: 1, doSample: true, seed: 1, numReturnSequences: n }),
    );
    const counts = [0, 0, 0, 0];
    for (const s of result.sequences[0]!) counts[s.tokenIds[0]!]!++;
    const z = logits.reduce((a, x) => a + Math.exp(x), 0);
    logits.forEach((x, i) => {
      const p = Math.exp(x) / z;
      const sd = Math.sqrt((n * p * (1 - p)) || 1);
      assert.ok(Math.abs(counts[i]! - n * p) < 5 * sd, `token ${i}: ${counts[i]} draws, expected ${n * p}`);
    });
  });

  it('beam sampling is reproducible and returns scored hypotheses best first', async () => {
    const opts = { numBeams: 3, numReturnSequences: 2, seed: 5, eosTokenIds: [7], topK: 5 };
    const a = await run(opts);
    const b = await run(opts);
    assert.deepEqual(a.sequences, b.sequences);
    assert.ok(a.sequences[0]![0]!.score >= a.sequences[0]![1]!.score);
  });

  it('the generator gives the same stream for the same seed, different ones otherwise', () => {
    const draw = (seed: number) => {
      const r = new SeededRandom(seed);
      return Array.from({ length: 5 }, () => r.nextDouble());
    };
    assert.deepEqual(draw(1), draw(1));
    assert.notDeepEqual(draw(1), draw(2));
    assert.notDeepEqual(draw(1), draw(1 + 2 ** 32));
    for (const u of draw(9)) assert.ok(u >= 0 && u < 1);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Options

describe('options', () => {
  const session = () => new FunctionSession(10, [[1]], hashLogits(10));
  const fails = async (extra: Partial<GenerationOptions>, pattern: RegExp) => {
    await assert.rejects(generate(session(), { inputIds: [[1]] }, options(extra)), (e: unknown) => {
      assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
      assert.match(e.message, pattern);
      return true;
    });
  };

  it('rejects settings transformers rejects, naming the valid values', async () => {
    await fails({ maxNewTokens: 0 }, /maxNewTokens must be a whole number of at least 1/);
    await fails({ numBeams: 0 }, /numBeams must be a whole number of at least 1/);
    await fails({ earlyStopping: 'sometimes' as never }, /earlyStopping must be true, false or 'never'/);
    await fails({ numReturnSequences: 2 }, /Greedy search returns one sequence/);
    await fails({ numBeams: 2, numReturnSequences: 3 }, /numReturnSequences \(3\) must not exceed numBeams \(2\)/);
    await fails({ doSample: true, temperature: 0 }, /temperature must be greater than 0/);
    await fails({ doSample: true, topP: 1.5 }, /topP must be between 0 and 1/);
    await fails({ doSample: true, topK: -1 }, /topK must be a whole number of at least 0/);
    await fails({ repetitionPenalty: 0 }, /repetitionPenalty must be greater than 0/);
    await fails({ eosTokenIds: [10] }, /eosTokenIds\[0\] must be a token id from 0 to 9/);
    await fails({ seed: 1.5 }, /seed must be a whole number/);
  });

  it('ignores sampling settings when not sampling, as transformers does', async () => {
    const result = await generate(session(), { inputIds: [[1]] }, options({ temperature: 0, topP: 7 }));
    assert.equal(result.sequences[0]![0]!.tokenIds.length, 5);
  });
});
