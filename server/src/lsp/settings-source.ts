import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findProjectConfig, PROJECT_CONFIG_FILE, readProjectConfig } from '../features/workspace/project-config';
import { unwrapSettings, validateSettings, type Blip2Settings, type SettingsLayer } from '../protocol/settings';
import type { LspClient } from './lsp-client';

/**
 * The `blip2` settings, from every place an editor may put them, lowest first: the defaults, the repository's
 * `.blip2.json` (where the editor is silent), `initializationOptions` (bare, `{settings}` or `{blip2}`), what
 * the client last pushed with `workspace/didChangeConfiguration`, and, for clients that declare it, the answer
 * to `workspace/configuration` (per document, since settings can differ per folder). Answers are kept until the
 * configuration changes, so a hover never waits on a round trip it made a moment ago.
 */
export class SettingsSource {
  private readonly perResource = new Map<string, Promise<Blip2Settings>>();
  private readonly initial: unknown;
  private pushed: unknown;
  private global: Promise<Blip2Settings>;
  /** Problems already told, so each is said once, not on every keystroke. */
  private readonly told = new Set<string>();

  constructor(
    private readonly client: LspClient,
    initializationOptions: unknown,
    private readonly askClient: boolean,
    private workspaceFolders: readonly string[],
  ) {
    this.initial = unwrapSettings(initializationOptions);
    this.global = Promise.resolve(this.serverWideNow());
  }

  /** The server-wide settings as far as they are known without asking the client (for starting up). */
  serverWideNow(): Blip2Settings {
    return this.combine(this.projectLayers(folderOf(this.workspaceFolders[0])), undefined);
  }

  /** The settings that are not about one document: the model, generation, the cache. */
  forServer(): Promise<Blip2Settings> {
    return this.global;
  }

  forDocument(uri: string): Promise<Blip2Settings> {
    let settings = this.perResource.get(uri);
    if (!settings) {
      settings = this.read(uri);
      this.perResource.set(uri, settings);
    }
    return settings;
  }

  /** Settings a client pushed with `workspace/didChangeConfiguration` (null when it only says "changed"). */
  push(settings: unknown): void {
    if (settings !== null && settings !== undefined) this.pushed = unwrapSettings(settings);
  }

  setWorkspaceFolders(folders: readonly string[]): void {
    this.workspaceFolders = folders;
  }

  /** Reads everything again (the configuration or a `.blip2.json` changed); resolves with the server-wide settings. */
  refresh(): Promise<Blip2Settings> {
    this.perResource.clear();
    this.global = this.read(undefined);
    return this.global;
  }

  forget(uri: string): void {
    this.perResource.delete(uri);
  }

  private async read(uri: string | undefined): Promise<Blip2Settings> {
    const answer = this.askClient ? await this.client.configuration('blip2', uri) : undefined;
    const dir = uri === undefined ? folderOf(this.workspaceFolders[0]) : folderOf(uri, true);
    return this.combine(this.projectLayers(dir), answer);
  }

  private combine(project: SettingsLayer[], answer: unknown): Blip2Settings {
    const { settings, problems } = validateSettings([
      ...project,
      { value: this.initial, source: 'initializationOptions' },
      { value: this.pushed, source: 'workspace/didChangeConfiguration' },
      { value: answer, source: 'workspace/configuration' },
    ]);
    for (const problem of problems) this.tell(problem);
    return settings;
  }

  /** The layer of the `.blip2.json` that applies to files in `dir`. */
  private projectLayers(dir: string | undefined): SettingsLayer[] {
    const file = dir === undefined ? undefined : findProjectConfig(dir);
    if (!file) return [];
    const layer = readProjectConfig(file);
    for (const problem of layer.problems) this.tell(problem);
    return [layer];
  }

  private tell(problem: string): void {
    if (this.told.has(problem)) return;
    this.told.add(problem);
    this.client.log(`Settings: ${problem}`);
    // A file in the repository is the user's to fix, so it is shown; what an editor sends is only logged.
    if (problem.includes(PROJECT_CONFIG_FILE)) this.client.showMessage('warning', `BLIP-2: ${problem}`);
  }
}

/** The local folder of a folder URI, or of the file a document URI names; none outside the file system. */
function folderOf(uri: string | undefined, isDocument = false): string | undefined {
  if (!uri?.startsWith('file:')) return undefined;
  const local = fileURLToPath(uri);
  return isDocument ? path.dirname(local) : local;
}
