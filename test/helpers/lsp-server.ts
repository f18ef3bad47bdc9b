/**
 * Spawns the real language server over stdio and speaks LSP to it, as an editor would: the capabilities VS Code
 * sends, `workspace/configuration` answered from the settings the test gives, diagnostics and notifications
 * recorded so tests wait for them (never for a fixed time).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  ApplyWorkspaceEditRequest,
  ConfigurationRequest,
  createMessageConnection,
  DidOpenTextDocumentNotification,
  ExitNotification,
  InitializeRequest,
  InitializedNotification,
  PublishDiagnosticsNotification,
  RegistrationRequest,
  ShutdownRequest,
  StreamMessageReader,
  StreamMessageWriter,
  WorkDoneProgressCreateRequest,
  type ApplyWorkspaceEditParams,
  type ClientCapabilities,
  type InitializeResult,
  type MessageConnection,
  type PublishDiagnosticsParams,
} from 'vscode-languageserver-protocol/node';
import { ModelStatusNotification, ServerFailureNotification, type ModelStatus } from '../../server/src/protocol/messages';
import { repoRoot, tinyCheckpointDir } from './paths';

export const CLIENT_CAPABILITIES: ClientCapabilities = {
  workspace: {
    configuration: true,
    workspaceFolders: true,
    applyEdit: true,
    didChangeConfiguration: { dynamicRegistration: false },
    workspaceEdit: { documentChanges: true, changeAnnotationSupport: { groupsOnLabel: true } },
  },
  window: { workDoneProgress: true },
  textDocument: {
    synchronization: { dynamicRegistration: false },
    hover: { contentFormat: ['markdown', 'plaintext'] },
    publishDiagnostics: { versionSupport: true },
    codeAction: {
      codeActionLiteralSupport: { codeActionKind: { valueSet: ['quickfix', 'source'] } },
      resolveSupport: { properties: ['edit', 'command'] },
      dataSupport: true,
      isPreferredSupport: true,
    },
  },
};

/** The settings every test server starts from: the tiny fixture as the model, nothing on the network. */
export function testSettings(overrides: { generation?: Record<string, unknown>; altText?: Record<string, unknown>; remoteImages?: Record<string, unknown>; server?: Record<string, unknown> } = {}): Record<string, unknown> {
  return {
    model: tinyCheckpointDir,
    precision: 'fp32',
    device: 'cpu',
    offline: true,
    unloadAfterMinutes: 0,
    generation: { maxNewTokens: 20, numBeams: 3, alternatives: 2, noRepeatNgramSize: 3, repetitionPenalty: 1, ...overrides.generation },
    altText: { captionOnOpen: false, ...overrides.altText },
    remoteImages: { enabled: false, maxBytes: 10 * 1024 * 1024, ...overrides.remoteImages },
    ...(overrides.server && { server: overrides.server }),
  };
}

export interface StartOptions {
  /** The `blip2` section `workspace/configuration` answers. */
  settings: Record<string, unknown>;
  workspaceFolder?: string;
  /** Answer `workspace/configuration` with null for every item, as a client without settings does. */
  noConfiguration?: boolean;
  initializationOptions?: Record<string, unknown>;
  env?: Record<string, string>;
  clientName?: string;
  /** The client's capabilities (VS Code's by default); tests of other editors give theirs. */
  capabilities?: ClientCapabilities;
  /** The `processId` the server watches (this test process unless given). */
  parentPid?: number;
  /** Leave the server uninitialized: the test sends `initialize` itself, or never does. */
  skipInitialize?: boolean;
}

export class TestServer {
  readonly diagnostics = new Map<string, PublishDiagnosticsParams>();
  readonly statuses: ModelStatus[] = [];
  readonly appliedEdits: ApplyWorkspaceEditParams[] = [];
  readonly progress: { token: string | number; value: unknown }[] = [];
  /** `window/showMessage` texts. */
  readonly messages: string[] = [];
  /** `window/showMessageRequest` texts: requests that some editors show as a prompt to answer. */
  readonly messageRequests: string[] = [];
  /** `blip2/serverFailed` sentences (the BLIP-2 server that blip2.server.url names failed). */
  readonly serverFailures: string[] = [];
  /** What `workspace/configuration` answers for `blip2`; change it, then send didChangeConfiguration. */
  settings: Record<string, unknown> = {};
  private readonly waiters = new Set<() => void>();
  private stderr = '';
  exitCode: number | null | undefined = undefined;
  private readonly exited: Promise<number | null>;

  private constructor(
    readonly child: ChildProcess,
    readonly connection: MessageConnection,
    readonly root: string,
  ) {
    this.exited = new Promise((resolve) => {
      child.on('exit', (code) => {
        this.exitCode = code;
        this.changed();
        resolve(code);
      });
    });
    child.stderr!.on('data', (d) => (this.stderr += d));
  }

