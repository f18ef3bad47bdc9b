// The only module that imports onnxruntime-node: sessions, execution providers and tensors go through here.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { filesIntact, recordFiles } from '../convert/integrity';
import { externalDataPath } from '../graphs/external-data';
import { OutOfMemoryError, UserError } from '../errors';
import { formatBytes } from '../units';

export const Tensor = ort.Tensor;
export type Tensor = ort.Tensor;
export type InferenceSession = ort.InferenceSession;

export const DEVICES = ['auto', 'cpu', 'cuda', 'dml', 'coreml', 'webgpu'] as const;
export type Device = (typeof DEVICES)[number];

export function parseDevice(value: string): Device {
  if ((DEVICES as readonly string[]).includes(value)) return value as Device;
  throw new UserError(`Unknown device "${value}".`, `Use one of: ${DEVICES.join(', ')}.`);
}

/** Which providers this onnxruntime-node build offers on this platform (CUDA only when its libraries were installed). */
export function availableDevices(): string[] {
  return ort.listSupportedBackends().filter((b) => b.bundled || b.name === 'cpu').map((b) => b.name);
}

/** `auto`: a GPU provider when this build offers one that is usually present (CUDA on Linux, DirectML on Windows), else the CPU. */
export function resolveDevice(device: Device): Exclude<Device, 'auto'> {
  if (device !== 'auto') return device;
  const offered = availableDevices();
  if (offered.includes('cuda')) return 'cuda';
  if (offered.includes('dml')) return 'dml';
  return 'cpu';
}

export interface SessionSettings {
  device: Exclude<Device, 'auto'>;
  /** Threads for one operator; 0 lets onnxruntime choose (one per physical core). */
  threads: number;
  /**
   * Where optimized copies of the graphs are kept (see openCached). Without it every load optimizes the graph and
   * repacks its weights again.
   */
  optimizedDir?: string;
  /**
   * false: weights are used where they are mapped instead of being repacked into memory of onnxruntime's own at load.
   * For float weights repacking copies the whole model (14 GB at fp32, 20 s) for matmuls that run about as fast from
   * the mapped file.
   */
  prepack?: boolean;
  /**
   * false: activations are allocated per run and returned afterwards instead of kept in onnxruntime's arena at
   * their peak size. For a graph run once per request (the vision encoder: 80-90 MB of activations at full size,
   * no measurable cost in time).
   */
  arena?: boolean;
  /** Free bytes on the disk holding a folder; the file system's own count unless a caller knows better. */
  freeBytes?: (dir: string) => number;
}

export interface OpenedSession {
  session: ort.InferenceSession;
  /** The provider actually running the graph. */
  device: Exclude<Device, 'auto'>;
  /** Why the requested provider was not used, when it was not. */
  fallbackReason?: string;
  /** Why every load of this graph stays slow (its optimized copy could not be made), for the user. */
  cacheNote?: string;
  /** The weight files the session maps: its optimized copy's when it was opened from one (mapped-weights.ts). */
  weightFiles: string[];
}

/** An optimized copy's weights, beside its graph (onnxruntime writes them where the session options say). */
const copyDataPath = (graph: string) => `${graph}.data`;

/** The weight files onnxruntime maps for a graph file: the converter's, or an optimized copy's. */
function weightFilesOf(graph: string): string[] {
  return [externalDataPath(graph), copyDataPath(graph)].filter((f) => fs.existsSync(f));
}

export async function openSession(file: string, settings: SessionSettings): Promise<OpenedSession> {
  const options = (device: string): ort.InferenceSession.SessionOptions => ({
    executionProviders: [device],
    intraOpNumThreads: settings.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    ...(settings.prepack === false && { extra: { session: { disable_prepacking: '1' } } }),
    ...(settings.arena === false && { enableCpuMemArena: false, enableMemPattern: false }),
  });
  const open = async (device: Exclude<Device, 'auto'>): Promise<Omit<OpenedSession, 'device'>> => {
    const { opened, ...cached } =
      device === 'cpu' && settings.optimizedDir
        ? await openCached(file, options(device), settings.optimizedDir, settings.freeBytes ?? freeBytesAt)
        : { session: await create(file, options(device)), opened: file };
    return { ...cached, weightFiles: weightFilesOf(opened) };
  };
  if (settings.device !== 'cpu') {
    const offered = availableDevices();
    if (!offered.includes(settings.device)) {
      const reason = `the ${settings.device} execution provider is not available in onnxruntime-node on ${process.platform}-${process.arch} (available: ${offered.join(', ')})`;
      return { ...(await open('cpu')), device: 'cpu', fallbackReason: reason };
    }
    try {
      return { ...(await open(settings.device)), device: settings.device };
    } catch (e) {
      const reason = `the ${settings.device} execution provider failed to start: ${firstLine(e)}`;
      return { ...(await open('cpu')), device: 'cpu', fallbackReason: reason };
    }
  }
  return { ...(await open('cpu')), device: 'cpu' };
}

