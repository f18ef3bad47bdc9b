/**
 * What `--model` means: a converted model folder, a Hugging Face checkpoint folder, or a Hub repo id. The
 * answer is either a converted model ready to load, or a checkpoint to convert together with the store folder
 * its conversion belongs in. Nothing touches the network when the cache or the store can answer.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { ModelUnavailableError, throwIfAborted, UserError } from '../errors';
import { CONFIG_FILE, MODEL_CONFIG_FILES, checkBlip2Config, inspectCheckpoint, isFile } from '../checkpoint/files';
import { isQuantized, type Precision } from '../convert/precision';
import { copyBytesNeeded } from '../runtime/ort';
import { conversionCost } from '../convert/conversion-cost';
import { checkSpace, type SetUpCost } from './setup-cost';
import { MANIFEST_FILE } from '../convert/manifest';
import {
  DEFAULT_ENDPOINT,
  displayPath,
  expandHome,
  findCachedSnapshot,
  hfEndpoint,
  hfHubCacheDir,
  hfToken,
  isCommitHash,
  isHubOffline,
  parseRepoSpec,
  type CachedSnapshot,
  type Env,
  type RepoRef,
} from './hf-cache';
import type { CheckpointSource } from '../checkpoint/source';
import { HubUnreachableError, downloadCheckpoint, openHubRevision, type DownloadProgress } from './hub-download';
import type { RangeCounters } from './hub-ranges';
import { hubCheckpointSource } from './hub-stream';
import { downloadConverted, holdsConversions, planConvertedDownload, type ConvertedRepoPlan } from './converted-repo';
import { freeBytesAt } from './setup-cost';
import {
  checkPrecision,
  convertedDirForCheckpoint,
  convertedDirForRepo,
  isConverted,
  readStoreRef,
  storePaths,
  writeStoreRef,
  type StorePaths,
} from './model-store';

export type { DownloadProgress } from './hub-download';

export type ResolvedModel =
  | {
      kind: 'converted';
      dir: string;
      /** The repo id, or the absolute path of the folder the user named. */
      source: string;
      /** The commit, for a model that came from the Hub. */
      revision?: string;
    }
  | {
      kind: 'checkpoint';
      /** A checkpoint folder on disk (a local one, or a snapshot in the Hugging Face cache) … */
      checkpointDir?: string;
      /** … or a Hub checkpoint to stream into the conversion, never stored. */
      stream?: CheckpointSource;
      source: string;
      revision?: string;
      /** Where its conversion at this precision belongs in the store. */
      convertedDir: string;
      /** What converting it will cost (stated, and checked against the free space, before any weight moved). */
      cost: SetUpCost;
    };

export interface ResolveOptions {
  /** `--store DIR`; BLIP2_HOME or the per-user default otherwise. */
  store?: string;
  /** Never contact the Hub (as HF_HUB_OFFLINE=1 does). */
  offline?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: DownloadProgress) => void;
  precision: string;
  /** Where HF_HOME, HF_ENDPOINT, HF_TOKEN, BLIP2_HOME … are read; process.env unless a host passes its own. */
  env?: Env;
  /** What a relative folder is relative to; process.cwd() unless given. */
  cwd?: string;
  /**
   * Download a Hub checkpoint into the Hugging Face cache and keep it there, then convert it (as Python tools do);
   * by default it is converted as it streams and never stored.
   */
  keepSource?: boolean;
  /** Requests and bytes of a streamed checkpoint, counted (the benchmark reports them). */
  counters?: RangeCounters;
  /**
   * Told what setting the model up will cost before any weight is downloaded or converted; it may throw to stop
   * there (set-up's planning does). The free space is checked after it.
   */
  beforeWeights?: (cost: SetUpCost) => void | Promise<void>;
}

const FORMS_HINT =
  'Pass a converted model folder (with blip2-onnx.json), a Hugging Face BLIP-2 checkpoint folder (with config.json and model.safetensors), or a Hub repo id such as Salesforce/blip2-opt-2.7b (optionally @revision).';

