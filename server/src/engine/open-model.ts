import * as path from 'node:path';
import { convertCheckpoint, type ConvertProgress } from './convert/convert';
import { checkModelIntact, damaged, verifyModelFiles, type FileProblem, type VerifyProgress } from './convert/integrity';
import { readManifest } from './convert/manifest';
import { resolvePrecision, type Precision, type PrecisionChoice } from './convert/precision';
import { DamagedModelError, OutOfMemoryError, UserError } from './errors';
import { explainOutOfMemory } from './memory-needs';
import { Blip2Pipeline } from './pipeline';
import { resolveDevice, type Device } from './runtime/ort';
import { cleanStaleTemp, discardDir, storeRoot } from './store/model-store';
import { planSetUp, resolveModel, type DownloadProgress } from './store/resolve';
import type { SetUpCost } from './store/setup-cost';

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
  /**
   * A damaged conversion in the model store is converted again instead of refused: for set-up, which the user
   * asked for. A converted folder the user named is never deleted.
   */
  repair?: boolean;
  /** Keep a Hub checkpoint in the Hugging Face cache (downloaded whole, then converted) instead of streaming it. */
  keepSource?: boolean;
  /** Told what set-up will cost (download, disk) before any weight moves; it may throw to stop there. */
  onCost?: (cost: SetUpCost) => void | Promise<void>;
}

export type ModelProgress =
  /** What set-up will cost, before any weight moves. */
  | { stage: 'cost'; cost: SetUpCost }
  | ({ stage: 'download' } & DownloadProgress)
  | ({ stage: 'convert' } & ConvertProgress)
  | ({ stage: 'verify' } & VerifyProgress)
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
  /** Why loading stays slow, one sentence each (an optimized copy that could not be made). */
  loadNotes: string[];
  /** Milliseconds to load the sessions (not counting download or conversion). */
  loadMs: number;
}

export interface ConvertedModel {
  /** The converted folder. */
  dir: string;
  /** What the user named, as recorded (repo id or absolute folder). */
  source: string;
  device: Exclude<Device, 'auto'>;
  /** Converted by this call, so its checksums were just recorded from these very files. */
  fresh: boolean;
}

/**
 * Finds, downloads and converts (once, into the model store, or into `outDir`) a model: everything between a name
 * the user typed and a converted folder.
 */
export async function ensureConverted(opts: OpenModelOptions & { outDir?: string; existing?: boolean }): Promise<ConvertedModel> {
  const device = resolveDevice(opts.device);
  const wanted = resolvePrecision(opts.precision, device);
  const resolved = await resolveModel(opts.model, {
    store: opts.store,
    offline: opts.offline,
    signal: opts.signal,
    precision: wanted,
    keepSource: opts.keepSource,
    onProgress: (p) => opts.onProgress?.({ stage: 'download', ...p }),
    beforeWeights: (cost) => {
      if (opts.existing) throw new UserError(`${opts.model} has no ${wanted} conversion yet, so there is nothing to check.`, 'Convert it first with `blip2 convert`.');
      opts.onProgress?.({ stage: 'cost', cost });
      return opts.onCost?.(cost);
    },
  });
  if (resolved.kind === 'converted') {
    const held = readManifest(resolved.dir).precision;
    if (opts.outDir) throw new UserError(`${opts.model} is already converted (${resolved.dir}).`, 'Pass the original checkpoint to convert it again.');
    // A converted folder named directly holds one precision; asking for another explicitly is a mistake worth a sentence.
    if (opts.precision !== 'auto' && held !== opts.precision) {
      throw new UserError(`${resolved.dir} holds a ${held} conversion, not ${opts.precision}.`, `Pass --precision ${held}, or the original checkpoint to convert it at ${opts.precision}.`);
    }
    return { dir: resolved.dir, source: resolved.source, device, fresh: false };
  }
  if (opts.existing) {
    throw new UserError(`${opts.model} has no ${wanted} conversion yet, so there is nothing to check.`, 'Convert it first with `blip2 convert`.');
  }
  // Conversions a crash or a kill abandoned are reclaimed before a new one starts.
  await cleanStaleTemp(opts.store);
  const dir = opts.outDir ?? resolved.convertedDir;
  await convertCheckpoint({
    checkpointDir: resolved.checkpointDir,
    source: resolved.stream,
    outDir: dir,
    precision: wanted,
    sourceName: resolved.source,
    revision: resolved.revision,
    blockSize: opts.blockSize,
    signal: opts.signal,
    onProgress: (p) => opts.onProgress?.({ stage: 'convert', ...p }),
  });
  return { dir, source: resolved.source, device, fresh: true };
}

