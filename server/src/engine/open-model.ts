import * as fs from 'node:fs';
import * as path from 'node:path';
import { convertCheckpoint, type ConvertProgress } from './convert/convert';
import { MANIFEST_FILE, readManifest } from './convert/manifest';
import { resolvePrecision, type Precision, type PrecisionChoice } from './convert/precision';
import { UserError } from './errors';
import { Blip2Pipeline } from './pipeline';
import { resolveDevice, type Device } from './runtime/ort';
import { resolveModel, type DownloadProgress } from './store/resolve';

export interface OpenModelOptions {
  /** A Hub repo id, a checkpoint folder or a converted folder. */
  model: string;
  precision: PrecisionChoice;
  device: Device;
  threads: number;
  store?: string;
  offline?: boolean;
  blockSize?: number;
  signal?: AbortSignal;
  onProgress?: (p: ModelProgress) => void;
}

export type ModelProgress =
  | ({ stage: 'download' } & DownloadProgress)
  | ({ stage: 'convert' } & ConvertProgress)
  | { stage: 'load' };

export interface OpenedModel {
  pipeline: Blip2Pipeline;
  /** What the user named, as recorded (repo id or absolute folder). */
  source: string;
  /** The converted folder the sessions were loaded from. */
  dir: string;
  precision: Precision;
  /** The provider that runs the model, after any fallback. */
  device: string;
  fallbackReason?: string;
  /** Milliseconds to load the sessions (not counting download or conversion). */
  loadMs: number;
}

/**
 * Finds, downloads, converts (once, into the model store) and loads a model: everything between a name the user
 * typed and a pipeline ready to caption.
 */
export async function openModel(opts: OpenModelOptions): Promise<OpenedModel> {
  const device = resolveDevice(opts.device);
  const wanted = resolvePrecision(opts.precision, device);
  const resolved = await resolveModel(opts.model, {
    store: opts.store,
    offline: opts.offline,
    signal: opts.signal,
    precision: wanted,
    onProgress: (p) => opts.onProgress?.({ stage: 'download', ...p }),
  });
  let dir: string;
  if (resolved.kind === 'converted') {
    dir = resolved.dir;
    const held = readManifest(dir).precision;
    // A converted folder named directly holds one precision; asking for another explicitly is a mistake worth a sentence.
    if (opts.precision !== 'auto' && held !== opts.precision) {
      throw new UserError(`${dir} holds a ${held} conversion, not ${opts.precision}.`, `Pass --precision ${held}, or the original checkpoint to convert it at ${opts.precision}.`);
    }
  } else {
    dir = resolved.convertedDir;
    if (!fs.existsSync(path.join(dir, MANIFEST_FILE))) {
      await convertCheckpoint({
        checkpointDir: resolved.checkpointDir,
        outDir: dir,
        precision: wanted,
        sourceName: resolved.source,
        revision: resolved.revision,
        blockSize: opts.blockSize,
        signal: opts.signal,
        onProgress: (p) => opts.onProgress?.({ stage: 'convert', ...p }),
      });
    }
  }
  opts.onProgress?.({ stage: 'load' });
  const start = performance.now();
  const pipeline = await Blip2Pipeline.load(dir, { device, threads: opts.threads });
  return {
    pipeline,
    source: resolved.source,
    dir,
    precision: pipeline.model.manifest.precision,
    device: pipeline.model.device,
    fallbackReason: pipeline.model.fallbackReason,
    loadMs: performance.now() - start,
  };
}
