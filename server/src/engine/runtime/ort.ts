// The only module that imports onnxruntime-node: sessions, execution providers and tensors go through here.
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
  if (settings.device !== 'cpu') {
    const offered = availableDevices();
    if (!offered.includes(settings.device)) {
      const reason = `the ${settings.device} execution provider is not available in onnxruntime-node on ${process.platform}-${process.arch} (available: ${offered.join(', ')})`;
      return { session: await create(file, options('cpu')), device: 'cpu', fallbackReason: reason };
    }
    try {
      return { session: await create(file, options(settings.device)), device: settings.device };
    } catch (e) {
      const reason = `the ${settings.device} execution provider failed to start: ${firstLine(e)}`;
      return { session: await create(file, options('cpu')), device: 'cpu', fallbackReason: reason };
    }
  }
  return { session: await create(file, options('cpu')), device: 'cpu' };
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
