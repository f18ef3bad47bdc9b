import type { CancellationToken } from 'vscode-languageserver';
import { CancelledError, isCancelled, UserError } from '../engine/errors';
import type { ModelProgress } from '../engine/open-model';
import { setUpPlan } from './setup-plan';
import { describeCost } from '../engine/store/setup-cost';
import type { GenerationSettings } from '../engine/pipeline';
import type { GenerationResult, InferenceCounters, ModelStatus, SetUpPlan } from '../protocol/messages';
import { RELOAD_SETTINGS, type Blip2Settings } from '../protocol/settings';
import { AnswerRequests, type SharedRun, type StoredAnswer } from './answer-requests';
import { cacheKey, ResultCache } from './result-cache';
import { EngineChoice } from './engine-choice';
import { InferenceEngine } from './engine';
import { RemoteInferenceService } from './remote/remote-service';
import { DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUED, type AskOptions, type CaptionOptions, type ImageSource, type InferenceService, type SetUpReporter } from './types';
import type { EngineSettings, ImageBytes, LoadedModel, PromptSpec, WorkerError } from './worker-protocol';


export interface InferenceServiceOptions {
  settings: Blip2Settings;
  /** Folder for the disk cache; memory only when absent. */
  cacheDir?: string;
  log?: (line: string) => void;
  /** Model runs that may wait at once (see Scheduler); DEFAULT_MAX_QUEUED unless given. */
  maxQueued?: number;
  /** Captions and answers decoded together as one batch; DEFAULT_MAX_BATCH unless given (1: one after another). */
  maxBatch?: number;
}


/**
 * The engine of the language features and `blip2 fix`: the model here, in a worker thread, or the BLIP-2 server
 * `settings.server.url` names; a change of that setting swaps one for the other.
 */
export function createInferenceService(options: InferenceServiceOptions): InferenceService {
  return new EngineChoice(options.settings, (settings) =>
    settings.server.url ? new RemoteInferenceService({ ...options, settings }) : new WorkerInferenceService({ ...options, settings }),
  );
}

class WorkerInferenceService implements InferenceService {
  private settings: Blip2Settings;
  private readonly log: (line: string) => void;
  private readonly engine: InferenceEngine;
  private readonly cache: ResultCache<StoredAnswer>;
  private readonly requests: AnswerRequests;
  private readonly listeners = new Set<(s: ModelStatus) => void>();
  private loading?: Promise<LoadedModel>;
  private loaded?: LoadedModel;
  /** A load that ended the worker (out of memory): said again to every request until settings change or set-up. */
  private loadCrash?: WorkerError;
  private idleTimer?: NodeJS.Timeout;
  private current: Omit<ModelStatus, 'queued' | 'cache' | 'memoryBytes'>;
  private visionCacheHits = 0;

  constructor(options: InferenceServiceOptions) {
    this.settings = options.settings;
    this.log = options.log ?? (() => undefined);
    this.engine = new InferenceEngine(
      { log: this.log, onCrash: (message) => this.workerCrashed(message), maxQueued: options.maxQueued ?? DEFAULT_MAX_QUEUED, maxBatch: options.maxBatch ?? DEFAULT_MAX_BATCH },
      {
        // The worker may have crashed (and taken the model with it) while a run waited.
        ready: (signal) => this.load({ allowDownload: false, signal }),
        busy: (busy) => this.setBusy(busy),
        fromWorker: (e) => this.fromWorker(e),
      },
    );
    this.cache = new ResultCache<StoredAnswer>(options.cacheDir, options.settings.cache.maxMegabytes * 1024 * 1024);
    this.requests = new AnswerRequests(this.cache, { modelKey: () => this.modelKey(), compute: (...a) => this.answer(...a) }, () => this.settings.localImages.maxBytes);
    this.current = { state: 'unloaded', model: options.settings.model };
  }

  // ---- InferenceService ----

  caption(image: ImageSource, options: CaptionOptions, token: CancellationToken): Promise<GenerationResult> {
    return this.requests.caption(this.settings.generation, image, options, token);
  }

  ask(image: ImageSource, question: string, options: AskOptions, token: CancellationToken): Promise<GenerationResult> {
    return this.requests.ask(this.settings.generation, image, question, options, token);
  }


  async planSetUp(model: string | undefined, token: CancellationToken): Promise<SetUpPlan> {
    const controller = new AbortController();
    const sub = token.onCancellationRequested(() => controller.abort());
    try {
      const job = this.engine.host.send({ type: 'plan', settings: { ...this.engineSettings(true), model: model ?? this.settings.model } });
      const m = await job.done.catch((e: WorkerError) => {
        throw this.fromWorker(e);
      });
      if (m.type !== 'planned') throw new Error(`unexpected ${m.type}`);
      return setUpPlan(m.cost);
    } finally {
      sub.dispose();
    }
  }

