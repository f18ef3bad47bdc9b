import { UserError } from '../errors';
import { randomSeed } from './random';
import type { GenerationOptions } from './types';

/** GenerationOptions with transformers' defaults filled in and every value checked. */
export interface ResolvedGenerationOptions {
  maxNewTokens: number;
  minNewTokens: number;
  numBeams: number;
  lengthPenalty: number;
  earlyStopping: boolean | 'never';
  numReturnSequences: number;
  doSample: boolean;
  temperature: number;
  /** 0 turns top-k filtering off, as in transformers. */
  topK: number;
  topP: number;
  seed: number;
  repetitionPenalty: number;
  noRepeatNgramSize: number;
  eosTokenIds: readonly number[];
  padTokenId: number;
}

export type GenerationStrategy = 'greedy' | 'sample' | 'beam-search' | 'beam-sample';

/** transformers' GenerationConfig.get_generation_mode, for the modes we support. */
export function strategyOf(options: ResolvedGenerationOptions): GenerationStrategy {
  if (options.numBeams === 1) return options.doSample ? 'sample' : 'greedy';
  return options.doSample ? 'beam-sample' : 'beam-search';
}

const SETTINGS_HINT = 'Fix the generation setting and try again.';

function wholeNumber(name: string, value: unknown, min: number, fallback?: number): number {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new UserError(`${name} must be a whole number of at least ${min} (got ${describe(value)}).`, SETTINGS_HINT);
  }
  return value;
}

function finiteNumber(
  name: string,
  value: unknown,
  fallback: number,
  check?: (v: number) => string | undefined,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new UserError(`${name} must be a finite number (got ${describe(value)}).`, SETTINGS_HINT);
  }
  const problem = check?.(value);
  if (problem) throw new UserError(`${name} ${problem} (got ${describe(value)}).`, SETTINGS_HINT);
  return value;
}

function tokenId(name: string, value: unknown, vocabSize: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value >= vocabSize) {
    throw new UserError(
      `${name} must be a token id from 0 to ${vocabSize - 1} (got ${describe(value)}).`,
      'Check the model\'s generation_config.json.',
    );
  }
  return value;
}

function describe(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : String(value);
}

/**
 * Checks options against the rules transformers' GenerationConfig.validate() and the logits warpers enforce, and
 * fills in GenerationConfig's defaults (num_beams 1, length_penalty 1.0, early_stopping false, top_k 50,
 * top_p 1.0, temperature 1.0, repetition_penalty 1.0, no_repeat_ngram_size 0, min_new_tokens 0).
 * Sampling-only settings are checked only when sampling, as transformers ignores them otherwise.
 */
export function resolveOptions(options: GenerationOptions, vocabSize: number): ResolvedGenerationOptions {
  const maxNewTokens = wholeNumber('maxNewTokens', options.maxNewTokens, 1);
  const minNewTokens = wholeNumber('minNewTokens', options.minNewTokens, 0, 0);
  const numBeams = wholeNumber('numBeams', options.numBeams, 1, 1);
  const numReturnSequences = wholeNumber('numReturnSequences', options.numReturnSequences, 1, 1);

  const doSample = options.doSample ?? false;
  if (typeof doSample !== 'boolean') {
    throw new UserError(`doSample must be true or false (got ${describe(doSample)}).`, SETTINGS_HINT);
  }
  const earlyStopping = options.earlyStopping ?? false;
  if (earlyStopping !== true && earlyStopping !== false && earlyStopping !== 'never') {
    throw new UserError(
      `earlyStopping must be true, false or 'never' (got ${describe(earlyStopping)}).`,
      SETTINGS_HINT,
    );
  }
  const lengthPenalty = finiteNumber('lengthPenalty', options.lengthPenalty, 1.0);

  if (numReturnSequences !== 1) {
    if (numBeams === 1 && !doSample) {
      throw new UserError(
        `Greedy search returns one sequence per prompt, so numReturnSequences must be 1 (got ${numReturnSequences}).`,
        'Use numBeams > 1 (beam search) or doSample: true (sampling) to get several sequences.',
      );
    }
    if (numBeams > 1 && numReturnSequences > numBeams) {
      throw new UserError(
        `numReturnSequences (${numReturnSequences}) must not exceed numBeams (${numBeams}).`,
        'Raise numBeams or lower numReturnSequences.',
      );
    }
  }

  const repetitionPenalty = finiteNumber('repetitionPenalty', options.repetitionPenalty, 1.0, (v) =>
    v > 0 ? undefined : 'must be greater than 0 (1 means no penalty)',
  );
  const noRepeatNgramSize = wholeNumber('noRepeatNgramSize', options.noRepeatNgramSize, 0, 0);

  let temperature = 1.0;
  let topK = 50;
  let topP = 1.0;
  if (doSample) {
    temperature = finiteNumber('temperature', options.temperature, 1.0, (v) =>
      v > 0 ? undefined : 'must be greater than 0 (for greedy decoding, set doSample to false)',
    );
    topK = wholeNumber('topK', options.topK, 0, 50);
    topP = finiteNumber('topP', options.topP, 1.0, (v) =>
      v >= 0 && v <= 1 ? undefined : 'must be between 0 and 1 (1 turns it off)',
    );
  }

  let seed: number;
  if (options.seed === undefined) seed = randomSeed();
  else if (typeof options.seed === 'number' && Number.isSafeInteger(options.seed)) seed = options.seed;
  else throw new UserError(`seed must be a whole number (got ${describe(options.seed)}).`, SETTINGS_HINT);

  if (!Array.isArray(options.eosTokenIds)) {
    throw new UserError('eosTokenIds must be a list of token ids.', 'Check the model\'s generation_config.json.');
  }
  const eosTokenIds = options.eosTokenIds.map((id, i) => tokenId(`eosTokenIds[${i}]`, id, vocabSize));
  const padTokenId = tokenId('padTokenId', options.padTokenId, vocabSize);

  return {
    maxNewTokens,
    minNewTokens,
    numBeams,
    lengthPenalty,
    earlyStopping,
    numReturnSequences,
    doSample,
    temperature,
    topK,
    topP,
    seed,
    repetitionPenalty,
    noRepeatNgramSize,
    eosTokenIds,
    padTokenId,
  };
}
