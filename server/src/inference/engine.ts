import { CancelledError } from '../engine/errors';
import { isSampling, type Answer, type GenerationSettings } from '../engine/pipeline';
import { Scheduler, type BatchKind, type BatchMember } from './scheduler';
import type { Priority } from './types';
import { WorkerHost } from './worker-host';
import { MAX_BATCH_ROWS, type ImageBytes, type PromptSpec, type WorkerError } from './worker-protocol';

export interface EngineOptions {
  log: (line: string) => void;
  /** The worker ended without being asked to; the runs it held have failed. */
  onCrash?: (message: string) => void;
  /** Runs that may wait at once (see Scheduler). */
  maxQueued: number;
  /** The most requests decoded together as rows of one batch (1: one after another). */
  maxBatch: number;
}

export interface EngineHooks {
  /** Called in each run's turn, before the worker is asked: the model is loaded (again, if a crash took it). */
  ready(signal: AbortSignal): Promise<unknown>;
  /** A run started (true) or ended. */
  busy(busy: boolean): void;
  /** The error a failed worker job becomes on this side. */
  fromWorker(error: WorkerError): Error;
}

export interface GenerateRequest {
  features: Float32Array;
  prompt: PromptSpec;
  priority: () => Priority;
  signal: AbortSignal;
  /** The text so far of the answer (or of one of its numReturnSequences sequences), after every token. */
  onToken?: (textSoFar: string, sequence: number) => void;
}

export interface EngineCounters {
  visionRuns: number;
  /** Requests generated for, counted when their batch starts. */
  generations: number;
  /** Generate jobs: a batch of requests decoded together counts once. */
  batches: number;
  tokensGenerated: number;
  cancelledGenerations: number;
}

/**
 * The model in its worker thread, as a queue: image encodings run one at a time, and generations with the same
 * settings that wait together start together, as rows of one batch, each answered as soon as its row ends. The
 * language server's service and `blip2 serve` both run the model through this.
 */
export class InferenceEngine {
  readonly host: WorkerHost;
  private readonly scheduler: Scheduler;
  private readonly maxBatch: number;
  private sampled = 0;
  readonly counters: EngineCounters = { visionRuns: 0, generations: 0, batches: 0, tokensGenerated: 0, cancelledGenerations: 0 };

  constructor(options: EngineOptions, private readonly hooks: EngineHooks) {
    this.host = new WorkerHost(options.log, options.onCrash);
    this.scheduler = new Scheduler(options.maxQueued);
    this.maxBatch = Math.max(1, Math.min(MAX_BATCH_ROWS, Math.floor(options.maxBatch)));
  }

  /** Runs waiting or running. */
  get queued(): number {
    return this.scheduler.queued;
  }

  /** An image's query features: one vision-encoder run. */
  encode(image: ImageBytes, priority: () => Priority, signal: AbortSignal): Promise<Float32Array> {
    return this.scheduler.run(priority, signal, async () => {
      await this.hooks.ready(signal);
      this.hooks.busy(true);
      this.counters.visionRuns++;
      try {
        const m = await this.host.send({ type: 'encode', image }).done.catch((e: WorkerError) => {
          throw this.hooks.fromWorker(e);
        });
        if (m.type !== 'encoded') throw new Error(`unexpected ${m.type}`);
        return m.features;
      } finally {
        this.hooks.busy(false);
      }
    });
  }

  /**
   * An answer, decoded in one batch with the other requests of the same settings that wait with it. Sampled requests
   * run alone: a seed must give the same text whatever else is asked at the time. `request.features` is handed to
   * the worker (its buffer is transferred).
   */
  generate(request: GenerateRequest, settings: GenerationSettings): Promise<Answer> {
    const key = isSampling(settings) ? `sampled ${this.sampled++}` : JSON.stringify(settings);
    const kind: BatchKind<GenerateRequest> = { key, limit: this.maxBatch, run: (members) => this.runBatch(members, settings) };
    return this.scheduler.batch<GenerateRequest, Answer>(request.priority, request.signal, kind, request);
  }

  terminate(): Promise<void> {
    return this.host.terminate();
  }

  private async runBatch(members: BatchMember<GenerateRequest>[], settings: GenerationSettings): Promise<void> {
    // The batch goes on while any of its requests still wants it.
    const batch = new AbortController();
    const stillWanted = () => {
      if (members.every((m) => m.signal.aborted)) batch.abort();
    };
    stillWanted();
    const unwatch = members.map((m) => {
      m.signal.addEventListener('abort', stillWanted);
      return () => m.signal.removeEventListener('abort', stillWanted);
    });
    try {
      await this.hooks.ready(batch.signal);
      if (batch.signal.aborted) throw new CancelledError();
      this.hooks.busy(true);
      // Idle as soon as the last row is answered, so whoever awaited it finds the engine so.
      let idle = false;
      const markIdle = () => {
        if (!idle) this.hooks.busy(false);
        idle = true;
      };
      this.counters.batches++;
      this.counters.generations += members.length;
      const answered = new Set<number>();
      const job = this.host.send(
        { type: 'generate', rows: members.map((m) => ({ features: m.item.features, prompt: m.item.prompt })), settings },
        {
          onToken: (row, text, sequence) => {
            if (answered.has(row)) return;
            // Counted as they arrive, so a cancelled run shows how far it got.
            this.counters.tokensGenerated++;
            members[row].item.onToken?.(text, sequence);
          },
          onAnswer: (row, answer) => {
            answered.add(row);
            if (answered.size === members.length) markIdle();
            if (answer.finishReason === 'cancelled') {
              this.counters.cancelledGenerations++;
              members[row].reject(new CancelledError());
            } else {
              members[row].resolve(answer);
            }
          },
        },
      );
      // A request that is cancelled ends its row at the next step; the last one stops the job.
      const cancels = members.map((m, row) => {
        const cancel = () => {
          this.host.cancelRow(job.id, row);
          if (batch.signal.aborted) this.host.cancel(job.id);
        };
        if (m.signal.aborted) cancel();
        m.signal.addEventListener('abort', cancel, { once: true });
        return () => m.signal.removeEventListener('abort', cancel);
      });
      try {
        await job.done.catch((e: WorkerError) => {
          if (e.kind === 'cancelled') this.counters.cancelledGenerations += members.filter((m, row) => m.signal.aborted && !answered.has(row)).length;
          throw this.hooks.fromWorker(e);
        });
        // Every row was answered before the job ended; one that was not is a bug, not a hang.
        for (const m of members) m.reject(new Error('The worker ended a batch without answering one of its rows.'));
      } finally {
        for (const off of cancels) off();
        markIdle();
      }
    } catch (e) {
      for (const m of members) m.reject(m.signal.aborted ? new CancelledError() : e);
    } finally {
      for (const off of unwatch) off();
    }
  }
}