  async setUp(model: string | undefined, reporter: SetUpReporter, token: CancellationToken): Promise<ModelStatus> {
    if (model !== undefined && model !== this.settings.model) {
      this.settings = { ...this.settings, model };
      await this.unload('unloaded');
    }
    const controller = new AbortController();
    const sub = token.onCancellationRequested(() => controller.abort());
    if (token.isCancellationRequested) controller.abort();
    try {
      await this.load({ allowDownload: true, signal: controller.signal, reporter });
    } catch (e) {
      if (!isCancelled(e)) throw e;
    } finally {
      sub.dispose();
    }
    return this.status();
  }

  status(): ModelStatus {
    return {
      ...this.current,
      memoryBytes: process.memoryUsage().rss,
      queued: this.engine.queued,
      cache: this.cache.stats(),
    };
  }

  onStatusChange(listener: (status: ModelStatus) => void): { dispose(): void } {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  }

  counters(): InferenceCounters {
    return { ...this.engine.counters, ...this.requests.counts, visionCacheHits: this.visionCacheHits };
  }

  updateSettings(settings: Blip2Settings): void {
    const old = this.settings;
    this.settings = settings;
    this.cache.setMaxBytes(settings.cache.maxMegabytes * 1024 * 1024);
    const reload = RELOAD_SETTINGS.some((k) => old[k] !== settings[k]) || old.offline !== settings.offline;
    if (reload) void this.unload('unloaded');
    else this.armIdleTimer();
  }

  async dispose(): Promise<void> {
    clearTimeout(this.idleTimer);
    await this.engine.terminate();
    this.listeners.clear();
  }

  // ---- internals ----

  private async answer(image: ImageBytes, imageHash: string, prompt: PromptSpec, generation: GenerationSettings, shared: SharedRun): Promise<StoredAnswer> {
    const signal = shared.controller.signal;
    await this.load({ allowDownload: false, signal });
    const features = await this.features(image, imageHash, shared);
    const answer = await this.engine.generate(
      { features, prompt, priority: () => shared.priority, signal, onToken: (text, sequence) => sequence === 0 && shared.partials.forEach((p) => p(text)) },
      generation,
    );
    // What computed it; a model unloaded since (a settings change) is named as the settings name it.
    const model = this.loaded ?? { source: this.settings.model, precision: this.settings.precision, device: this.settings.device };
    return { text: answer.text, alternatives: answer.alternatives.map((a) => a.text), model: model.source, precision: model.precision, device: model.device };
  }

  /** The image's query features: from the cache, or one vision-encoder run. */
  private async features(image: ImageBytes, imageHash: string, shared: SharedRun): Promise<Float32Array> {
    const key = cacheKey('vision', this.modelKey(), imageHash);
    const cached = await this.cache.getFeatures(key);
    if (cached) {
      this.visionCacheHits++;
      return cached;
    }
    const encoded = await this.engine.encode(image, () => shared.priority, shared.controller.signal);
    await this.cache.putFeatures(key, encoded);
    return encoded;
  }

  /**
   * Loads the model once for everyone waiting. Requests load without touching the network (a hover must never start
   * a 15 GB download); only set-up, which the user asked for, may download.
   */
  private load(opts: { allowDownload: boolean; signal: AbortSignal; reporter?: SetUpReporter }): Promise<LoadedModel> {
    if (this.loaded && this.engine.host.running) return Promise.resolve(this.loaded);
    if (this.loading && !opts.allowDownload) return this.loading;
    if (this.loadCrash && !opts.allowDownload) return Promise.reject(this.fromWorker(this.loadCrash));
    this.loadCrash = undefined;
    const settings = this.engineSettings(opts.allowDownload);
    this.setState({ state: 'loading', model: settings.model });
    const job = this.engine.host.send({ type: 'load', settings }, { onProgress: (p) => this.onLoadProgress(p, opts.reporter) });
    const cancel = () => this.engine.host.cancel(job.id);
    opts.signal.addEventListener('abort', cancel, { once: true });
    const loading = job.done
      .then((m) => {
        if (m.type !== 'loaded') throw new Error(`unexpected ${m.type}`);
        this.loaded = m.model;
        this.setState({
          state: 'ready',
          model: settings.model,
          precision: m.model.precision,
          device: m.model.device,
          fallbackReason: m.model.fallbackReason,
          ...(m.model.loadNotes.length > 0 && { notes: m.model.loadNotes }),
        });
        this.log(`model loaded from ${m.model.dir} (${m.model.precision}, ${m.model.device}) in ${Math.round(m.model.loadMs)} ms`);
        for (const note of m.model.loadNotes) this.log(note);
        this.armIdleTimer();
        return m.model;
      })
      .catch((e: WorkerError | Error) => {
        let error = 'kind' in e ? e : ({ kind: 'internal', message: e.message } as WorkerError);
        if (error.kind === 'noModel' && !opts.allowDownload && !this.settings.offline) {
          // Requests never download, so the engine's "offline" wording would mislead; say what the user can do.
          error = {
            kind: 'noModel',
            message: `The model ${settings.model} is not on this machine yet. Set it up once (it is downloaded and converted locally), or point the model setting at a local checkpoint folder.`,
          };
        }
        if (error.kind === 'crashed') {
          // Loading it again would end the next worker too, after as long and as much memory: not until asked.
          error = {
            kind: 'crashed',
            message: `The model ${settings.model} could not be loaded: the inference worker ${error.cause ?? 'stopped'} while loading it. It is tried again when a model setting changes or the model is set up again.`,
          };
          this.loadCrash = error;
        }
        // A damaged model is as good as none: set-up, which the client then offers, converts it again.
        if (error.kind === 'noModel' || error.kind === 'damaged') this.setState({ state: 'noModel', model: settings.model, message: error.message });
        else if (error.kind === 'cancelled') this.setState({ state: 'unloaded', model: settings.model, message: 'Set-up was cancelled.' });
        else this.setState({ state: 'error', model: settings.model, message: firstLine(error.message) });
        throw this.fromWorker(error);
      })
      .finally(() => {
        opts.signal.removeEventListener('abort', cancel);
        if (this.loading === loading) this.loading = undefined;
      });
    loading.catch(() => undefined);
    this.loading = loading;
    return loading;
  }

