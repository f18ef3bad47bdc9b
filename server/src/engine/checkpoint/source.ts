/**
 * Where a conversion reads a checkpoint from: a folder on disk, or the Hub (store/hub-stream.ts). Either way the
 * configs and the tokenizer are files in `configDir`, and the weights are files read in order, whose headers are
 * already parsed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MODEL_CONFIG_FILES, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, shardsOfIndex } from './files';
import { readSafetensorsHeader, type TensorInfo } from './safetensors';
import type { StreamLocation } from './tensor-stream';
import { UserError } from '../errors';

export interface SourceWeights {
  name: string;
  size: number;
  location: StreamLocation;
  tensors: Map<string, TensorInfo>;
  /** The SHA-256 its publisher lists (the Hub's LFS oid): the stream's checksum must match it. */
  sha256?: string;
}

export interface CheckpointSource {
  /** config.json, the tokenizer and the processor's files (and the index, for sharded weights). */
  configDir: string;
  weights: SourceWeights[];
  /** What a resumed conversion must find unchanged: a conversion's journal for another source is discarded. */
  identity: string;
  /** As the manifest records it: the repo id or the folder the user named, the commit, the folder read. */
  model: string;
  revision?: string;
  dir?: string;
  /** Bytes streamed from the network (0 for a folder on disk). */
  remote: boolean;
}

/** The weight files of a checkpoint folder, by the rule the resolver checks it with (single file first). */
export function weightFiles(dir: string): string[] {
  const single = path.join(dir, SAFETENSORS_FILE);
  if (fs.existsSync(single)) return [single];
  const index = path.join(dir, SAFETENSORS_INDEX_FILE);
  if (fs.existsSync(index)) {
    const shards = shardsOfIndex(fs.readFileSync(index, 'utf8'), index).map((f) => path.join(dir, f));
    for (const s of shards) {
      if (!fs.existsSync(s)) throw new UserError(`Shard ${path.basename(s)} named by ${SAFETENSORS_INDEX_FILE} is missing.`, 'Download the complete model folder.');
    }
    return shards;
  }
  throw new UserError(`${dir} has no ${SAFETENSORS_FILE} or ${SAFETENSORS_INDEX_FILE}.`, 'Only safetensors checkpoints can be converted; use the safetensors files the Hub offers.');
}

/** A checkpoint folder on disk (a local checkpoint, or a snapshot in the Hugging Face cache). */
export function localCheckpointSource(dir: string, model = dir, revision?: string): CheckpointSource {
  const files = weightFiles(dir);
  const weights = files.map((file): SourceWeights => ({
    name: path.basename(file),
    size: fs.statSync(file).size,
    location: { kind: 'local', path: file },
    tensors: readSafetensorsHeader(file),
  }));
  const stamp = (f: string) => {
    const st = fs.statSync(f);
    return `${path.basename(f)}:${st.size}:${Math.floor(st.mtimeMs)}`;
  };
  const configs = MODEL_CONFIG_FILES.map((f) => path.join(dir, f)).filter((f) => fs.existsSync(f));
  return { configDir: dir, weights, identity: `local:${fs.realpathSync(dir)}|${[...configs, ...files].map(stamp).join('|')}`, model, revision, dir, remote: false };
}
