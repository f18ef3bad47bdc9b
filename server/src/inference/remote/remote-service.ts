import type { CancellationToken } from 'vscode-languageserver';
import { isCancelled, UserError } from '../../engine/errors';
import type { GenerationSettings } from '../../engine/pipeline';
import type { GenerationResult, InferenceCounters, ModelStatus, SetUpPlan } from '../../protocol/messages';
import { BLIP2_SERVE_OWNER, type ModelCard } from '../../protocol/openai-chat';
import type { Blip2Settings } from '../../protocol/settings';
import { AnswerRequests, type SharedRun, type StoredAnswer } from '../answer-requests';
import { ResultCache } from '../result-cache';
import type { AskOptions, CaptionOptions, ImageSource, InferenceService, SetUpReporter } from '../types';
import type { ImageBytes, PromptSpec } from '../worker-protocol';
import { answerText, chatRequestFor } from './chat-request';
import { imageDataUrl } from './image-data-url';
import { OpenAiChatClient, RemoteServerError } from './openai-client';
import { serverUrl } from './server-url';

export interface RemoteServiceOptions {
  settings: Blip2Settings;
  cacheDir?: string;
  log?: (line: string) => void;
  /** The server's key: BLIP2_API_KEY of this process unless given. Never logged, never cached, never in a message. */
  apiKey?: string;
  /** How long the server may stay silent before a request fails. */
  timeoutMs?: number;
}

/** A server that says nothing for this long has failed: a caption on a GPU takes a fraction of a second. */
const DEFAULT_TIMEOUT_MS = 120_000;

/**
 * The language features' engine when `blip2.server.url` names a BLIP-2 server: every caption and answer is one
 * chat completion request to that server, with the image's bytes in it (and to no other host); results are cached
 * under the server and its model, apart from the local model's. A failure is a sentence naming the server;
 * nothing is ever computed here instead.
 */
export class RemoteInferenceService implements InferenceService {
  private settings: Blip2Settings;
  private readonly log: (line: string) => void;
  private readonly cache: ResultCache<StoredAnswer>;
  private readonly requests: AnswerRequests;
  private readonly client?: OpenAiChatClient;
  private readonly origin: string;
  private readonly listeners = new Set<(s: ModelStatus) => void>();
  private current: Omit<ModelStatus, 'queued' | 'cache' | 'memoryBytes'>;
  private model?: Promise<ModelCard>;
  private readonly count = { generations: 0, tokensGenerated: 0, cancelledGenerations: 0 };

  constructor(options: RemoteServiceOptions) {
    this.settings = options.settings;
    this.log = options.log ?? (() => undefined);
    this.cache = new ResultCache<StoredAnswer>(options.cacheDir, options.settings.cache.maxMegabytes * 1024 * 1024);
    this.requests = new AnswerRequests(this.cache, { modelKey: () => this.modelKey(), compute: (...a) => this.answer(...a) }, () => this.settings.localImages.maxBytes);
    let base: string | undefined;
    let problem: string | undefined;
    try {
      base = serverUrl(options.settings.server.url);
    } catch (e) {
      problem = (e as UserError).line;
    }
    this.origin = base ? new URL(base).origin : options.settings.server.url;
    if (base) this.client = new OpenAiChatClient({ baseUrl: base, apiKey: options.apiKey ?? (process.env.BLIP2_API_KEY || undefined), timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS });
    this.current = problem
      ? { state: 'error', model: '', server: this.origin, message: `blip2.server.url: ${problem}` }
      : { state: 'loading', model: '', server: this.origin, message: `Connecting to the BLIP-2 server at ${this.origin}…` };
    if (this.client) void this.servedModel().catch(() => undefined);
  }

  caption(image: ImageSource, options: CaptionOptions, token: CancellationToken): Promise<GenerationResult> {
    return this.requests.caption(this.settings.generation, image, options, token);
  }

  ask(image: ImageSource, question: string, options: AskOptions, token: CancellationToken): Promise<GenerationResult> {
    return this.requests.ask(this.settings.generation, image, question, options, token);
  }


  /** Nothing is downloaded or stored here: the server has the model. */
  async planSetUp(): Promise<SetUpPlan> {
    const model = await this.servedModel().then((card) => card.id, () => this.current.model);
    return {
      model,
      precision: '',
      kind: 'ready',
      downloadBytes: 0,
      peakDiskBytes: 0,
      finalDiskBytes: 0,
      storeDir: '',
      message: `The BLIP-2 server at ${this.origin} computes: nothing is downloaded or stored on this machine.`,
    };
  }

