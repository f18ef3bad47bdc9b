import * as fs from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../errors';
import type { Precision } from './precision';

export const MANIFEST_FILE = 'blip2-onnx.json';
export const MANIFEST_FORMAT = 'blip2-onnx';
/** Bumped whenever the graphs change (in meaning, or only in speed); older conversions are then redone, not misread. */
export const CONVERTER_VERSION = 6;

export interface SourceFile {
  name: string;
  bytes: number;
  sha256: string;
}

/** A file of a converted model as its conversion wrote it (see integrity.ts). */
export interface ModelFile {
  /** Relative to the model folder, with `/` separators. */
  name: string;
  bytes: number;
  crc32: number;
  sha256: string;
}

export interface ConvertedManifest {
  format: typeof MANIFEST_FORMAT;
  converterVersion: number;
  precision: Precision;
  quantization: { bits: number; blockSize: number; accuracyLevel: number } | null;
  /** `dir`: the folder it was read from, absent for a checkpoint streamed from the Hub. */
  source: { model: string; revision?: string; dir?: string; files: SourceFile[] };
  createdAt: string;
  vocabSize: number;
  /** Element type of the KV cache the decoder expects: 'float32' or 'float16'. */
  kvCacheType: 'float32' | 'float16';
  graphs: {
    visionEncoder: string;
    embedTokens: string;
    decoder: string;
    /** int4 and int8: the decoder's weights for the native kernel (native-weights.ts), where its sizes allow. */
    nativeDecoder?: string;
  };
  /**
   * Which forms of the decoder's weights are stored: onnxruntime's (the decoder graph's data) and/or the native
   * decoder's. Absent in conversions that stored every form they had.
   */
  decoderForms?: ('onnxruntime' | 'native')[];
  /** Bytes on disk of each graph with its external data. */
  sizes: Record<string, number>;
  /** The checkpoint's parameters (absent in conversions made before it was recorded). */
  parameters?: number;
  /** Every other file of the folder with its checksums; absent in conversions made before they were recorded. */
  files?: ModelFile[];
}

export function readManifest(dir: string): ConvertedManifest {
  const file = path.join(dir, MANIFEST_FILE);
  let json: ConvertedManifest;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8')) as ConvertedManifest;
  } catch {
    throw new UserError(`${dir} is not a converted BLIP-2 model (no readable ${MANIFEST_FILE}).`, 'Convert a checkpoint with `blip2 convert`.');
  }
  if (json.format !== MANIFEST_FORMAT) throw new UserError(`${file} is not a BLIP-2 ONNX manifest.`);
  if (json.converterVersion !== CONVERTER_VERSION) {
    throw new UserError(
      `${dir} was converted by converter version ${json.converterVersion}; this version reads ${CONVERTER_VERSION}.`,
      'Delete that folder and convert the checkpoint again.',
    );
  }
  return json;
}
