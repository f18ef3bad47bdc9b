import type { CancellationToken } from 'vscode-languageserver-protocol';
import type { AskOptions, CaptionOptions, ImageSource, InferenceService, SetUpReporter } from '../../server/src/inference/types';
import type { GenerationResult, InferenceCounters, ModelState, ModelStatus, SetUpPlan } from '../../server/src/protocol/messages';
import type { Blip2Settings } from '../../server/src/protocol/settings';

export interface FakeCall {
  image: string;
  priority: string;
  token: CancellationToken;
}

/**
 * An InferenceService for feature tests: captions come from a table keyed by file name, and `hold()` keeps
 * every run waiting until `release()`, so tests can look at what happens meanwhile.
 */
export class FakeInference implements InferenceService {
  readonly calls: FakeCall[] = [];
  /** Runs whose token was cancelled before they finished. */
  cancelled = 0;
  state: ModelState = 'ready';
  failure: unknown;
  alternatives: string[] = [];
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;

  constructor(private readonly captions: Record<string, string>) {}

  hold(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }

  release(): void {
    this.open?.();
    this.gate = undefined;
  }

  async caption(image: ImageSource, options: CaptionOptions, token: CancellationToken): Promise<GenerationResult> {
    const name = nameOf(image);
    this.calls.push({ image: name, priority: options.priority, token });
    const gate = this.gate;
    if (gate) {
      await new Promise<void>((resolve, reject) => {
        const sub = token.onCancellationRequested(() => {
          sub.dispose();
          this.cancelled++;
          reject(Object.assign(new Error('Cancelled.'), { name: 'CancelledError' }));
        });
        void gate.then(() => {
          sub.dispose();
          resolve();
        });
      });
    }
    if (this.failure) throw this.failure;
    const text = this.captions[name];
    if (text === undefined) throw new Error(`no caption for ${name}`);
    return { text, alternatives: this.alternatives, model: 'fake-model', precision: 'fp32', device: 'cpu', durationMs: 12, cached: false };
  }

  async ask(image: ImageSource, question: string, options: AskOptions, token: CancellationToken): Promise<GenerationResult> {
    const answer = `${question} → ${await this.caption(image, { priority: options.priority }, token).then((r) => r.text)}`;
    options.onPartial?.(answer);
    return { text: answer, alternatives: [], model: 'fake-model', precision: 'fp32', device: 'cpu', durationMs: 1, cached: false };
  }

  async planSetUp(): Promise<SetUpPlan> {
    throw new Error('the fake inference service has no model to set up');
  }

  async setUp(_model: string | undefined, _reporter: SetUpReporter, _token: CancellationToken): Promise<ModelStatus> {
    return this.status();
  }

  status(): ModelStatus {
    return { state: this.state, model: 'fake-model', queued: 0, cache: { entries: 0, bytes: 0 }, ...(this.state === 'noModel' ? { message: 'Model not found: fake-model' } : {}) };
  }

  onStatusChange(): { dispose(): void } {
    return { dispose: () => undefined };
  }

  counters(): InferenceCounters {
    return { visionRuns: 0, generations: 0, batches: 0, tokensGenerated: 0, cancelledGenerations: 0, captionCacheHits: 0, visionCacheHits: 0, sharedRequests: 0 };
  }

  updateSettings(_settings: Blip2Settings): void {}

  async dispose(): Promise<void> {}
}

function nameOf(image: ImageSource): string {
  return image.kind === 'file' ? image.path.split(/[\\/]/).pop()! : image.name;
}