  /** Nothing to download or convert: set-up asks the server again which model it serves. */
  async setUp(_model: string | undefined, reporter: SetUpReporter): Promise<ModelStatus> {
    reporter.report(`Connecting to ${this.origin}`);
    this.model = undefined;
    await this.servedModel().catch(() => undefined);
    return this.status();
  }

  status(): ModelStatus {
    return { ...this.current, memoryBytes: process.memoryUsage().rss, queued: this.requests.running, cache: this.cache.stats() };
  }

  onStatusChange(listener: (status: ModelStatus) => void): { dispose(): void } {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  }

  counters(): InferenceCounters {
    // Whether the server batched the requests is its own business: each counts as one here.
    return { visionRuns: 0, visionCacheHits: 0, batches: this.count.generations, ...this.count, ...this.requests.counts };
  }

  /** The URL itself is not changed here: a new one makes a new service (see createInferenceService). */
  updateSettings(settings: Blip2Settings): void {
    this.settings = settings;
    this.cache.setMaxBytes(settings.cache.maxMegabytes * 1024 * 1024);
  }

  async dispose(): Promise<void> {
    this.listeners.clear();
  }

  // ---- internals ----

  /** The server's BLIP-2 model, asked once (again after a failure). */
  private servedModel(): Promise<ModelCard> {
    if (!this.client) return Promise.reject(new UserError(this.current.message ?? 'No server.'));
    if (!this.model) {
      const asking = this.client.blip2Model();
      this.model = asking;
      asking.then(
        (card) => this.setState({ state: 'ready', model: card.id, server: this.origin }),
        (e: unknown) => {
          if (this.model === asking) this.model = undefined;
          this.failed(e);
        },
      );
    }
    return this.model;
  }

  private async answer(image: ImageBytes, _imageHash: string, prompt: PromptSpec, generation: GenerationSettings, run: SharedRun): Promise<StoredAnswer> {
    const signal = run.controller.signal;
    try {
      const card = await this.servedModel();
      const ours = card.owned_by === BLIP2_SERVE_OWNER;
      const request = chatRequestFor(await imageDataUrl(image.bytes), 'text' in prompt ? { caption: prompt.text } : prompt, generation, card.id);
      this.count.generations++;
      this.setState({ ...this.current, state: 'busy' });
      const completion = await this.client!.complete(request, {
        signal,
        onText: (index, text) => {
          if (index !== 0) return;
          this.count.tokensGenerated++;
          const shown = text.split('\n')[0].trim();
          run.partials.forEach((p) => p(shown));
        },
      });
      const texts = completion.choices.map((c) => answerText(c.text, generation.noRepeatNgramSize, ours));
      const kept = texts.slice(0, generation.numReturnSequences ?? 1);
      this.setState({ state: 'ready', model: card.id, server: this.origin });
      return { text: kept[0] ?? '', alternatives: kept.slice(1), model: card.id, precision: '', device: new URL(this.origin).host };
    } catch (e) {
      if (isCancelled(e)) {
        this.count.cancelledGenerations++;
        if (this.current.state === 'busy') this.setState({ ...this.current, state: 'ready' });
        throw e;
      }
      this.failed(e);
      throw e;
    }
  }

  /** A failure of the server shows in the status (the client offers "Use the local model" from it) and the log. */
  private failed(e: unknown): void {
    const message = e instanceof UserError ? e.line : `The BLIP-2 server at ${this.origin} failed: ${(e as Error).message}`;
    this.log(message);
    if (e instanceof RemoteServerError || !(e instanceof UserError)) this.setState({ state: 'error', model: this.current.model, server: this.origin, message });
  }

  private setState(next: Omit<ModelStatus, 'queued' | 'cache' | 'memoryBytes'>): void {
    this.current = next;
    const status = this.status();
    for (const l of this.listeners) l(status);
  }

  /** Results of this server's model, apart from the local model's and from other servers'. */
  private async modelKey(): Promise<string> {
    try {
      return `server|${this.origin}|${(await this.servedModel()).id}`;
    } catch (e) {
      // Asked again at every request until the server answers: its failure is this request's.
      this.model = undefined;
      throw e;
    }
  }
}
