import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../checkpoint/checkpoint';
import { MODEL_CONFIG_FILES } from '../checkpoint/files';
import { publishDir, tempDirFor } from '../store/model-store';
import { throwIfAborted, UserError } from '../errors';
import { buildDecoder, buildEmbedTokens } from '../graphs/decoder';
import { writeModel } from '../graphs/external-data';
import { DataType } from '../graphs/onnx-builder';
import { buildVisionEncoder } from '../graphs/vision-encoder';
import { recordModelFiles } from './integrity';
import { CONVERTER_VERSION, MANIFEST_FILE, MANIFEST_FORMAT, readManifest, type ConvertedManifest, type SourceFile } from './manifest';
import { nativeDecoderFits, writeNativeDecoder } from './native-weights';
import { DEFAULT_BLOCK_SIZE, moduleFormats, PRECISION_SUFFIX, type Precision } from './precision';

export interface ConvertProgress {
  /** 'hash' while checksumming the source, then the graph being written. */
  phase: 'hash' | 'vision_encoder' | 'embed_tokens' | 'decoder_model_merged' | 'native_decoder';
  done: number;
  total: number;
  detail?: string;
}

export interface ConvertOptions {
  checkpointDir: string;
  outDir: string;
  precision: Precision;
  /** What the user named (a repo id or folder), recorded in the manifest. */
  sourceName?: string;
  revision?: string;
  blockSize?: number;
  onProgress?: (p: ConvertProgress) => void;
  signal?: AbortSignal;
}

/**
 * Converts a Hugging Face BLIP-2 OPT checkpoint into three ONNX graphs at one precision.
 * Everything is written into a temporary sibling folder that is renamed into place only when complete,
 * so an interrupted conversion never leaves a folder that looks finished.
 */
export async function convertCheckpoint(opts: ConvertOptions): Promise<ConvertedManifest> {
  const ckpt = openCheckpoint(opts.checkpointDir);
  const outDir = path.resolve(opts.outDir);
  const tmp = await tempDirFor(outDir);
  fs.mkdirSync(path.join(tmp, 'onnx'));
  try {
    const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    const formats = moduleFormats(opts.precision, blockSize);
    const suffix = PRECISION_SUFFIX[opts.precision];
    const graphs = {
      visionEncoder: `onnx/vision_encoder${suffix}.onnx`,
      embedTokens: `onnx/embed_tokens${suffix}.onnx`,
      decoder: `onnx/decoder_model_merged${suffix}.onnx`,
    };
    const files = await hashFiles(ckpt.files, opts);
    const sizes: Record<string, number> = {};
    const doc = `BLIP-2 ${opts.precision} converted from ${opts.sourceName ?? ckpt.dir}`;
    const jobs = [
      { phase: 'vision_encoder' as const, file: graphs.visionEncoder, build: () => buildVisionEncoder(ckpt, formats) },
      { phase: 'embed_tokens' as const, file: graphs.embedTokens, build: () => buildEmbedTokens(ckpt, formats.embed) },
      { phase: 'decoder_model_merged' as const, file: graphs.decoder, build: () => buildDecoder(ckpt, formats.decoder) },
    ];
    for (const job of jobs) {
      throwIfAborted(opts.signal);
      const { bytes } = await writeModel(job.build(), path.join(tmp, job.file), doc, {
        signal: opts.signal,
        onProgress: (p) => opts.onProgress?.({ phase: job.phase, done: p.done, total: p.total, detail: p.tensor }),
      });
      sizes[job.file] = bytes;
    }
    const graphsWritten: ConvertedManifest['graphs'] = { ...graphs };
    const quant = formats.decoder.quant;
    // The same 4- or 8-bit weights once more, for the native decoder (runtime/native-decoder.ts): on CPUs where
    // onnxruntime's kernel is the slower one it computes the decoding steps.
    if (quant?.kind === 'nbits' && nativeDecoderFits(ckpt, quant.blockSize)) {
      throwIfAborted(opts.signal);
      const file = `onnx/decoder_native${suffix}.bin`;
      opts.onProgress?.({ phase: 'native_decoder', done: 0, total: 1 });
      sizes[file] = await writeNativeDecoder(ckpt, path.join(tmp, file), quant.bits, quant.blockSize, opts.signal);
      opts.onProgress?.({ phase: 'native_decoder', done: 1, total: 1 });
      graphsWritten.nativeDecoder = file;
    }
    for (const f of MODEL_CONFIG_FILES) {
      const src = path.join(ckpt.dir, f);
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(tmp, f));
    }
    const manifest: ConvertedManifest = {
      format: MANIFEST_FORMAT,
      converterVersion: CONVERTER_VERSION,
      precision: opts.precision,
      quantization: quant?.kind === 'nbits' ? { bits: quant.bits, blockSize: quant.blockSize, accuracyLevel: quant.accuracyLevel } : null,
      source: { model: opts.sourceName ?? ckpt.dir, revision: opts.revision, dir: ckpt.dir, files },
      createdAt: new Date().toISOString(),
      vocabSize: ckpt.vocabSize,
      kvCacheType: formats.decoder.floatType === DataType.FLOAT16 ? 'float16' : 'float32',
      graphs: graphsWritten,
      sizes,
      files: await recordModelFiles(tmp, opts.signal),
    };
    // The manifest is written last: a folder with a manifest is a finished conversion.
    fs.writeFileSync(path.join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    // If another process (the CLI beside the editor, say) finished the same conversion first, theirs is kept.
    await publishDir(tmp, outDir);
    return readManifest(outDir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if ((e as NodeJS.ErrnoException).code === 'ENOSPC') {
      throw new UserError(`The disk holding ${outDir} is full.`, 'Free some space or choose another --store/--out folder.');
    }
    throw e;
  }
}

async function hashFiles(files: string[], opts: ConvertOptions): Promise<SourceFile[]> {
  const total = files.reduce((s, f) => s + fs.statSync(f).size, 0);
  let done = 0;
  const out: SourceFile[] = [];
  for (const file of files) {
    const hash = crypto.createHash('sha256');
    const stream = fs.createReadStream(file, { highWaterMark: 4 << 20 });
    for await (const chunk of stream) {
      throwIfAborted(opts.signal);
      hash.update(chunk as Buffer);
      done += (chunk as Buffer).length;
      opts.onProgress?.({ phase: 'hash', done, total, detail: path.basename(file) });
    }
    out.push({ name: path.basename(file), bytes: fs.statSync(file).size, sha256: hash.digest('hex') });
  }
  return out;
}
