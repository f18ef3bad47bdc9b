import type { CancellationToken } from 'vscode-languageserver';
import type { GenerationResult, InferenceCounters, ModelStatus, SetUpPlan } from '../protocol/messages';
import type { Blip2Settings } from '../protocol/settings';
import type { AskOptions, CaptionOptions, ImageSource, InferenceService, SetUpReporter } from './types';

/**
 * The engine the settings choose, swapped when `blip2.server.url` changes: the model here, or the server it names.
 * The old one is disposed (what it was computing fails as cancelled); listeners stay subscribed across the swap.
 */
export class EngineChoice implements InferenceService {
  private current: InferenceService;
  private url: string;
  private readonly listeners = new Set<(s: ModelStatus) => void>();

  constructor(
    settings: Blip2Settings,
    /** Makes the engine for settings: local without a server URL, remote with one. */
    private readonly make: (settings: Blip2Settings) => InferenceService,
  ) {
    this.url = settings.server.url;
    this.current = this.start(settings);
  }

  caption(image: ImageSource, options: CaptionOptions, token: CancellationToken): Promise<GenerationResult> {
    return this.current.caption(image, options, token);
  }

  ask(image: ImageSource, question: string, options: AskOptions, token: CancellationToken): Promise<GenerationResult> {
    return this.current.ask(image, question, options, token);
  }

  planSetUp(model: string | undefined, token: CancellationToken): Promise<SetUpPlan> {
    return this.current.planSetUp(model, token);
  }

  setUp(model: string | undefined, reporter: SetUpReporter, token: CancellationToken): Promise<ModelStatus> {
    return this.current.setUp(model, reporter, token);
  }

  status(): ModelStatus {
    return this.current.status();
  }

  onStatusChange(listener: (status: ModelStatus) => void): { dispose(): void } {
    this.listeners.add(listener);
    return { dispose: () => this.listeners.delete(listener) };
  }

  counters(): InferenceCounters {
    return this.current.counters();
  }

  updateSettings(settings: Blip2Settings): void {
    if (settings.server.url === this.url) {
      this.current.updateSettings(settings);
      return;
    }
    const old = this.current;
    this.url = settings.server.url;
    this.current = this.start(settings);
    void old.dispose();
    this.emit(this.current.status());
  }

  dispose(): Promise<void> {
    this.listeners.clear();
    return this.current.dispose();
  }

  private start(settings: Blip2Settings): InferenceService {
    const service = this.make(settings);
    service.onStatusChange((status) => {
      if (this.current === service) this.emit(status);
    });
    return service;
  }

  private emit(status: ModelStatus): void {
    for (const l of this.listeners) l(status);
  }
}
