import * as crypto from 'node:crypto';
import type { CancellationToken } from 'vscode-languageserver';
import { CancelledError } from '../engine/errors';
import type { GenerationSettings } from '../engine/pipeline';
import { readImageFile } from '../engine/preprocess/image-file';
import { chatPrompt } from '../engine/preprocess/prompts';
import type { GenerationResult } from '../protocol/messages';
import type { Blip2Settings } from '../protocol/settings';
import { generationSettingsFor, type GenerationKind } from './generation-settings';
import { cacheKey, type ResultCache } from './result-cache';
import type { AskOptions, CaptionOptions, ImageSource, Priority } from './types';
import type { ImageBytes, PromptSpec } from './worker-protocol';

/** A caption or an answer as the cache keeps it. */
export interface StoredAnswer {
  text: string;
  alternatives: string[];
  model: string;
  precision: string;
  device: string;
}

/** A computation that several requests wait on: its priority, its stop, and who wants its partial text. */
export interface SharedRun {
  priority: Priority;
  controller: AbortController;
  partials: Set<(text: string) => void>;
}

interface Shared extends SharedRun {
  promise: Promise<StoredAnswer>;
  waiters: number;
}

/** What computes answers: the model here (in the worker) or a server. */
export interface AnswerSource {
  /** Names what computes in cache keys, so results of another model, precision or server stay apart. */
  modelKey(): string | Promise<string>;
  compute(image: ImageBytes, imageHash: string, prompt: PromptSpec, generation: GenerationSettings, run: SharedRun): Promise<StoredAnswer>;
}

/**
 * Captions and answers as the language features ask for them, whatever computes them: the image read once and
 * hashed, the answer from the cache, from a run already under way for the same key, or from a new run, which is
 * stopped when the last request waiting on it is cancelled.
 */
export class AnswerRequests {
  private readonly inflight = new Map<string, Shared>();
  readonly counts = { captionCacheHits: 0, sharedRequests: 0 };

  constructor(
    private readonly cache: ResultCache<StoredAnswer>,
    private readonly source: AnswerSource,
    /** The largest image file read (the blip2.localImages.maxBytes setting of the moment). */
    private readonly maxImageBytes: () => number,
  ) {}

  /** Runs under way. */
  get running(): number {
    return this.inflight.size;
  }

  /** A caption with the user's generation settings (the alternatives too when asked), or the prompt given. */
  caption(g: Blip2Settings['generation'], image: ImageSource, options: CaptionOptions, token: CancellationToken): Promise<GenerationResult> {
    const kind = options.alternatives ? 'alternatives' : 'caption';
    return this.request(kind, image, { text: options.prompt ?? g.captionPrompt }, generationSettingsFor(g, kind), options.priority, undefined, token);
  }

  /** An answer to a question about the image, after the chat's earlier turns. */
  ask(g: Blip2Settings['generation'], image: ImageSource, question: string, options: AskOptions, token: CancellationToken): Promise<GenerationResult> {
    const prompt = { question, history: options.history ?? [] };
    return this.request('answer', image, prompt, generationSettingsFor(g, 'answer'), options.priority, options.onPartial, token);
  }

  async request(
    kind: GenerationKind,
    image: ImageSource,
    prompt: PromptSpec,
    generation: GenerationSettings,
    priority: Priority,
    onPartial: ((text: string) => void) | undefined,
    token: CancellationToken,
  ): Promise<GenerationResult> {
    const started = performance.now();
    // The whole chat as asked: the worker may drop old turns to fit, the same ones for the same chat every time.
    const promptKey = 'text' in prompt ? prompt.text : chatPrompt(prompt.history, prompt.question);
    // Read once: these bytes are hashed, and the same bytes go to the model if nothing is cached for them.
    const bytes = await this.imageBytes(image);
    const imageHash = await sha256(bytes.bytes);
    const key = cacheKey(kind, await this.source.modelKey(), imageHash, promptKey, generation);
    const cached = await this.cache.getAnswer(key);
    if (cached) {
      this.counts.captionCacheHits++;
      onPartial?.(cached.text);
      return { ...cached, durationMs: 0, cached: true };
    }
    const answer = await this.share(key, priority, token, onPartial, (run) => this.source.compute(bytes, imageHash, prompt, generation, run));
    await this.cache.putAnswer(key, answer);
    return { ...answer, durationMs: performance.now() - started, cached: false };
  }

  /** Joins a computation already running for the same key, or starts one; this request's cancellation only withdraws its interest. */
  private share(
    key: string,
    priority: Priority,
    token: CancellationToken,
    onPartial: ((text: string) => void) | undefined,
    compute: (shared: SharedRun) => Promise<StoredAnswer>,
  ): Promise<StoredAnswer> {
    let shared = this.inflight.get(key);
    if (shared) {
      this.counts.sharedRequests++;
      if (priority === 'interactive') shared.priority = 'interactive';
    } else {
      const created: Shared = { promise: undefined!, waiters: 0, priority, controller: new AbortController(), partials: new Set() };
      created.promise = compute(created).finally(() => {
        if (this.inflight.get(key) === created) this.inflight.delete(key);
      });
      // A computation nobody waits for any more still settles; its rejection must not go unhandled.
      created.promise.catch(() => undefined);
      this.inflight.set(key, created);
      shared = created;
    }
    const s = shared;
    s.waiters++;
    if (onPartial) s.partials.add(onPartial);
    return new Promise<StoredAnswer>((resolve, reject) => {
      let settled = false;
      const leave = () => {
        if (onPartial) s.partials.delete(onPartial);
        sub.dispose();
      };
      const withdraw = () => {
        if (settled) return;
        settled = true;
        leave();
        if (--s.waiters === 0) {
          s.controller.abort();
          if (this.inflight.get(key) === s) this.inflight.delete(key);
        }
        reject(new CancelledError());
      };
      const sub = token.onCancellationRequested(withdraw);
      // A token cancelled before anyone read it (a request the client cancelled while it was still queued) is
      // vscode-jsonrpc's CancellationToken.Cancelled, whose event never fires: withdraw now, or never answer.
      if (token.isCancellationRequested) {
        withdraw();
        return;
      }
      s.promise.then(
        (v) => {
          if (settled) return;
          settled = true;
          leave();
          resolve(v);
        },
        (e) => {
          if (settled) return;
          settled = true;
          leave();
          reject(e);
        },
      );
    });
  }

  /** A file's bytes, read within the size limit; bytes already in memory as they are. */
  private async imageBytes(image: ImageSource): Promise<ImageBytes> {
    if (image.kind === 'bytes') return { bytes: image.bytes, name: image.name };
    const bytes = await readImageFile(image.path, { maxBytes: this.maxImageBytes(), raiseHint: RAISE_FILE_LIMIT });
    return { bytes, name: image.path };
  }
}

/** In libuv's pool (WebCrypto), so a large image is never hashed on the main thread. */
async function sha256(bytes: Uint8Array): Promise<string> {
  return Buffer.from(await crypto.subtle.digest('SHA-256', bytes)).toString('hex');
}

const RAISE_FILE_LIMIT = 'Raise blip2.localImages.maxBytes to caption it.';