/**
 * What an optimized copy depends on: onnxruntime's version and the CPU's instruction sets (weights are repacked
 * for the kernels this CPU runs), so a copy made elsewhere, or by another onnxruntime, is never loaded.
 */
export function optimizedCacheKey(): string {
  let features = os.cpus()[0]?.model ?? '';
  try {
    features += /^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
  } catch {
    // Not Linux: the CPU model names the instruction sets well enough.
  }
  const cpu = crypto.createHash('sha256').update(features).digest('hex').slice(0, 12);
  return `ort-${ort.env.versions.common}-${process.platform}-${process.arch}-${cpu}`;
}

interface Cached {
  session: ort.InferenceSession;
  cacheNote?: string;
  /** The graph file the session was created from: the optimized copy when one was used. */
  opened: string;
}

function freeBytesAt(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

/**
 * The disk an optimized copy takes: onnxruntime writes the original initializers beside the repacked ones, so about
 * twice the graph and its `_data` file as the converter writes them (2.0x measured for blip2-opt-2.7b at int4 and
 * int8), with some margin.
 */
export function copyBytesNeeded(graphBytes: number): number {
  return Math.ceil(2.1 * graphBytes) + 16 * 2 ** 20;
}

function graphBytes(file: string): number {
  const size = (f: string) => (fs.existsSync(f) ? fs.statSync(f).size : 0);
  return size(file) + size(externalDataPath(file));
}

/**
 * Opens a graph from its optimized copy under `dir`, making that copy first if there is none. onnxruntime re-runs
 * its graph optimizations and repacks every quantized weight at each load (seconds for blip2-opt-2.7b); the copy
 * holds the optimized graph and the repacked weights, memory-mapped when loaded, so a later load only maps them.
 * The copy is a cache: written to a temporary name and renamed when complete; if it cannot be written (disk full,
 * read-only store) the graph is opened as it is, with a note saying why loads stay slow.
 */
async function openCached(file: string, options: ort.InferenceSession.SessionOptions, dir: string, freeBytes: (dir: string) => number): Promise<Cached> {
  const cacheDir = path.join(dir, optimizedCacheKey());
  const name = path.basename(file);
  const optimized = path.join(cacheDir, name);
  const dataName = path.basename(copyDataPath(optimized));
  // The copy is what answers, so it is checked as the model's own files are: a damaged copy is made again.
  const record = path.join(cacheDir, `${name}.check.json`);
  // A copy that once computed other numbers than its original is not made again for this onnxruntime and CPU.
  const unusable = path.join(cacheDir, `${name}.unusable`);
  if (fs.existsSync(unusable)) return { session: await create(file, options), opened: file };
  if (fs.existsSync(optimized) && (await filesIntact(cacheDir, record))) {
    try {
      return { session: await create(optimized, { ...options, graphOptimizationLevel: 'disabled' }), opened: optimized };
    } catch (e) {
      // Whatever is wrong with the copy, the original is still there to make it again; memory would run out again.
      if (e instanceof OutOfMemoryError) throw e;
    }
  }
  // Without the copy every load repacks the weights again (seconds for blip2-opt-2.7b): say so, and why.
  const slow = (why: string, remedy: string) => `Loading ${name} stays slow (its weights are repacked at every load) because its optimized copy ${why}. ${remedy}, then load the model again.`;
  let tmp: string | undefined;
  try {
    fs.rmSync(optimized, { force: true });
    fs.mkdirSync(cacheDir, { recursive: true });
    const needed = copyBytesNeeded(graphBytes(file));
    const free = freeBytes(cacheDir);
    // A copy that does not fit would fail only after a full load's work, and leave the disk full for everyone else.
    if (free < needed) return { session: await create(file, options), opened: file, cacheNote: slow(`needs about ${formatBytes(needed)} in ${dir}, and its disk has ${formatBytes(free)} free`, 'Free some space on that disk') };
    tmp = path.join(cacheDir, `.partial-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
    fs.mkdirSync(tmp);
    const session = await create(file, {
      ...options,
      optimizedModelFilePath: path.join(tmp, name),
      extra: {
        session: {
          optimized_model_external_initializers_file_name: dataName,
          optimized_model_external_initializers_min_size_in_bytes: '1024',
          save_external_prepacked_constant_initializers: '1',
        },
      },
    });
    if (!(await sameOutputs(session, path.join(tmp, name), options))) {
      fs.writeFileSync(unusable, `onnxruntime ${ort.env.versions.common}'s optimized copy of this graph computes other numbers than the graph\n`);
      return { session, opened: file };
    }
    // The data first: a graph file in place, with its record, means the copy is complete.
    fs.renameSync(path.join(tmp, dataName), path.join(cacheDir, dataName));
    fs.renameSync(path.join(tmp, name), optimized);
    await recordFiles(cacheDir, [name, dataName], record);
    // This session was made from the original; it maps the original's weights, not the copy's.
    return { session, opened: file };
  } catch (e) {
    if (e instanceof UserError) throw e;
    return { session: await create(file, options), opened: file, cacheNote: slow(`could not be written in ${dir} (${firstLine(e)})`, `Free some space or make ${dir} writable`) };
  } finally {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Whether a saved copy computes what the session it was saved from computes, on one small made-up input: the copy
 * stores weights in onnxruntime's internal packed layouts, which it has been seen to read back wrongly (for graphs
 * far smaller than BLIP-2's), and a cache must never change an answer.
 */
async function sameOutputs(session: ort.InferenceSession, copyFile: string, options: ort.InferenceSession.SessionOptions): Promise<boolean> {
  let copy: ort.InferenceSession | undefined;
  try {
    copy = await ort.InferenceSession.create(copyFile, { ...options, graphOptimizationLevel: 'disabled' });
    const [a, b] = [await probe(session), await probe(copy)];
    return Object.keys(a).every((k) => {
      const x = a[k];
      const y = b[k];
      if (!y || x.length !== y.length) return false;
      for (let i = 0; i < x.length; i++) if (!(Math.abs(x[i] - y[i]) <= 1e-5 * (1 + Math.abs(x[i])))) return false;
      return true;
    });
  } catch {
    return false;
  } finally {
    await copy?.release();
  }
}

/** Runs a graph on a one-position input (symbolic dimensions 1, floats a fixed wave, integers 1); float outputs back. */
export async function probe(session: ort.InferenceSession): Promise<Record<string, Float32Array>> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const m of session.inputMetadata) {
    if (!m.isTensor) throw new Error(`input ${m.name} is not a tensor`);
    const dims = m.shape.map((d) => (typeof d === 'number' ? d : 1));
    const n = dims.reduce((a, b) => a * b, 1);
    if (m.type === 'float32') feeds[m.name] = new ort.Tensor('float32', Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.5), dims);
    else if (m.type === 'int64') feeds[m.name] = new ort.Tensor('int64', new BigInt64Array(n).fill(1n), dims);
    else if (m.type === 'int32') feeds[m.name] = new ort.Tensor('int32', new Int32Array(n).fill(1), dims);
    else throw new Error(`input ${m.name} is ${m.type}`);
  }
  const out = await session.run(feeds);
  const result: Record<string, Float32Array> = {};
  for (const [k, v] of Object.entries(out)) if (v.type === 'float32') result[k] = (v.data as Float32Array).slice();
  return result;
}

async function create(file: string, options: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(file, options);
  } catch (e) {
    const msg = firstLine(e);
    if (/bad_alloc|out of memory|Failed to allocate/i.test(msg)) {
      throw new OutOfMemoryError(`Not enough memory to load ${file}.`, 'Choose a smaller precision (int4 needs the least) or close other programs.');
    }
    if (/No such file|does not exist|ENOENT/i.test(msg)) {
      throw new UserError(`Model file missing: ${file}.`, 'The converted model is incomplete; delete its folder and convert again.');
    }
    if (/Protobuf parsing failed|external data|ModelProto|Load model/i.test(msg)) {
      throw new UserError(`The converted model file ${file} is damaged (${msg}).`, 'Delete its folder and convert again.');
    }
    throw e;
  }
}

function firstLine(e: unknown): string {
  const line = String(e instanceof Error ? e.message : e).split('\n')[0].trim();
  // onnxruntime prefixes its reasons with the source location and the failed check; users need only the reason.
  const reason = line.split(' was false. ').pop()!;
  return reason.replace(/^\/onnxruntime_src\/\S+ /, '');
}
