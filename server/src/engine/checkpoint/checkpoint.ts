import * as fs from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../errors';
import { readImageProcessorConfig } from '../preprocess/image';
import { parseBlip2Config, type Blip2Config } from './config';
import { MODEL_CONFIG_FILES, PROCESSOR_FILES, REQUIRED_FILES, SAFETENSORS_INDEX_FILE } from './files';
import { weightFiles } from './source';
import { expectedTensors, names } from './layout';
import { readSafetensorsHeader, readTensorF32, type TensorInfo } from './safetensors';

/** A Hugging Face BLIP-2 OPT model folder, opened lazily: headers parsed, tensors read on demand. */
export interface Checkpoint {
  dir: string;
  config: Blip2Config;
  /** Rows of the embedding table, which may exceed the tokenizer's size (padded to a multiple of 64). */
  vocabSize: number;
  /** Every file the model is made of (configs, tokenizer, weights), for the manifest's checksums. */
  files: string[];
  /** The tensor that serves as lm_head: its own if saved, else the tied input embedding. */
  lmHeadName: string;
  info(name: string): TensorInfo;
  read(name: string): Promise<Float32Array>;
}

export function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new UserError(`Cannot read ${file}.`, 'Check that the model folder is complete.');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new UserError(`${file} is not valid JSON.`, 'Download the model again.');
  }
}

/**
 * A checkpoint folder: its configs and tokenizer in `dir`, its tensors from the safetensors headers there, or from
 * `headers` (the weight files' names with their parsed headers) when the weights are not on disk but streamed.
 */
export function openCheckpoint(dir: string, headers?: ReadonlyMap<string, Map<string, TensorInfo>>): Checkpoint {
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    throw new UserError(`${dir} has no config.json, so it is not a Hugging Face model folder.`);
  }
  const config = parseBlip2Config(readJson(path.join(dir, 'config.json')), path.join(dir, 'config.json'));
  for (const f of REQUIRED_FILES) {
    if (!fs.existsSync(path.join(dir, f))) throw new UserError(`The checkpoint in ${dir} has no ${f}.`, 'Download the complete model folder.');
  }
  if (!PROCESSOR_FILES.some((f) => fs.existsSync(path.join(dir, f)))) {
    throw new UserError(`The checkpoint in ${dir} has neither ${PROCESSOR_FILES.join(' nor ')}.`, 'Download the complete model folder.');
  }

  const shards = headers ? [...headers.keys()] : weightFiles(dir);
  const tensors = new Map<string, TensorInfo>();
  for (const shard of shards) for (const [k, v] of headers?.get(shard) ?? readSafetensorsHeader(shard)) tensors.set(k, v);

  const embed = tensors.get(names.text.embedTokens);
  if (!embed) throw missing(dir, names.text.embedTokens);
  // The vocabulary is the one size the config may leave out; when it says, the table has to agree.
  const vocabSize = config.text.vocabSize ?? embed.shape[0];
  const lmHead = tensors.has(names.text.lmHead) ? [{ name: names.text.lmHead, shape: [vocabSize, config.text.hiddenSize] }] : [];
  for (const spec of [...expectedTensors(config, vocabSize), ...lmHead]) {
    const t = tensors.get(spec.name);
    if (!t) throw missing(dir, spec.name);
    if (t.shape.join(',') !== spec.shape.join(',')) {
      throw new UserError(`Tensor ${spec.name} has shape [${t.shape}] but config.json implies [${spec.shape}].`, 'The checkpoint and its config.json do not match.');
    }
  }
  const lmHeadName = lmHead.length ? names.text.lmHead : names.text.embedTokens;
  readImageProcessorConfig(dir, config.vision.imageSize);

  const files = [...MODEL_CONFIG_FILES, SAFETENSORS_INDEX_FILE]
    .map((f) => path.join(dir, f))
    .filter((f) => fs.existsSync(f))
    .concat(shards);

  return {
    dir,
    config,
    vocabSize,
    files,
    lmHeadName,
    info(name) {
      const t = tensors.get(name);
      if (!t) throw missing(dir, name);
      return t;
    },
    read(name) {
      return readTensorF32(this.info(name));
    },
  };
}

function missing(dir: string, name: string): UserError {
  return new UserError(`The checkpoint in ${dir} has no tensor ${name}, which a BLIP-2 OPT model needs.`, 'Check that this is a complete BLIP-2 OPT checkpoint.');
}

/**
 * A checkpoint's shapes from its config alone, without weights or headers: what a conversion will write, and the
 * decoder graph derived from the native decoder's weights, need the sizes only.
 */
export function checkpointShapes(configDir: string, vocabSize?: number): Checkpoint {
  const file = path.join(configDir, 'config.json');
  const config = parseBlip2Config(readJson(file), file);
  const vocab = vocabSize ?? config.text.vocabSize;
  if (vocab === undefined) throw new UserError(`${file} does not say the vocabulary's size.`, 'Use the config.json of a BLIP-2 OPT checkpoint.');
  const shapes = new Map<string, TensorInfo>(expectedTensors(config, vocab).map((t) => [t.name, { name: t.name, dtype: 'F32', shape: t.shape, begin: 0, end: 0, file: '' }]));
  return { ...openCheckpoint(configDir, new Map([['', shapes]])), read: () => Promise.reject(new Error(`${configDir}: shapes only, no weights`)) };
}

/** Parameters of a checkpoint, from its shapes. */
export function parameterCount(ckpt: Checkpoint): number {
  return expectedTensors(ckpt.config, ckpt.vocabSize).reduce((s, t) => s + t.shape.reduce((a, d) => a * d, 1), 0);
}