export async function resolveModel(spec: string, opts: ResolveOptions): Promise<ResolvedModel> {
  throwIfAborted(opts.signal);
  checkPrecision(opts.precision);
  const env = opts.env ?? process.env;
  const paths = storePaths(opts.store, env);
  const trimmed = spec.trim();
  if (!trimmed) throw new UserError('No model was given.', FORMS_HINT);

  // An existing folder wins over a repo id of the same spelling, as in transformers' from_pretrained.
  const local = path.resolve(opts.cwd ?? process.cwd(), expandHome(trimmed));
  const st = await fs.stat(local).catch(() => undefined);
  if (st?.isDirectory()) return resolveFolder(local, paths, opts);
  if (st) {
    const known = [MANIFEST_FILE, CONFIG_FILE, 'model.safetensors', 'model.safetensors.index.json'].includes(path.basename(local));
    throw new UserError(
      `${trimmed} is a file; --model needs a folder.`,
      known ? `Pass the folder that holds it: ${path.dirname(local)}` : FORMS_HINT,
    );
  }

  const ref = parseRepoSpec(trimmed);
  if (!ref) throw new ModelUnavailableError(`Model not found: ${trimmed}`, FORMS_HINT);
  return resolveRepo(ref, paths, opts, env);
}

/** States the cost and checks the disk can hold it, before any weight moves. */
async function announce(cost: SetUpCost, opts: ResolveOptions): Promise<SetUpCost> {
  await opts.beforeWeights?.(cost);
  checkSpace(cost);
  return cost;
}

/** A converted model downloaded as it is: its files once on disk, and the first load's copy where one is kept. */
function convertedRepoCost(model: string, precision: Precision, plan: ConvertedRepoPlan, storeRoot: string, convertedDir: string): SetUpCost {
  const decoderData = plan.manifest.files!.filter((f) => f.name.startsWith(`${plan.manifest.graphs.decoder}`)).reduce((s, f) => s + f.bytes, 0);
  const firstLoad = isQuantized(precision) && decoderData > 0 ? copyBytesNeeded(decoderData) : 0;
  return {
    model,
    precision,
    kind: 'converted',
    downloadBytes: plan.bytes,
    sourceBytes: 0,
    peakDiskBytes: plan.bytes + firstLoad,
    finalDiskBytes: plan.bytes + firstLoad,
    firstLoadBytes: firstLoad,
    storeDir: storeRoot,
    freeBytes: freeBytesAt(convertedDir),
  };
}

/** The bytes of the checkpoint's configs and tokenizer in `dir` (they are copied into the conversion). */
async function smallFilesBytes(dir: string): Promise<number> {
  let total = 0;
  for (const f of MODEL_CONFIG_FILES) total += (await fs.stat(path.join(dir, f)).catch(() => undefined))?.size ?? 0;
  return total;
}

async function folderCost(model: string, dir: string, convertedDir: string, paths: StorePaths, opts: ResolveOptions): Promise<SetUpCost> {
  const inspection = await inspectCheckpoint(dir);
  let sourceBytes = 0;
  for (const w of inspection.weights) if (w.endsWith('.safetensors')) sourceBytes += (await fs.stat(path.join(dir, w))).size;
  return announce(conversionCost({ model, precision: opts.precision as Precision, kind: 'convert', configDir: dir, sourceBytes, smallBytes: await smallFilesBytes(dir), convertedDir, storeRoot: paths.root }), opts);
}