  /** What the worker needs to find, download, convert and load the model; only set-up may download. */
  private engineSettings(allowDownload: boolean): EngineSettings {
    return {
      model: this.settings.model,
      precision: this.settings.precision,
      device: this.settings.device,
      threads: this.settings.threads,
      store: this.settings.modelStore || undefined,
      offline: this.settings.offline || !allowDownload,
      repair: allowDownload,
      keepSource: this.settings.keepSource,
    };
  }

  private onLoadProgress(p: ModelProgress, reporter?: SetUpReporter): void {
    if (p.stage === 'cost') {
      if (p.cost.kind === 'ready') return;
      this.log(describeCost(p.cost));
      reporter?.cost?.(setUpPlan(p.cost));
    } else if (p.stage === 'download') {
      const fraction = p.total ? p.bytes / p.total : undefined;
      this.setState({ ...this.current, state: 'downloading', progress: fraction });
      reporter?.report(`Downloading ${p.file}`, fraction);
    } else if (p.stage === 'convert') {
      const fraction = p.total ? p.done / p.total : undefined;
      this.setState({ ...this.current, state: 'converting', progress: fraction });
      reporter?.report(p.phase === 'download' ? 'Downloading and converting the model' : 'Converting the checkpoint', fraction);
    } else {
      this.setState({ ...this.current, state: 'loading', progress: undefined });
      reporter?.report('Loading the model');
    }
  }

  private async unload(state: 'unloaded'): Promise<void> {
    clearTimeout(this.idleTimer);
    this.loaded = undefined;
    this.loading = undefined;
    this.loadCrash = undefined;
    await this.engine.terminate();
    // A request or set-up may have started the next load while the old worker ended: its status is the true one.
    if (this.loading || this.loaded) return;
    this.setState({ state, model: this.settings.model });
  }

  private armIdleTimer(): void {
    clearTimeout(this.idleTimer);
    const minutes = this.settings.unloadAfterMinutes;
    if (!this.loaded || minutes <= 0) return;
    this.idleTimer = setTimeout(() => {
      if (this.engine.queued === 0) void this.unload('unloaded');
      else this.armIdleTimer();
    }, minutes * 60_000);
    this.idleTimer.unref();
  }

  private setBusy(busy: boolean): void {
    if (!this.loaded) return;
    this.setState({ ...this.current, state: busy ? 'busy' : 'ready' });
    if (!busy) this.armIdleTimer();
  }

  private setState(next: Omit<ModelStatus, 'queued' | 'cache' | 'memoryBytes'>): void {
    this.current = next;
    const status = this.status();
    for (const l of this.listeners) l(status);
  }

  private fromWorker(e: WorkerError): Error {
    if (e.kind === 'cancelled') return new CancelledError();
    // The kind survives the thread boundary so features can tell "no model" from any other sentence.
    if (e.kind === 'damaged' && this.loaded) {
      // Found while generating (non-finite scores): the loaded model cannot be trusted any more.
      this.loaded = undefined;
      void this.engine.terminate();
      this.setState({ state: 'noModel', model: this.settings.model, message: e.message });
    }
    if (e.kind === 'user' || e.kind === 'noModel' || e.kind === 'damaged' || e.kind === 'crashed') {
      return Object.assign(new UserError(e.message), { kind: e.kind });
    }
    this.log(`inference failed: ${e.message}`);
    return new Error(firstLine(e.message));
  }

  /** The worker died: whatever it was running has failed; the model loads again for the next run. */
  private workerCrashed(message: string): void {
    this.loaded = undefined;
    this.loading = undefined;
    this.setState({ state: 'unloaded', model: this.settings.model, message });
  }

  /** Caches are keyed by what the settings name, so they are valid across restarts before the model loads. */
  private modelKey(): string {
    return `${this.settings.model}|${this.settings.precision}|${this.settings.device}`;
  }

}

function firstLine(s: string): string {
  return s.split('\n')[0];
}
