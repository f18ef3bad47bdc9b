import { convertCheckpoint, type ConvertProgress } from './convert/convert';
import { readManifest } from './convert/manifest';
import { resolvePrecision, type Precision, type PrecisionChoice } from './convert/precision';
import { UserError } from './errors';
import { Blip2Pipeline } from './pipeline';
import { resolveDevice, type Device } from './runtime/ort';
import { cleanStaleTemp } from './store/model-store';
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

export interface ConvertedModel {
  /** The converted folder. */
  dir: string;
  /** What the user named, as recorded (repo id or absolute folder). */
  source: string;
  device: Exclude<Device, 'auto'>;
}

/**
 * Finds, downloads and converts (once, into the model store, or into `outDir`) a model: everything between a name
 * the user typed and a converted folder.
 */
export async function ensureConverted(opts: OpenModelOptions & { outDir?: string }): Promise<ConvertedModel> {
  const device = resolveDevice(opts.device);
  const wanted = resolvePrecision(opts.precision, device);
  const resolved = await resolveModel(opts.model, {
    store: opts.store,
    offline: opts.offline,
    signal: opts.signal,
    precision: wanted,
    onProgress: (p) => opts.onProgress?.({ stage: 'download', ...p }),
  });
  if (resolved.kind === 'converted') {
    const held = readManifest(resolved.dir).precision;
    if (opts.outDir) throw new UserError(`${opts.model} is already converted (${resolved.dir}).`, 'Pass the original checkpoint to convert it again.');
    // A converted folder named directly holds one precision; asking for another explicitly is a mistake worth a sentence.
    if (opts.precision !== 'auto' && held !== opts.precision) {
      throw new UserError(`${resolved.dir} holds a ${held} conversion, not ${opts.precision}.`, `Pass --precision ${held}, or the original checkpoint to convert it at ${opts.precision}.`);
    }
    return { dir: resolved.dir, source: resolved.source, device };
  }
  // Conversions a crash or a kill abandoned are reclaimed before a new one starts.
  await cleanStaleTemp(opts.store);
  const dir = opts.outDir ?? resolved.convertedDir;
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
  return { dir, source: resolved.source, device };
}

/** A name the user typed, made into a loaded pipeline (downloaded and converted first when needed). */
export async function openModel(opts: OpenModelOptions): Promise<OpenedModel> {
  const { dir, source, device } = await ensureConverted(opts);
  opts.onProgress?.({ stage: 'load' });
  const start = performance.now();
  const pipeline = await Blip2Pipeline.load(dir, { device, threads: opts.threads });
  return {
    pipeline,
    source,
    dir,
    precision: pipeline.model.manifest.precision,
    device: pipeline.model.device,
    fallbackReason: pipeline.model.fallbackReason,
    loadMs: performance.now() - start,
  };
}
