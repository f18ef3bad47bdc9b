import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { disableOnnxruntimeTelemetry } from './engine/runtime/telemetry';

/**
 * A worker thread running `bundle` when it lies in `dir` (dist/, beside the server bundle), else the TypeScript
 * `source` in `dir`, when the server itself runs from source through tsx (tests, development): a worker can load
 * that only after registering tsx's require hook.
 */
export function startWorkerThread(dir: string, bundle: string, source: string, options: WorkerOptions = {}): Worker {
  // Before any worker can load onnxruntime: only the main thread's environment reaches it.
  disableOnnxruntimeTelemetry();
  const bundled = path.join(dir, bundle);
  if (fs.existsSync(bundled)) return new Worker(bundled, options);
  const file = path.join(dir, source);
  // tsx by its resolved path: an eval'd worker resolves modules from the current folder, which may be anywhere.
  const tsx = require.resolve('tsx/cjs/api');
  return new Worker(`require(${JSON.stringify(tsx)}).register(); require(${JSON.stringify(file)});`, { ...options, eval: true });
}
