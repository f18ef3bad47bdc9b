import * as v8 from 'node:v8';
import type { Worker } from 'node:worker_threads';
import type { ModelProgress } from '../engine/open-model';
import { startWorkerThread } from '../worker-thread';
import type { Answer } from '../engine/pipeline';
import { CANCEL_SLOT, MAX_BATCH_ROWS, type FromWorker, type ToWorker, type WorkerError } from './worker-protocol';

type Pending = {
  resolve: (m: FromWorker) => void;
  reject: (e: WorkerError) => void;
  onProgress?: (p: ModelProgress) => void;
  onToken?: (row: number, textSoFar: string, sequence: number) => void;
  onAnswer?: (row: number, answer: Answer) => void;
};

type Job = ToWorker extends infer T ? (T extends { id: number } ? Omit<T, 'id'> : never) : never;

/**
 * The inference worker's JavaScript heap: what V8 gives this process's main thread (the worker's own default), set
 * explicitly because only then does running out end the worker alone, with an error the server reports, instead
 * of aborting the whole process. The model's weights and tensors live outside this heap.
 */
function inferenceHeapMb(): number {
  return Number(process.env.BLIP2_DEBUG_INFERENCE_HEAP_MB) || Math.round(v8.getHeapStatistics().heap_size_limit / (1024 * 1024));
}

/** The main thread's handle on the inference worker: numbered jobs, their progress and tokens, cancellation. */
export class WorkerHost {
  private worker?: Worker;
  private readonly cancelFlags = new Int32Array(new SharedArrayBuffer(4 * (1 + MAX_BATCH_ROWS)));
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor(
    private readonly log: (line: string) => void,
    /** The worker ended without being asked to (a crash, out of memory): the jobs it held have failed. */
    private readonly onCrash: (message: string) => void = () => undefined,
  ) {}

  get running(): boolean {
    return this.worker !== undefined;
  }

  send(job: Job, handlers: Omit<Pending, 'resolve' | 'reject'> = {}): { id: number; done: Promise<FromWorker> } {
    const worker = this.ensureWorker();
    const id = this.nextId++;
    const done = new Promise<FromWorker>((resolve, reject) => this.pending.set(id, { resolve, reject, ...handlers }));
    if (job.type === 'generate' && job.rows.length > MAX_BATCH_ROWS) throw new Error(`A batch of ${job.rows.length} rows; at most ${MAX_BATCH_ROWS}.`);
    const transfer = job.type === 'generate' ? job.rows.map((r) => r.features.buffer as ArrayBuffer) : [];
    worker.postMessage({ ...job, id } as ToWorker, transfer);
    return { id, done };
  }

  /** Ends one row of a generate job at its next step; the job's other rows go on. */
  cancelRow(id: number, row: number): void {
    Atomics.store(this.cancelFlags, CANCEL_SLOT + 1 + row, id);
  }

  cancel(id: number): void {
    Atomics.store(this.cancelFlags, CANCEL_SLOT, id);
    this.worker?.postMessage({ type: 'cancel', id } satisfies ToWorker);
  }

  /** Ends the worker and with it the model's memory; pending jobs fail as cancelled. */
  async terminate(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    this.failAll({ kind: 'cancelled', message: 'The model was unloaded.' });
    if (w) await w.terminate();
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const heapMb = inferenceHeapMb();
    const worker = startWorkerThread(__dirname, 'worker.js', 'inference-worker.ts', {
      workerData: { cancelBuffer: this.cancelFlags.buffer },
      resourceLimits: { maxOldGenerationSizeMb: heapMb },
    });
    let outOfMemory = false;
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (e: NodeJS.ErrnoException) => {
      outOfMemory ||= e.code === 'ERR_WORKER_OUT_OF_MEMORY';
      this.log(`inference worker error: ${e.stack ?? e.message}`);
    });
    worker.on('exit', (code) => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      // Only the jobs it was running fail; the next job starts a new worker (and reloads the model).
      const cause = outOfMemory ? `ran out of memory (its JavaScript heap is limited to ${heapMb} MB)` : `stopped unexpectedly (exit code ${code})`;
      const message = `The inference worker ${cause}; it is restarted for the next request.`;
      this.log(message);
      this.failAll({ kind: 'crashed', message, cause });
      this.onCrash(message);
    });
    this.worker = worker;
    return worker;
  }

  private onMessage(m: FromWorker): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    switch (m.type) {
      case 'progress':
        p.onProgress?.(m.progress);
        return;
      case 'token':
        p.onToken?.(m.row, m.textSoFar, m.sequence);
        return;
      case 'answer':
        p.onAnswer?.(m.row, m.answer);
        return;
      case 'failed':
        this.pending.delete(m.id);
        p.reject(m.error);
        return;
      default:
        this.pending.delete(m.id);
        p.resolve(m);
    }
  }

  private failAll(error: WorkerError): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(error);
  }
}
