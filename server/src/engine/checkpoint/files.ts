import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { UserError } from '../errors';
import { FileRefused, readSmallFile } from '../small-file';

/**
 * The files of a Hugging Face BLIP-2 checkpoint that the converter and the runtime read. Everything else in a
 * Hub repository (PyTorch .bin weights, vocab.json, merges.txt, the README) is never downloaded.
 */
export const CONFIG_FILE = 'config.json';
export const SAFETENSORS_FILE = 'model.safetensors';
export const SAFETENSORS_INDEX_FILE = 'model.safetensors.index.json';
/**
 * The most a checkpoint's JSON file is read at, before parsing (the tokenizer has its own, larger limit): the
 * configs of every published BLIP-2 are a few KB, their shard indexes under 100 KB.
 */
export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
/** A checkpoint's text file (JSON), read only if it is a regular file within `maxBytes`; a UserError otherwise. */
export function readCheckpointText(file: string, maxBytes = MAX_CONFIG_BYTES): string {
  try {
    return readSmallFile(file, maxBytes, `a ${path.basename(file)}`);
  } catch (e) {
    if (e instanceof FileRefused) throw new UserError(`${file} ${e.why}.`, 'Download the model again.');
    throw new UserError(`Cannot read ${file}.`, 'Check that the model folder is complete.');
  }
}

/**
 * The largest tokenizer.json read: OPT's is 2.1 MB, and few tokenizers of any model pass 20 MB. The library builds
 * about 1 KB of heap per added token, so a 196 MB file of 1.2 million of them took 3.5 GB and the process with it.
 */
export const MAX_TOKENIZER_BYTES = 32 * 1024 * 1024;
/** What the library is given to build, at most: OPT has 50,265 tokens, 50,000 merges and 5 added tokens. */
export const TOKENIZER_LIMITS = { vocab: 1_000_000, merges: 1_000_000, addedTokens: 100_000 } as const;

/**
 * A tokenizer.json, parsed, refused before parsing when over MAX_TOKENIZER_BYTES and before the tokenizer library
 * builds anything from it when its counts are over TOKENIZER_LIMITS.
 */
export function readTokenizerJson(file: string): object {
  let json: unknown;
  const text = readCheckpointText(file, MAX_TOKENIZER_BYTES);
  try {
    json = JSON.parse(text);
  } catch {
    throw new UserError(`${file} is not valid JSON.`, 'Download the model again.');
  }
  const t = json as { model?: { vocab?: unknown; merges?: unknown }; added_tokens?: unknown };
  const counts = {
    vocab: t?.model?.vocab && typeof t.model.vocab === 'object' ? Object.keys(t.model.vocab).length : 0,
    merges: Array.isArray(t?.model?.merges) ? t.model.merges.length : 0,
    addedTokens: Array.isArray(t?.added_tokens) ? t.added_tokens.length : 0,
  };
  const names = { vocab: 'vocabulary entries', merges: 'merges', addedTokens: 'added tokens' };
  for (const key of Object.keys(counts) as (keyof typeof counts)[]) {
    if (counts[key] > TOKENIZER_LIMITS[key]) {
      throw new UserError(`${file} has ${counts[key]} ${names[key]}, more than the ${TOKENIZER_LIMITS[key]} a tokenizer is read with.`, 'Download the model again.');
    }
  }
  return json as object;
}

/** Needed, each of them. */
export const REQUIRED_FILES = [CONFIG_FILE, 'tokenizer.json', 'tokenizer_config.json'] as const;
/** At least one of them: older repositories have only the image processor's file, newer ones both. */
export const PROCESSOR_FILES = ['preprocessor_config.json', 'processor_config.json'] as const;
/** Used when present, and a checkpoint without them is still complete. */
export const OPTIONAL_FILES = ['generation_config.json', 'special_tokens_map.json'] as const;
/** Every non-weight file a converted model keeps beside its graphs. */
export const MODEL_CONFIG_FILES = [...REQUIRED_FILES, ...PROCESSOR_FILES, ...OPTIONAL_FILES];

