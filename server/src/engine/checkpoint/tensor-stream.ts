/**
 * A checkpoint's tensors as its bytes arrive, read in file order by a thread of their own (stream-worker.ts) from
 * disk or from the Hub, so the download and the SHA-256 of each file run on one core while the conversion computes
 * on the other. Files are read in groups (one Range request each on the Hub, tens to hundreds of megabytes); after
 * each group the worker reports the file's hash state, which is what a conversion saves to resume from there.
 * The worker runs ahead by at most `budgetBytes` of tensors the caller has not acknowledged.
 */
import type { Worker } from 'node:worker_threads';
import { startWorkerThread } from '../../worker-thread';
import { CancelledError, fromThreadError, type ThreadError } from '../errors';
import type { HubFileTarget, RangeCounters } from '../store/hub-ranges';

export type StreamLocation = { kind: 'local'; path: string } | ({ kind: 'hub' } & HubFileTarget);

export interface StreamFile {
  name: string;
  size: number;
  location: StreamLocation;
}

export interface StreamTensor {
  name: string;
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

/** A run of one file's bytes read in one request, and the tensors that lie inside it, in offset order. */
export interface StreamGroup {
  file: number;
  start: number;
  end: number;
  tensors: StreamTensor[];
}

export interface StreamRequest {
  files: StreamFile[];
  groups: StreamGroup[];
  /** The first group to read. */
  from: number;
  /** The hash state of groups[from]'s file after its bytes before groups[from].start (absent at a file's start). */
  hashState?: string;
  budgetBytes: number;
  /** How many times a dropped range is resumed, in a row, before the download gives up. */
  retries: number;
}

export type StreamEvent =
  | { type: 'tensor'; name: string; bytes: Uint8Array }
  /** Group `index` is complete; `hashState` is its file's SHA-256 state after it (base64). */
  | { type: 'group'; index: number; hashState: string }
  | { type: 'file'; file: number; sha256: string }
  | { type: 'progress'; counters: RangeCounters };

export type FromStreamWorker =
  | { type: 'tensor'; name: string; bytes: ArrayBuffer }
  | { type: 'group'; index: number; hashState: string }
  | { type: 'file'; file: number; sha256: string }
  | { type: 'progress'; counters: RangeCounters }
  | { type: 'end'; counters: RangeCounters }
  | { type: 'failed'; error: ThreadError };

export type ToStreamWorker = { type: 'start'; request: StreamRequest } | { type: 'ack'; bytes: number };

/** Reads a stream request on its own thread; iterate it, and acknowledge each tensor once it has been used. */
export class TensorStream implements AsyncIterable<StreamEvent> {
  private readonly worker: Worker;
  private readonly queue: FromStreamWorker[] = [];
  private wake: (() => void) | undefined;
  private failure: Error | undefined;
  private finished = false;
  private closed = false;
  counters: RangeCounters = { resolves: 0, ranges: 0, bytes: 0 };

  constructor(request: StreamRequest) {
    this.worker = startWorkerThread(__dirname, 'stream-worker.js', 'stream-worker.ts');
    this.worker.on('message', (m: FromStreamWorker) => this.push(m));
    this.worker.on('error', (e) => {
      this.failure ??= e;
      this.notify();
    });
    this.worker.on('exit', (code) => {
      if (!this.finished && !this.closed) this.failure ??= new Error(`the checkpoint reader thread stopped (exit code ${code})`);
      this.notify();
    });
    this.worker.postMessage({ type: 'start', request } satisfies ToStreamWorker);
  }

  private push(m: FromStreamWorker): void {
    if (m.type === 'failed') this.failure ??= fromThreadError(m.error);
    else this.queue.push(m);
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** The tensor's bytes are no longer needed by the reader's budget (the caller may still hold them). */
  ack(bytes: number): void {
    this.worker.postMessage({ type: 'ack', bytes } satisfies ToStreamWorker);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamEvent> {
    try {
      for (;;) {
        const m = this.queue.shift();
        if (!m) {
          if (this.failure) throw this.failure;
          // Closed from outside (a cancel) before the end: nothing more will come.
          if (this.closed) throw new CancelledError();
          await new Promise<void>((resolve) => (this.wake = resolve));
          continue;
        }
        if (m.type === 'end') {
          this.counters = m.counters;
          this.finished = true;
          return;
        }
        if (m.type === 'progress') this.counters = m.counters;
        if (m.type === 'tensor') yield { type: 'tensor', name: m.name, bytes: new Uint8Array(m.bytes) };
        else if (m.type !== 'failed') yield m;
      }
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.notify();
    await this.worker.terminate();
  }
}
