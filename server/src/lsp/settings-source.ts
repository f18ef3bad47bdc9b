import type { Blip2Settings } from '../protocol/settings';
import type { LspClient } from './lsp-client';
import { normalizeSettings } from './normalize-settings';

/**
 * The `blip2` settings: what the client answers to `workspace/configuration` (per document, since VS Code
 * settings can differ per folder), over `initializationOptions.settings`, over the defaults. Answers are kept
 * until the configuration changes, so a hover never waits on a round trip it made a moment ago.
 */
export class SettingsSource {
  private readonly perResource = new Map<string, Promise<Blip2Settings>>();
  private global: Promise<Blip2Settings>;

  constructor(
    private readonly client: LspClient,
    private readonly initial: unknown,
    private readonly askClient: boolean,
  ) {
    this.global = Promise.resolve(normalizeSettings(initial));
  }

  /** The settings that are not about one document: the model, generation, the cache. */
  forServer(): Promise<Blip2Settings> {
    return this.global;
  }

  forDocument(uri: string): Promise<Blip2Settings> {
    if (!this.askClient) return this.global;
    let settings = this.perResource.get(uri);
    if (!settings) {
      settings = this.read(uri);
      this.perResource.set(uri, settings);
    }
    return settings;
  }

  /** Reads everything again; resolves with the server-wide settings. */
  refresh(): Promise<Blip2Settings> {
    this.perResource.clear();
    if (this.askClient) this.global = this.read(undefined);
    return this.global;
  }

  forget(uri: string): void {
    this.perResource.delete(uri);
  }

  private async read(scopeUri: string | undefined): Promise<Blip2Settings> {
    return normalizeSettings(this.initial, await this.client.configuration('blip2', scopeUri));
  }
}
