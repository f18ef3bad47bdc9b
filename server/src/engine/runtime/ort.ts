// The only module that imports onnxruntime-node: sessions, execution providers and tensors go through here.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { OutOfMemoryError, UserError } from '../errors';

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
}

export interface OpenedSession {
  session: ort.InferenceSession;
  /** The provider actually running the graph. */
  device: Exclude<Device, 'auto'>;
  /** Why the requested provider was not used, when it was not. */
  fallbackReason?: string;
}

export async function openSession(file: string, settings: SessionSettings): Promise<OpenedSession> {
  const options = (device: string): ort.InferenceSession.SessionOptions => ({
    executionProviders: [device],
    intraOpNumThreads: settings.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  });
  const open = (device: Exclude<Device, 'auto'>) =>
    device === 'cpu' && settings.optimizedDir ? openCached(file, options(device), settings.optimizedDir) : create(file, options(device));
  if (settings.device !== 'cpu') {
    const offered = availableDevices();
    if (!offered.includes(settings.device)) {
      const reason = `the ${settings.device} execution provider is not available in onnxruntime-node on ${process.platform}-${process.arch} (available: ${offered.join(', ')})`;
      return { session: await open('cpu'), device: 'cpu', fallbackReason: reason };
    }
    try {
      return { session: await open(settings.device), device: settings.device };
    } catch (e) {
      const reason = `the ${settings.device} execution provider failed to start: ${firstLine(e)}`;
      return { session: await open('cpu'), device: 'cpu', fallbackReason: reason };
    }
  }
  return { session: await open('cpu'), device: 'cpu' };
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

/**
 * Opens a graph from its optimized copy under `dir`, making that copy first if there is none. onnxruntime re-runs
 * its graph optimizations and repacks every quantized weight at each load (seconds for blip2-opt-2.7b); the copy
 * holds the optimized graph and the repacked weights, memory-mapped when loaded, so a later load only maps them.
 * The copy is a cache: written to a temporary name and renamed when complete; if it cannot be written (disk full,
 * read-only store) the graph is opened as it is.
 */
async function openCached(file: string, options: ort.InferenceSession.SessionOptions, dir: string): Promise<ort.InferenceSession> {
  const cacheDir = path.join(dir, optimizedCacheKey());
  const name = path.basename(file);
  const optimized = path.join(cacheDir, name);
  const dataName = `${name}.data`;
  if (fs.existsSync(optimized)) {
    try {
      return await create(optimized, { ...options, graphOptimizationLevel: 'disabled' });
    } catch {
      // A damaged copy is made again below.
      fs.rmSync(optimized, { force: true });
    }
  }
  const tmp = path.join(cacheDir, `.partial-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  try {
    fs.mkdirSync(tmp, { recursive: true });
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
    // The data first: a graph file in place means its data is complete.
    fs.renameSync(path.join(tmp, dataName), path.join(cacheDir, dataName));
    fs.renameSync(path.join(tmp, name), optimized);
    return session;
  } catch (e) {
    if (e instanceof UserError) throw e;
    return create(file, options);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
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
