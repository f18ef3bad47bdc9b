// Starts, stops and restarts the BLIP-2 language server, and tells the rest of the extension what state it is
// in. Two lifetimes, as in rust-analyzer's client: what lives as long as the extension (this object, its
// events) and what lives as long as one server process (the LanguageClient and its subscriptions).
import { mkdir } from 'node:fs/promises';
import * as vscode from 'vscode';
import {
  CloseAction,
  LanguageClient,
  State,
  TransportKind,
  type DocumentSelector,
  type ErrorHandler,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';
import { HOVER_COMMANDS, ModelStatusNotification, ModelStatusRequest, ServerFailureNotification, type ModelStatus } from '../../server/src/protocol/messages';
import { API_KEY_SECRET, explicitSettings, SECTION } from './config';
import { showServerFailure } from './server-failure';
import type { ServerState } from './status-text';

/**
 * Markdown, HTML and JSX files carry images with alt text; any file on disk may name an image in a string
 * (CSS `url()`, an import), which gets a hover; untitled markdown has images too.
 */
const DOCUMENT_SELECTOR: DocumentSelector = [
  ...['markdown', 'html', 'javascriptreact', 'typescriptreact'].map((language) => ({ scheme: 'file', language })),
  { scheme: 'untitled', language: 'markdown' },
  { scheme: 'file' },
];

/** The default handler's limit: a server that crashes a fifth time within three minutes stays down. */
const MAX_RESTARTS = 4;

export class ServerConnection implements vscode.Disposable {
  private client: LanguageClient | undefined;
  /** Disposed with each client: its notification handlers and anything else tied to one server process. */
  private clientDisposables: vscode.Disposable[] = [];
  private currentState: ServerState = { kind: 'stopped', reason: 'The BLIP-2 server has not started yet.' };
  /** Set when the server died and the client is bringing it back, so the status bar can say so. */
  private crashReason: string | undefined;
  private lastError: string | undefined;
  private readonly stateEmitter = new vscode.EventEmitter<ServerState>();
  private readonly modelEmitter = new vscode.EventEmitter<ModelStatus>();
  private readonly disposables: vscode.Disposable[] = [this.stateEmitter, this.modelEmitter];

  /** Any change of the server's or the model's state. */
  readonly onDidChangeState = this.stateEmitter.event;
  /** Every status the server reports (also the same state again, with new progress). */
  readonly onDidChangeModel = this.modelEmitter.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    readonly output: vscode.LogOutputChannel,
  ) {}

  get state(): ServerState {
    return this.currentState;
  }

  /** The running client for protocol conversions, whatever its state; undefined before the first start. */
  get languageClient(): LanguageClient | undefined {
    return this.client;
  }

  async start(): Promise<void> {
    if (this.client) return;
    const serverModule = this.context.asAbsolutePath('dist/server.js');
    // The server's key lives in VS Code's secret storage and reaches the server process in its environment only:
    // never in a setting, the initialize request or a log.
    const apiKey = await this.context.secrets.get(API_KEY_SECRET);
    const env = apiKey ? { ...process.env, BLIP2_API_KEY: apiKey } : process.env;
    const serverOptions: ServerOptions = {
      run: { module: serverModule, transport: TransportKind.ipc, options: { env } },
      debug: { module: serverModule, transport: TransportKind.ipc, options: { env, execArgv: ['--nolazy', '--inspect=6019'] } },
    };
    const cacheDir = this.context.globalStorageUri.fsPath;
    await mkdir(cacheDir, { recursive: true }).catch(() => undefined);

    let defaultHandler: ErrorHandler | undefined;
    const errorHandler: ErrorHandler = {
      error: (error, message, count) => defaultHandler!.error(error, message, count),
      closed: async () => {
        const result = await defaultHandler!.closed();
        if (result.action === CloseAction.Restart) {
          // The client restarts it; the status bar says so instead of a notification nobody needs to answer.
          this.crashReason = 'The BLIP-2 server stopped unexpectedly.';
          this.output.warn('The BLIP-2 server stopped unexpectedly; restarting it.');
          return { ...result, handled: true };
        }
        this.crashReason = undefined;
        this.lastError = result.message ?? 'The BLIP-2 server stopped and will not be restarted.';
        return result;
      },
    };

    const clientOptions: LanguageClientOptions = {
      documentSelector: DOCUMENT_SELECTOR,
      synchronize: { configurationSection: SECTION },
      // A function, so that a restarted server gets the settings of that moment.
      initializationOptions: () => ({ cacheDir, settings: userSettings(undefined) }),
      middleware: {
        workspace: {
          // Only what the user set: where VS Code is silent, the repository's .blip2.json counts, not our defaults.
          configuration: async (params, token, next) => {
            const answers = await next(params, token);
            if (!Array.isArray(answers)) return answers;
            return params.items.map((item, i) => (item.section === SECTION ? userSettings(item.scopeUri) : answers[i]));
          },
          // "Changed" without the values, which would be VS Code's whole section, defaults included; the server
          // asks again through workspace/configuration, answered above.
          didChangeConfiguration: (_sections, next) => next(undefined),
        },
      },
      outputChannel: this.output,
      diagnosticCollectionName: 'blip2',
      errorHandler,
      // Hover links may run our commands (Use as alt text, Ask a question…) and nothing else.
      markdown: { isTrusted: { enabledCommands: HOVER_COMMANDS } },
      connectionOptions: { maxRestartCount: MAX_RESTARTS },
    };

    const client = new LanguageClient('blip2', 'BLIP-2', serverOptions, clientOptions);
    defaultHandler = client.createDefaultErrorHandler(MAX_RESTARTS);
    this.client = client;
    this.clientDisposables.push(
      client.onDidChangeState(({ newState }) => this.clientStateChanged(client, newState)),
      // Registered once; the client installs its handlers again on every restart of the process.
      client.onNotification(ModelStatusNotification.type, (status) => this.modelChanged(status)),
      client.onNotification(ServerFailureNotification.type, ({ message }) => void showServerFailure(message)),
    );
    this.setState({ kind: 'starting' });
    try {
      await client.start();
    } catch (error) {
      this.lastError = `The BLIP-2 server failed to start: ${error instanceof Error ? error.message : String(error)}`;
      this.output.error(this.lastError);
      this.setState({ kind: 'stopped', reason: this.lastError });
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    const disposables = this.clientDisposables;
    this.clientDisposables = [];
    if (client) {
      // A server that is already gone, or hangs, must not keep the editor from closing or restarting.
      await client.stop(2000).catch(() => undefined);
      await client.dispose(2000).catch(() => undefined);
    }
    for (const disposable of disposables) disposable.dispose();
    this.setState({ kind: 'stopped', reason: 'The BLIP-2 server was stopped.' });
  }

  /** Stores (or, undefined, removes) the BLIP-2 server's API key and restarts the server, which reads it at start. */
  async setServerApiKey(key: string | undefined): Promise<void> {
    if (key) await this.context.secrets.store(API_KEY_SECRET, key);
    else await this.context.secrets.delete(API_KEY_SECRET);
    await this.restart();
  }

  async restart(): Promise<void> {
    this.crashReason = undefined;
    this.lastError = undefined;
    await this.stop();
    await this.start();
  }

  /**
   * The running client, waiting for a start in progress (briefly); otherwise undefined, after telling the user
   * why `action` cannot happen. Commands stay registered while the server is down and end up here.
   */
  async ready(action: string): Promise<LanguageClient | undefined> {
    if (this.currentState.kind === 'starting' || this.currentState.kind === 'restarting') {
      await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: 'Waiting for the BLIP-2 server…' },
        () => this.waitForStart(30_000),
      );
    }
    if (this.client && this.currentState.kind === 'running') return this.client;
    const reason = this.currentState.kind === 'stopped' && this.currentState.reason ? this.currentState.reason : 'The BLIP-2 server is not running.';
    const choice = await vscode.window.showWarningMessage(`Cannot ${action}: ${reason}`, 'Restart Server', 'Show Output');
    if (choice === 'Restart Server') await this.restart();
    else if (choice === 'Show Output') this.output.show();
    return undefined;
  }

  private waitForStart(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const subscription = this.onDidChangeState((state) => {
        if (state.kind === 'running' || state.kind === 'stopped') done();
      });
      function done(): void {
        clearTimeout(timer);
        subscription.dispose();
        resolve();
      }
    });
  }

  /** Asks the server for the model's state now (the status bar and "Show Model Status" use it). */
  async refreshModelStatus(): Promise<ModelStatus | undefined> {
    const client = this.client;
    if (!client || client.state !== State.Running) return undefined;
    try {
      const status = await client.sendRequest(ModelStatusRequest.type);
      if (this.client === client) this.modelChanged(status);
      return status;
    } catch (error) {
      this.output.warn(`Could not ask the server for the model state: ${error instanceof Error ? error.message : String(error)}`);
      return undefined;
    }
  }

  private clientStateChanged(client: LanguageClient, state: State): void {
    if (client !== this.client) return;
    switch (state) {
      case State.Starting:
        this.setState(this.crashReason ? { kind: 'restarting', reason: this.crashReason } : { kind: 'starting' });
        break;
      case State.Running:
        this.crashReason = undefined;
        this.setState({ kind: 'running' });
        void this.refreshModelStatus();
        break;
      case State.StartFailed:
        this.crashReason = undefined;
        this.setState({ kind: 'stopped', reason: this.lastError ?? 'The BLIP-2 server failed to start; see the output.' });
        break;
      case State.Stopped:
        // Between a crash and the restart the client passes through Stopped; keep saying "restarting" then.
        if (this.crashReason) this.setState({ kind: 'restarting', reason: this.crashReason });
        else this.setState({ kind: 'stopped', reason: this.lastError });
        break;
    }
  }

  private modelChanged(status: ModelStatus): void {
    if (this.currentState.kind === 'running') this.setState({ kind: 'running', model: status });
    this.modelEmitter.fire(status);
  }

  private setState(state: ServerState): void {
    this.currentState = state;
    this.stateEmitter.fire(state);
  }

  async dispose(): Promise<void> {
    await this.stop();
    for (const disposable of this.disposables) disposable.dispose();
  }
}

/** The `blip2` settings the user set for a resource (or the window), nested as the server takes them. */
function userSettings(scopeUri: string | undefined): Record<string, unknown> {
  const configuration = vscode.workspace.getConfiguration(SECTION, scopeUri ? vscode.Uri.parse(scopeUri) : undefined);
  return explicitSettings((key) => configuration.inspect(key), (key) => configuration.get(key));
}

/** Reads `blip2.*` as the resource-less (window) configuration; the server asks per resource itself. */
export function settingGetter(): (key: string) => unknown {
  const configuration = vscode.workspace.getConfiguration(SECTION);
  return (key) => configuration.get(key);
}