async function resolveFolder(dir: string, paths: StorePaths, opts: ResolveOptions): Promise<ResolvedModel> {
  const precision = opts.precision;
  const shown = displayPath(dir);
  if (await isFile(path.join(dir, MANIFEST_FILE))) {
    if (await isConverted(dir)) return { kind: 'converted', dir, source: dir };
    throw new UserError(
      `${shown} has a ${MANIFEST_FILE} that is not valid JSON.`,
      'Convert the checkpoint again; the folder may come from an interrupted or older conversion.',
    );
  }

  // A repository folder of the Hugging Face cache (models--Org--Name) stands for the snapshot its main ref names.
  if (await isFile(path.join(dir, 'refs', 'main'))) {
    const commit = (await fs.readFile(path.join(dir, 'refs', 'main'), 'utf8')).trim();
    if (isCommitHash(commit) && (await fs.stat(path.join(dir, 'snapshots', commit)).catch(() => undefined))) {
      dir = path.join(dir, 'snapshots', commit);
    }
  }

  const inspection = await inspectCheckpoint(dir);
  if (inspection.missing.length > 0) {
    const nothing = !inspection.present.includes(CONFIG_FILE) && inspection.weights.length === 0;
    if (nothing) {
      throw new UserError(`${shown} is neither a converted model nor a BLIP-2 checkpoint: it has no ${MANIFEST_FILE} and no ${CONFIG_FILE}.`, FORMS_HINT);
    }
    const hasBin = (await fs.readdir(dir).catch(() => [] as string[])).some((n) => n.startsWith('pytorch_model') && n.endsWith('.bin'));
    throw new UserError(
      `${shown} is an incomplete BLIP-2 checkpoint: it has no ${inspection.missing.join(', ')}.`,
      hasBin && inspection.weights.length === 0
        ? "Only safetensors weights are read; save the model with transformers' save_pretrained(safe_serialization=True)."
        : 'Copy the missing files from the Hub repository, or pass --model with its repo id to download them.',
    );
  }
  await checkBlip2Config(path.join(dir, CONFIG_FILE), shown);

  const convertedDir = await convertedDirForCheckpoint(paths, dir, precision);
  if (await isConverted(convertedDir)) return { kind: 'converted', dir: convertedDir, source: dir };
  return { kind: 'checkpoint', checkpointDir: dir, source: dir, convertedDir, cost: await folderCost(dir, dir, convertedDir, paths, opts) };
}

async function resolveRepo(ref: RepoRef, paths: StorePaths, opts: ResolveOptions, env: Env): Promise<ResolvedModel> {
  const cacheDir = hfHubCacheDir(env);
  const cached = await findCachedSnapshot(cacheDir, ref);
  const remember = (commit: string) =>
    // Only a convenience for finding the conversion offline later; a read-only store must not stop the run.
    writeStoreRef(paths, ref.repo, ref.revision, commit).catch(() => undefined);

  // A finished conversion needs neither the checkpoint nor the network, even if the Hugging Face cache was cleared.
  const storeCommit = await readStoreRef(paths, ref.repo, ref.revision);
  for (const commit of new Set([cached?.commit, storeCommit])) {
    if (!commit) continue;
    const dir = convertedDirForRepo(paths, ref.repo, commit, opts.precision);
    if (await isConverted(dir)) {
      await remember(commit);
      return { kind: 'converted', dir, source: ref.repo, revision: commit };
    }
  }

  const checkpoint = async (commit: string, dir: string, cost?: SetUpCost): Promise<ResolvedModel> => {
    await remember(commit);
    const convertedDir = convertedDirForRepo(paths, ref.repo, commit, opts.precision);
    if (await isConverted(convertedDir)) return { kind: 'converted', dir: convertedDir, source: ref.repo, revision: commit };
    return { kind: 'checkpoint', checkpointDir: dir, source: ref.repo, revision: commit, convertedDir, cost: cost ?? (await folderCost(ref.repo, dir, convertedDir, paths, opts)) };
  };

  if (cached?.complete) {
    await checkBlip2Config(path.join(cached.dir, CONFIG_FILE), ref.repo);
    return checkpoint(cached.commit, cached.dir);
  }
  const endpoint = hfEndpoint(env);
  const offlineBy = opts.offline ? '--offline' : isHubOffline(env) ? 'HF_HUB_OFFLINE' : undefined;
  if (offlineBy) throw notCached(ref, cacheDir, cached, `offline mode is on (${offlineBy})`, endpoint);

  const hubOptions = { cacheDir, endpoint, token: await hfToken(env), signal: opts.signal, onProgress: opts.onProgress };
  try {
    const precision = opts.precision as Precision;
    const rev = await openHubRevision(ref, hubOptions);
    await remember(rev.commit);
    const convertedDir = convertedDirForRepo(paths, ref.repo, rev.commit, opts.precision);
    if (await isConverted(convertedDir)) return { kind: 'converted', dir: convertedDir, source: ref.repo, revision: rev.commit };
    if (holdsConversions(rev)) {
      const staging = `${convertedDir}.download`;
      const plan = await planConvertedDownload(rev, precision, staging, hubOptions);
      await announce(convertedRepoCost(ref.repo, precision, plan, paths.root, convertedDir), opts);
      await downloadConverted(plan, staging, convertedDir, ref.repo, opts.signal);
      return { kind: 'converted', dir: convertedDir, source: ref.repo, revision: rev.commit };
    }
    if (opts.keepSource) {
      let cost: SetUpCost | undefined;
      const got = await downloadCheckpoint(ref, {
        ...hubOptions,
        rev,
        beforeWeights: async (_rev, files) => {
          const sourceBytes = files.weights.reduce((a, f) => a + f.size, 0);
          cost = await announce(conversionCost({ model: ref.repo, precision, kind: 'download', configDir: files.snapshot, sourceBytes, smallBytes: await smallFilesBytes(files.snapshot), convertedDir, storeRoot: paths.root, cacheDir }), opts);
        },
      });
      return checkpoint(got.commit, got.dir, cost);
    }
    const stream = await hubCheckpointSource(rev, { ...hubOptions, counters: opts.counters });
    const sourceBytes = stream.weights.reduce((a, w) => a + w.size, 0);
    const dtype = stream.weights[0]?.tensors.values().next().value?.dtype;
    const sourceDtype = dtype === 'F16' ? 'float16' : dtype === 'BF16' ? 'bfloat16' : 'float32';
    const cost = await announce(conversionCost({ model: ref.repo, precision, kind: 'stream', configDir: stream.configDir, sourceBytes, smallBytes: await smallFilesBytes(stream.configDir), convertedDir, storeRoot: paths.root, sourceDtype }), opts);
    return { kind: 'checkpoint', stream, source: ref.repo, revision: rev.commit, convertedDir, cost };
  } catch (e) {
    if (e instanceof HubUnreachableError) {
      const who = endpoint === DEFAULT_ENDPOINT ? 'the Hub' : endpoint;
      throw notCached(ref, cacheDir, cached, `${who} cannot be reached`, endpoint);
    }
    throw e;
  }
}