  static async start(options: StartOptions): Promise<TestServer> {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-lsp-'));
    const env = {
      ...process.env,
      BLIP2_HOME: path.join(root, 'store'),
      HF_HOME: path.join(root, 'hf'),
      HF_HUB_OFFLINE: '1',
      BLIP2_DEBUG: '',
      ...options.env,
    };
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'server/src/server.ts'), '--stdio'], {
      cwd: repoRoot,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const connection = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
    const server = new TestServer(child, connection, root);
    server.settings = options.settings;
    server.listen(options);
    connection.listen();

    if (options.skipInitialize) return server;
    try {
      await server.initialize(options);
      await connection.sendNotification(InitializedNotification.type, {});
    } catch (e) {
      // The caller never gets a handle to dispose, so nothing may be left running here.
      await server.dispose();
      throw e;
    }
    return server;
  }

  /** The `initialize` request an editor sends, for the folder and options given. */
  initialize(options: StartOptions): Promise<InitializeResult> {
    const folder = options.workspaceFolder;
    return this.connection.sendRequest(InitializeRequest.type, {
      processId: options.parentPid ?? process.pid,
      // The tests stand in for the VS Code extension unless they say otherwise.
      clientInfo: { name: options.clientName ?? 'Visual Studio Code' },
      rootUri: folder ? pathToFileURL(folder).href : null,
      workspaceFolders: folder ? [{ uri: pathToFileURL(folder).href, name: path.basename(folder) }] : null,
      capabilities: options.capabilities ?? CLIENT_CAPABILITIES,
      initializationOptions: { cacheDir: path.join(this.root, 'cache'), ...options.initializationOptions },
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get log(): string {
    return this.stderr;
  }

  private listen(options: StartOptions): void {
    const c = this.connection;
    c.onRequest(ConfigurationRequest.type, (params) =>
      params.items.map((item) => (options.noConfiguration ? null : item.section === 'blip2' ? this.settings : null)),
    );
    c.onRequest(RegistrationRequest.method, () => null);
    c.onRequest(WorkDoneProgressCreateRequest.method, () => null);
    c.onRequest(ApplyWorkspaceEditRequest.type, (params) => {
      this.appliedEdits.push(params);
      this.changed();
      return { applied: true };
    });
    c.onNotification(PublishDiagnosticsNotification.type, (params) => {
      this.diagnostics.set(params.uri, params);
      this.changed();
    });
    c.onNotification(ModelStatusNotification.type, (status) => {
      this.statuses.push(status);
      this.changed();
    });
    // Progress on tokens nobody registered a handler for: work-done progress and streamed answers alike.
    c.onUnhandledProgress((params) => {
      this.progress.push({ token: params.token, value: params.value });
      this.changed();
    });
    c.onNotification('window/logMessage', (params: { message: string }) => {
      this.stderr += `[log] ${params.message}\n`;
    });
    c.onNotification('window/showMessage', (params: { message: string }) => {
      this.messages.push(params.message);
      this.changed();
    });
    c.onNotification(ServerFailureNotification.type, (params) => {
      this.serverFailures.push(params.message);
      this.changed();
    });
    c.onRequest('window/showMessageRequest', (params: { message: string }) => {
      this.messageRequests.push(params.message);
      this.changed();
      return null;
    });
  }

  private changed(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves when `check` returns something other than undefined, re-checked on every message from the server. */
  until<T>(what: string, check: () => T | undefined, timeoutMs = 60_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const attempt = (): void => {
        let value: T | undefined;
        try {
          value = check();
        } catch (e) {
          finish();
          reject(e);
          return;
        }
        if (value !== undefined) {
          finish();
          resolve(value);
        } else if (this.exitCode !== undefined) {
          finish();
          reject(new Error(`the server exited (code ${this.exitCode}) while waiting for ${what}\n${this.stderr}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${this.stderr}`));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(attempt);
      };
      this.waiters.add(attempt);
      attempt();
    });
  }

  /** Diagnostics published for `uri` at `version` (or any version). */
  diagnosticsFor(uri: string, version?: number): Promise<PublishDiagnosticsParams> {
    return this.until(`diagnostics for ${uri}${version === undefined ? '' : ` v${version}`}`, () => {
      const d = this.diagnostics.get(uri);
      return d && (version === undefined || d.version === version) ? d : undefined;
    });
  }

  async open(uri: string, languageId: string, text: string, version = 1): Promise<void> {
    await this.connection.sendNotification(DidOpenTextDocumentNotification.type, { textDocument: { uri, languageId, version, text } });
  }

  /** `shutdown`, then `exit`; resolves with the exit code the process ended with by itself. */
  async stop(): Promise<number | null> {
    await this.connection.sendRequest(ShutdownRequest.type);
    await this.connection.sendNotification(ExitNotification.type);
    return this.exited;
  }

  waitForExit(): Promise<number | null> {
    return this.exited;
  }

  /** For `after` hooks: ends the process whatever state it is in, and removes its folders. */
  async dispose(): Promise<void> {
    this.connection.dispose();
    if (this.exitCode === undefined) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

/** Whether a process with this pid still exists. */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