export interface CheckpointInspection {
  /** Files of the checkpoint that are there (relative names), shards included. */
  present: string[];
  /** What a complete checkpoint would still need, in words a user can act on (file names, or "one of a or b"). */
  missing: string[];
  /** The weights: `model.safetensors`, or the index followed by the shards it names. */
  weights: string[];
}

/** True when `p` is a file, following symlinks (a dangling snapshot link in the Hugging Face cache is not). */
export async function isFile(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isFile();
  } catch {
    return false;
  }
}

/**
 * The shard names a `model.safetensors.index.json` refers to. Names are checked to be plain file names in the
 * same folder, because they are joined onto cache and checkpoint paths and come from a file anyone can publish.
 */
export function shardsOfIndex(indexText: string, where: string): string[] {
  let weightMap: unknown;
  try {
    weightMap = (JSON.parse(indexText) as { weight_map?: unknown }).weight_map;
  } catch {
    throw new UserError(`${where} is not valid JSON.`, 'Download the checkpoint again, or fix the file.');
  }
  if (!weightMap || typeof weightMap !== 'object') {
    throw new UserError(`${where} has no weight_map.`, 'Download the checkpoint again, or fix the file.');
  }
  const shards = new Set<string>();
  for (const value of Object.values(weightMap as Record<string, unknown>)) {
    if (typeof value !== 'string' || !/^[^/\\]+\.safetensors$/.test(value) || value.startsWith('.')) {
      throw new UserError(
        `${where} names a weight file we cannot use: ${JSON.stringify(value)}.`,
        'Shards must be .safetensors files in the same folder as the index.',
      );
    }
    shards.add(value);
  }
  if (shards.size === 0) throw new UserError(`${where} lists no weights.`, 'Download the checkpoint again.');
  return [...shards].sort();
}

/**
 * Which of the checkpoint's files a folder holds. The single-file weights win over an index when both are
 * there, as in transformers' `from_pretrained`.
 */
export async function inspectCheckpoint(dir: string): Promise<CheckpointInspection> {
  const present: string[] = [];
  const missing: string[] = [];
  const has = (name: string) => isFile(path.join(dir, name));

  for (const name of REQUIRED_FILES) (await has(name) ? present : missing).push(name);
  const processors: string[] = [];
  for (const name of PROCESSOR_FILES) if (await has(name)) processors.push(name);
  if (processors.length === 0) missing.push(PROCESSOR_FILES.join(' or '));
  present.push(...processors);
  for (const name of OPTIONAL_FILES) if (await has(name)) present.push(name);

  let weights: string[] = [];
  if (await has(SAFETENSORS_FILE)) {
    weights = [SAFETENSORS_FILE];
  } else if (await has(SAFETENSORS_INDEX_FILE)) {
    const indexPath = path.join(dir, SAFETENSORS_INDEX_FILE);
    const shards = shardsOfIndex(readCheckpointText(indexPath), indexPath);
    weights = [SAFETENSORS_INDEX_FILE];
    for (const shard of shards) (await has(shard) ? weights : missing).push(shard);
  } else {
    missing.push(`${SAFETENSORS_FILE} or ${SAFETENSORS_INDEX_FILE}`);
  }
  present.push(...weights);
  return { present, missing, weights };
}

/**
 * Refuses a config.json that names another architecture before anyone spends minutes converting (or
 * gigabytes downloading) it. A config without `model_type` is let through: the converter reads the details.
 */
export async function checkBlip2Config(configPath: string, what: string): Promise<void> {
  if (!(await isFile(configPath))) return;
  let config: unknown;
  const text = readCheckpointText(configPath);
  try {
    config = JSON.parse(text);
  } catch {
    throw new UserError(`${configPath} is not valid JSON.`, 'Download the checkpoint again, or fix the file.');
  }
  const modelType = (config as { model_type?: unknown } | null)?.model_type;
  if (typeof modelType === 'string' && modelType !== 'blip-2') {
    throw new UserError(
      `${what} is a "${modelType}" model, not BLIP-2.`,
      'Pass --model with a BLIP-2 checkpoint, for example Salesforce/blip2-opt-2.7b.',
    );
  }
}