function notCached(ref: RepoRef, cacheDir: string, cached: CachedSnapshot | undefined, why: string, endpoint: string): ModelUnavailableError {
  const label = ref.explicitRevision ? `${ref.repo}@${ref.revision}` : ref.repo;
  const where = displayPath(cacheDir);
  const state = cached
    ? `is only partly in the Hugging Face cache (${where}; ${cached.inspection.missing.join(', ')} missing)`
    : `is not in the Hugging Face cache (${where})`;
  const hint = why.startsWith('offline')
    ? `Pass --model with a local checkpoint folder, or go online once${why.includes('HF_HUB_OFFLINE') ? ' (unset HF_HUB_OFFLINE)' : ''} to download it.`
    : `Pass --model with a local checkpoint folder, or connect once to download it${endpoint === DEFAULT_ENDPOINT ? '' : ` (HF_ENDPOINT is ${endpoint})`}.`;
  return new ModelUnavailableError(`${label} ${state} and ${why}.`, hint);
}

class Planned extends Error {
  constructor(readonly cost: SetUpCost) {
    super('planned');
  }
}

/**
 * What setting `spec` up would cost, found the way set-up would find it, stopping before any weight moves: the
 * Hub's listing and the configs are read (a few requests and megabytes), nothing is converted. A checkpoint the
 * disk cannot hold comes back as such (`checkSpace` says why); it is the caller's to refuse.
 */
export async function planSetUp(spec: string, opts: ResolveOptions): Promise<SetUpCost> {
  try {
    const r = await resolveModel(spec, {
      ...opts,
      beforeWeights: (cost) => {
        throw new Planned(cost);
      },
    });
    if (r.kind === 'checkpoint') return r.cost;
    return { model: r.source, precision: opts.precision as Precision, kind: 'ready', downloadBytes: 0, sourceBytes: 0, peakDiskBytes: 0, finalDiskBytes: 0, firstLoadBytes: 0, storeDir: r.dir };
  } catch (e) {
    if (e instanceof Planned) return e.cost;
    throw e;
  }
}
