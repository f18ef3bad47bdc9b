import * as crypto from 'node:crypto';
import { CancelledError, UserError } from '../engine/errors';
import type { ModelProgress } from '../engine/open-model';
import type { Answer, GenerationSettings } from '../engine/pipeline';
import { InferenceEngine, type EngineCounters } from '../inference/engine';
import { cacheKey, ResultCache } from '../inference/result-cache';
import type { EngineSettings, LoadedModel, PromptSpec, WorkerError } from '../inference/worker-protocol';

export interface ServeEngineOptions {
  settings: EngineSettings;
  maxBatch: number;
  maxQueued: number;
  log: (line: string) => void;
}

export interface AnswerOptions {
  signal: AbortSignal;
  onToken?: (textSoFar: string, sequence: number) => void;
}

/**
 * The model behind blip2 serve: loaded once at start, in the inference worker, with the language server's queue
 * and batching (InferenceEngine). Image encodings are kept in memory by the image's content, so a follow-up
 * question about an image skips the vision encoder. A worker that dies loads the model again for the next request.
 */
export class ServeEngine {
  private readonly engine: InferenceEngine;
  private readonly features = new ResultCache<never>(undefined, 0);
  private reloading?: Promise<LoadedModel>;
  private crashed = false;
  visionCacheHits = 0;

  /** What was loaded, as the worker reported it. */
  model!: LoadedModel;

  private constructor(private readonly options: ServeEngineOptions) {
    this.engine = new InferenceEngine(
      {
        log: options.log,
        onCrash: (message) => {
          this.crashed = true;
          options.log(message);
        },
        maxQueued: options.maxQueued,
        maxBatch: options.maxBatch,
      },
      {
        ready: () => this.ready(),
        busy: () => undefined,
        fromWorker: (e) => fromWorker(e, options.log),
      },
    );
  }

  /** Loads the model (converting it first if needed, as `blip2 convert` would). */
  static async open(options: ServeEngineOptions, onProgress?: (p: ModelProgress) => void, signal?: AbortSignal): Promise<ServeEngine> {
    const engine = new ServeEngine(options);
    try {
      engine.model = await engine.load(onProgress, signal);
      return engine;
    } catch (e) {
      await engine.dispose();
      throw e;
    }
  }

  get counters(): EngineCounters {
    return this.engine.counters;
  }

  /** Runs waiting or running. */
  get queued(): number {
    return this.engine.queued;
  }

  /** Whether the model can answer now (false while a crashed worker's model loads again). */
  get healthy(): boolean {
    return !this.crashed && this.reloading === undefined;
  }

  async answer(image: Uint8Array, prompt: PromptSpec, settings: GenerationSettings, options: AnswerOptions): Promise<Answer> {
    const hash = crypto.createHash('sha256').update(image).digest('hex');
    const key = cacheKey('vision', hash);
    let features = await this.features.getFeatures(key);
    if (features) this.visionCacheHits++;
    else {
      features = await this.engine.encode({ bytes: image, name: 'the image' }, () => 'interactive', options.signal);
      await this.features.putFeatures(key, features);
    }
    return this.engine.generate({ features, prompt, priority: () => 'interactive', signal: options.signal, onToken: options.onToken }, settings);
  }

  dispose(): Promise<void> {
    return this.engine.terminate();
  }

  private load(onProgress?: (p: ModelProgress) => void, signal?: AbortSignal): Promise<LoadedModel> {
    const job = this.engine.host.send({ type: 'load', settings: this.options.settings }, { onProgress });
    const cancel = () => this.engine.host.cancel(job.id);
    signal?.addEventListener('abort', cancel, { once: true });
    return job.done.finally(() => signal?.removeEventListener('abort', cancel)).then(
      (m) => {
        if (m.type !== 'loaded') throw new Error(`unexpected ${m.type}`);
        return m.model;
      },
      (e: WorkerError) => {
        throw fromWorker(e, this.options.log);
      },
    );
  }

  /** The model, loaded again if the worker died since. */
  private async ready(): Promise<void> {
    if (!this.crashed) return;
    this.reloading ??= this.load().finally(() => {
      this.reloading = undefined;
    });
    await this.reloading;
    this.crashed = false;
  }
}

function fromWorker(e: WorkerError, log: (line: string) => void): Error {
  if (e.kind === 'cancelled') return new CancelledError();
  if (e.kind === 'user' || e.kind === 'noModel' || e.kind === 'damaged') return new UserError(e.message);
  if (e.kind === 'crashed') return Object.assign(new Error(e.message), { crashed: true });
  log(`inference failed: ${e.message}`);
  return new Error(e.message.split('\n')[0]);
}
