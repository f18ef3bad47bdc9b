import * as fs from 'node:fs';
import * as path from 'node:path';
import type { GenerationOptions } from '../../server/src/engine/generation/types';
import { referenceDir } from './paths';

/** A tensor file in tiny-blip2/reference, as the manifest describes it. */
export interface TensorRef {
  file: string;
  shape: number[];
  dtype: 'float32';
}

/** One case of tiny-blip2/reference/manifest.json (fields as transformers' fixture generator wrote them). */
export interface ReferenceCase {
  id: string;
  note: string;
  images: string[];
  prompts: string[] | null;
  generate: Record<string, number | boolean>;
  pixel_values: TensorRef;
  vision_last_hidden_state: TensorRef;
  qformer_last_hidden_state: TensorRef;
  image_features: TensorRef;
  input_ids: number[][];
  attention_mask: number[][];
  first_step_last_logits: TensorRef;
  min_greedy_margin?: number;
  step_scores?: TensorRef;
  generate_output_ids: number[][];
  new_token_ids: number[][];
  text: string[];
}

export interface ReferenceManifest {
  image_token_id: number;
  eos_token_id: number;
  bos_token_id: number;
  pad_token_id: number;
  num_query_tokens: number;
  cases: ReferenceCase[];
}

export function loadManifest(): ReferenceManifest {
  return JSON.parse(fs.readFileSync(path.join(referenceDir, 'manifest.json'), 'utf8')) as ReferenceManifest;
}

export function readTensor(ref: TensorRef): Float32Array {
  const buf = fs.readFileSync(path.join(referenceDir, ref.file));
  const expected = ref.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  if (out.length !== expected) throw new Error(`${ref.file}: ${out.length} values, shape says ${expected}`);
  return out;
}

export function imagePath(name: string): string {
  return path.join(referenceDir, 'images', name);
}

/** A case's transformers generate() kwargs as our generation options. */
export function generationOptionsFor(c: ReferenceCase, manifest: ReferenceManifest): GenerationOptions {
  const g = c.generate;
  return {
    maxNewTokens: g.max_new_tokens as number,
    numBeams: (g.num_beams as number | undefined) ?? 1,
    lengthPenalty: g.length_penalty as number | undefined,
    repetitionPenalty: g.repetition_penalty as number | undefined,
    noRepeatNgramSize: g.no_repeat_ngram_size as number | undefined,
    doSample: false,
    eosTokenIds: [(g.eos_token_id as number | undefined) ?? manifest.eos_token_id],
    padTokenId: manifest.pad_token_id,
  };
}
