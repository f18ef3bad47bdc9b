/**
 * The generation entry point: checks the options, builds transformers' logits processors for them and runs the
 * strategy transformers' generate() would pick (greedy, sampling, beam search, beam sampling).
 * It does not dispose the session; whoever created it does.
 */
import { beamsToKeep, beamSearch } from './beam-search';
import type { DecodeContext } from './decode-context';
import { greedySearch } from './greedy';
import { buildLogitsProcessors } from './logits-processors';
import { resolveOptions, strategyOf } from './options';
import { SeededRandom } from './random';
import { sample } from './sampling';
import type {
  GenerationCallbacks,
  GenerationInput,
  GenerationOptions,
  GenerationResult,
  LanguageModelSession,
} from './types';

export async function generate(
  session: LanguageModelSession,
  input: GenerationInput,
  options: GenerationOptions,
  callbacks: GenerationCallbacks = {},
): Promise<GenerationResult> {
  const vocab = session.vocabSize;
  if (!Number.isInteger(vocab) || vocab <= 0) throw new Error(`The language model reports vocabSize ${vocab}.`);
  const resolved = resolveOptions(options, vocab);
  const prompts = checkInput(input, vocab);
  const strategy = strategyOf(resolved);
  const keep = beamsToKeep(resolved.numBeams, resolved.eosTokenIds.length);
  if (resolved.numBeams > 1 && resolved.numBeams * vocab < keep) {
    throw new Error(`The vocabulary (${vocab} tokens) is too small for beam search.`);
  }
  const ctx: DecodeContext = {
    session,
    prompts,
    options: resolved,
    processors: buildLogitsProcessors(resolved, prompts[0]!.length),
    callbacks,
  };
  switch (strategy) {
    case 'greedy':
      return greedySearch(ctx);
    case 'sample':
      return sample(ctx, new SeededRandom(resolved.seed));
    case 'beam-search':
      return beamSearch(ctx);
    case 'beam-sample':
      return beamSearch(ctx, new SeededRandom(resolved.seed));
  }
}

/** The prompt rows must form the rectangle the session was built from (left-padded), with ids the model knows. */
function checkInput(input: GenerationInput, vocab: number): readonly (readonly number[])[] {
  const rows = input.inputIds;
  if (!Array.isArray(rows) || rows.length === 0) throw new Error('generate() needs at least one prompt row.');
  const length = rows[0]!.length;
  if (length === 0) throw new Error('generate() needs non-empty prompt rows.');
  rows.forEach((row, r) => {
    if (row.length !== length) {
      throw new Error(
        `Prompt row ${r} has ${row.length} ids, row 0 has ${length}; batched rows must be padded to one length.`,
      );
    }
    for (const id of row) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new Error(`Prompt row ${r} holds id ${id}, outside the model's ${vocab} logits.`);
      }
    }
  });
  return rows;
}