/** What setting the model up would cost now (see planSetUp): read from the Hub's listing, nothing downloaded. */
export async function planModelSetUp(opts: OpenModelOptions): Promise<SetUpCost> {
  const device = resolveDevice(opts.device);
  return planSetUp(opts.model, { store: opts.store, offline: opts.offline, signal: opts.signal, precision: resolvePrecision(opts.precision, device), keepSource: opts.keepSource });
}

/** A name the user typed, made into a loaded pipeline (downloaded and converted first when needed). */
export async function openModel(opts: OpenModelOptions): Promise<OpenedModel> {
  const { dir, source, device } = await intactConversion(opts);
  opts.onProgress?.({ stage: 'load' });
  const start = performance.now();
  let pipeline: Blip2Pipeline;
  try {
    pipeline = await Blip2Pipeline.load(dir, { device, threads: opts.threads });
  } catch (e) {
    if (e instanceof OutOfMemoryError) throw explainOutOfMemory(readManifest(dir));
    throw e;
  }
  return {
    pipeline,
    source,
    dir,
    precision: pipeline.model.manifest.precision,
    device: pipeline.model.device,
    fallbackReason: pipeline.model.fallbackReason,
    loadNotes: pipeline.model.loadNotes,
    loadMs: performance.now() - start,
  };
}

/** The converted model, checked against its manifest before anything loads it (repaired when `opts.repair`). */
async function intactConversion(opts: OpenModelOptions): Promise<ConvertedModel> {
  const converted = await ensureConverted(opts);
  if (converted.fresh) return converted;
  try {
    await checkModelIntact(converted.dir, readManifest(converted.dir), {
      signal: opts.signal,
      onProgress: (p) => opts.onProgress?.({ stage: 'verify', ...p }),
    });
    return converted;
  } catch (e) {
    if (!(e instanceof DamagedModelError) || !opts.repair || !inStore(converted.dir, opts.store)) throw e;
    await discardDir(converted.dir);
    return ensureConverted(opts);
  }
}

export interface VerifyReport {
  dir: string;
  /** Files checked, with their total size. */
  files: number;
  bytes: number;
  problems: FileProblem[];
  /** The damaged conversion was converted again (and `problems` were what was wrong before). */
  repaired: boolean;
}

/**
 * `blip2 verify`: every file of the converted model against its manifest, size, CRC-32 and SHA-256. With
 * `repair`, a damaged conversion in the store is converted again; one the user named is only reported.
 */
export async function verifyModel(opts: OpenModelOptions): Promise<VerifyReport> {
  const { dir } = await ensureConverted({ ...opts, existing: true });
  const manifest = readManifest(dir);
  const problems = await verifyModelFiles(dir, manifest, 'full', { signal: opts.signal, onProgress: (p) => opts.onProgress?.({ stage: 'verify', ...p }) });
  const files = manifest.files?.length ?? 0;
  const bytes = (manifest.files ?? []).reduce((s, f) => s + f.bytes, 0);
  if (problems.length === 0 || !opts.repair) return { dir, files, bytes, problems, repaired: false };
  if (!inStore(dir, opts.store)) {
    throw new UserError(`${damaged(dir, problems).message} It is not in the model store, so it is left as it is.`, 'Convert the checkpoint again into another folder with `blip2 convert --out`.');
  }
  await discardDir(dir);
  await ensureConverted(opts);
  return { dir, files, bytes, problems, repaired: true };
}

function inStore(dir: string, store: string | undefined): boolean {
  const relative = path.relative(storeRoot(store), dir);
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
}
