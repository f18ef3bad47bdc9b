import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CancellationToken,
  CancellationTokenSource,
  CodeActionKind,
  ErrorCodes,
  LSPErrorCodes,
  ResponseError,
  TextDocumentSyncKind,
  type ClientCapabilities,
  type CodeAction,
  type CodeActionParams,
  type ExecuteCommandParams,
  type Hover,
  type HoverParams,
  type InitializeParams,
  type InitializeResult,
  type ProgressToken,
  type WorkspaceFoldersChangeEvent,
} from 'vscode-languageserver-protocol';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { generateMissingAltText, type AltTextFile } from '../features/alt-text/generate-alt-text';
import { captionImagesInBackground } from '../features/captions/caption-on-open';
import { linkedSource } from '../features/cancellation';
import { altCodeActions, computeAltFix, isAltFixData, resolveAltAction, type ResolveAltActionOptions } from '../features/code-actions/alt-code-actions';
import { altTextDiagnostics } from '../features/diagnostics/alt-diagnostics';
import { imageHover } from '../features/hover/image-hover';
import { DocumentImages } from '../features/images/document-images';
import { imageSyntaxOf } from '../features/images/find-images';
import { WorkerImageParser } from '../features/images/image-parser';
import { askAboutImage, captionImage, RequestFailure } from '../features/requests/image-requests';
import { failureSentence, isNoModel, isServerFailure, USE_LOCAL_MODEL_HINT } from '../features/inference-failure';
import { describeError } from '../features/user-message';
import { PROJECT_CONFIG_FILE } from '../features/workspace/project-config';
import { findWorkspaceFiles, languageIdOfPath } from '../features/workspace/workspace-files';
import type { EditSupport } from '../features/workspace/workspace-edit';
import { defaultCacheDir } from '../inference/result-cache';
import type { InferenceService } from '../inference/types';
import {
  Blip2ErrorCodes,
  GenerateAltTextActionKind,
  ServerCommands,
  type AltTextCommandArgs,
  type AltTextCommandResult,
  type AskParams,
  type CaptionParams,
  type GenerationResult,
  type InferenceCounters,
  type InitializationOptions,
  type ModelStatus,
  type SetUpModelParams,
  type SetUpPlan,
} from '../protocol/messages';
import type { Blip2Settings } from '../protocol/settings';
import type { LspClient } from './lsp-client';
import { SettingsSource } from './settings-source';
import { StatusThrottle } from './status-throttle';

export type InferenceFactory = (options: { settings: Blip2Settings; cacheDir?: string; log?: (line: string) => void }) => InferenceService;

/** The open documents, as vscode-languageserver's `TextDocuments` keeps them (always the latest version). */
export interface DocumentStore {
  get(uri: string): TextDocument | undefined;
}

/** A hover waits this long for a caption that is not cached, then says "Captioning…" and lets it finish. */
export const DEFAULT_HOVER_WAIT_MS = 3000;
/** The command's own work starts this long after its answer was sent (see `fixAltText`). */
const AFTER_ANSWER_MS = 200;
/** Diagnostics follow typing after this pause, so a burst of keystrokes parses the document once. */
const DIAGNOSTICS_DELAY_MS = 250;

/**
 * The BLIP-2 language server: one method per LSP event, each turning protocol values into a feature call and
 * the feature's result back into protocol values. Features never see the client; the client is reached only
 * through `LspClient`.
 */
export class Blip2Server {
  private inference!: InferenceService;
  private settings!: SettingsSource;
  private workspaceFolders: string[] = [];
  private editSupport: EditSupport = { documentChanges: false, changeAnnotations: false };
  private hoverWaitMs = DEFAULT_HOVER_WAIT_MS;
  private vscodeClient = false;
  private capabilities: ClientCapabilities = {};
  /** Requests wait for the first configuration read, so none runs with settings the user did not choose. */
  private ready: Promise<void> = Promise.resolve();
  private markReady: () => void = () => undefined;
  private readonly openedVersions = new Map<string, number>();
  /** Open documents whose user was told that they are not searched for images (`tellSkipped`). */
  private readonly toldSkipped = new Set<string>();
  private readonly diagnosticTimers = new Map<string, NodeJS.Timeout>();
  /** Open documents, each with the token that stops its background captions when it closes. */
  private readonly openDocuments = new Map<string, CancellationTokenSource>();
  /** Work-done tokens of running requests, so the client's "cancel" on the progress stops them too. */
  private readonly progressCancellations = new Map<ProgressToken, CancellationTokenSource>();
  private shuttingDown = false;
  private readonly statusThrottle = new StatusThrottle((status) => this.client.modelStatusChanged(status));
  /** The server failure last told, so a burst of failed captions is one notice; cleared when the server answers. */
  private serverFailureTold?: string;
  /** Finds images off the main thread; `images` keeps what it found for each open document's version. */
  private readonly parser = new WorkerImageParser({ log: (line) => this.client.log(line) });
  private readonly images = new DocumentImages(this.parser.find);

  constructor(
    private readonly client: LspClient,
    private readonly documents: DocumentStore,
    private readonly createInference: InferenceFactory,
  ) {}

  // ---- lifecycle ----

  initialize(params: InitializeParams): InitializeResult {
    this.capabilities = params.capabilities;
    const options = (params.initializationOptions ?? {}) as InitializationOptions;
    const askClient = params.capabilities.workspace?.configuration === true;
    this.workspaceFolders = params.workspaceFolders?.map((f) => f.uri) ?? (params.rootUri ? [params.rootUri] : []);
    this.settings = new SettingsSource(this.client, params.initializationOptions, askClient, this.workspaceFolders);
    const workspaceEdit = params.capabilities.workspace?.workspaceEdit;
    this.editSupport = { documentChanges: workspaceEdit?.documentChanges === true, changeAnnotations: workspaceEdit?.changeAnnotationSupport !== undefined };
    if (typeof options.hoverWaitMs === 'number' && options.hoverWaitMs >= 0) this.hoverWaitMs = options.hoverWaitMs;
    // Only VS Code-family editors size hover images with `|height=` and run the extension's command links.
    this.vscodeClient = /visual studio code|vscode|code - oss|codium|code-server|cursor|windsurf/i.test(params.clientInfo?.name ?? '');
    this.ready = new Promise((resolve) => (this.markReady = resolve));

    const initial = this.settings.serverWideNow();
    this.inference = this.createInference({ settings: initial, cacheDir: options.cacheDir ?? defaultCacheDir(initial.modelStore), log: (line) => this.client.log(line) });
    this.inference.onStatusChange((status) => {
      this.statusThrottle.push(status);
      this.noticeServerFailure(status);
    });

    return {
      capabilities: {
        textDocumentSync: TextDocumentSyncKind.Incremental,
        hoverProvider: true,
        codeActionProvider: { codeActionKinds: [CodeActionKind.QuickFix, GenerateAltTextActionKind], resolveProvider: true },
        executeCommandProvider: { commands: [ServerCommands.generateMissingAltText, ServerCommands.fixAltText] },
        workspace: { workspaceFolders: { supported: true, changeNotifications: true } },
      },
      serverInfo: { name: 'blip2-language-server', version: '0.1.0' },
    };
  }

  /** Reads the configuration for the first time, then lets waiting requests through. */
  async initialized(): Promise<void> {
    try {
      if (this.capabilities.workspace?.didChangeConfiguration?.dynamicRegistration) this.client.watchConfiguration();
      if (this.capabilities.workspace?.didChangeWatchedFiles?.dynamicRegistration) this.client.watchFiles(`**/${PROJECT_CONFIG_FILE}`);
      this.inference.updateSettings(await this.settings.refresh());
    } catch (e) {
      this.client.log(`Reading the blip2 settings failed, using the defaults: ${describeError(e)}`);
    } finally {
      this.markReady();
    }
  }

  /** `workspace/didChangeConfiguration` (with the settings pushed, or null), or a `.blip2.json` changed. */
  async configurationChanged(pushed?: unknown): Promise<void> {
    this.settings.push(pushed);
    await this.ready;
    this.inference.updateSettings(await this.settings.refresh());
    for (const uri of this.openDocuments.keys()) this.scheduleDiagnostics(uri, 0);
  }

  wantsWorkspaceFolderEvents(): boolean {
    return this.capabilities.workspace?.workspaceFolders === true;
  }

  workspaceFoldersChanged(event: WorkspaceFoldersChangeEvent): void {
    const removed = new Set(event.removed.map((f) => f.uri));
    this.workspaceFolders = [...this.workspaceFolders.filter((uri) => !removed.has(uri)), ...event.added.map((f) => f.uri)];
    this.settings.setWorkspaceFolders(this.workspaceFolders);
  }

  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    for (const timer of this.diagnosticTimers.values()) clearTimeout(timer);
    this.diagnosticTimers.clear();
    for (const source of this.openDocuments.values()) source.cancel();
    for (const source of this.progressCancellations.values()) source.cancel();
    this.statusThrottle.dispose();
    // Ends the workers, so nothing but the connection keeps the process alive until `exit`.
    await Promise.all([this.inference?.dispose(), this.parser.dispose()]);
  }

  // ---- documents ----

  opened(document: TextDocument): void {
    const source = new CancellationTokenSource();
    this.openDocuments.get(document.uri)?.cancel();
    this.openDocuments.set(document.uri, source);
    this.openedVersions.set(document.uri, document.version);
    this.scheduleDiagnostics(document.uri, 0);
    void this.captionInBackground(document.uri, source.token);
  }

  changed(document: TextDocument): void {
    // The library reports an open as a change too; that version is already being checked without delay.
    if (this.openedVersions.get(document.uri) === document.version) return;
    this.openedVersions.delete(document.uri);
    this.scheduleDiagnostics(document.uri, DIAGNOSTICS_DELAY_MS);
  }

  closed(document: TextDocument): void {
    this.toldSkipped.delete(document.uri);
    this.openDocuments.get(document.uri)?.cancel();
    this.openDocuments.delete(document.uri);
    this.openedVersions.delete(document.uri);
    this.images.forget(document.uri);
    clearTimeout(this.diagnosticTimers.get(document.uri));
    this.diagnosticTimers.delete(document.uri);
    this.settings.forget(document.uri);
    if (imageSyntaxOf(document.languageId) !== 'other') this.client.publishDiagnostics(document.uri, undefined, []);
  }

  private scheduleDiagnostics(uri: string, delayMs: number): void {
    if (this.shuttingDown) return;
    clearTimeout(this.diagnosticTimers.get(uri));
    this.diagnosticTimers.set(
      uri,
      setTimeout(() => {
        this.diagnosticTimers.delete(uri);
        void this.publishDiagnostics(uri);
      }, delayMs),
    );
  }

  private async publishDiagnostics(uri: string): Promise<void> {
    await this.ready;
    const document = this.documents.get(uri);
    if (!document || imageSyntaxOf(document.languageId) === 'other') return;
    const [parsed, settings] = await Promise.all([this.images.of(document), this.settings.forDocument(uri)]);
    const now = this.documents.get(uri);
    // A newer version has its own run scheduled; publishing this one would flash stale squiggles.
    if (!now || now.version !== parsed.document.version) return;
    this.client.publishDiagnostics(uri, now.version, altTextDiagnostics(parsed.document, settings.altText, parsed.elements));
    if (parsed.skipped) this.tellSkipped(uri, parsed.skipped);
  }

  /**
   * A document that counts as having no images although it was not searched (too large, too slow to parse) would
   * otherwise look checked and clean: said once while it is open, so the user knows why nothing shows.
   */
  private tellSkipped(uri: string, why: string): void {
    if (this.toldSkipped.has(uri)) return;
    this.toldSkipped.add(uri);
    const name = uri.startsWith('file:') ? path.basename(fileURLToPath(uri)) : uri;
    const message = `BLIP-2 does not check ${name} for alt text and shows no captions in it: ${why}. \`blip2 check\` on the command line checks it.`;
    this.client.log(message);
    this.client.showMessage('info', message);
  }

  private async captionInBackground(uri: string, token: CancellationToken): Promise<void> {
    await this.ready;
    const document = this.documents.get(uri);
    if (!document || token.isCancellationRequested) return;
    const settings = await this.settings.forDocument(uri);
    if (!settings.altText.captionOnOpen) return;
    const { document: snapshot, elements } = await this.images.of(document);
    if (token.isCancellationRequested) return;
    try {
      await captionImagesInBackground(snapshot, this.inference, { workspaceFolders: this.workspaceFolders, settings, elements, log: (l) => this.client.log(l) }, token);
    } catch (e) {
      this.client.log(`Background captions for ${uri} failed: ${describeError(e)}`);
    }
  }

  // ---- language features ----

  async hover(params: HoverParams, token: CancellationToken): Promise<Hover | null> {
    await this.ready;
    const live = this.documents.get(params.textDocument.uri);
    if (!live) return null;
    const [{ document, elements }, settings] = await Promise.all([this.images.of(live), this.settings.forDocument(live.uri)]);
    if (token.isCancellationRequested) return null;
    const hover = await imageHover(
      document,
      document.offsetAt(params.position),
      this.inference,
      { workspaceFolders: this.workspaceFolders, settings, waitMs: this.hoverWaitMs, vscodeClient: this.vscodeClient, elements },
      token,
    );
    if (!hover) return null;
    return {
      contents: { kind: 'markdown', value: hover.markdown },
      range: { start: document.positionAt(hover.range.start), end: document.positionAt(hover.range.end) },
    };
  }

  async codeActions(params: CodeActionParams, token: CancellationToken): Promise<CodeAction[]> {
    await this.ready;
    const live = this.documents.get(params.textDocument.uri);
    if (!live) return [];
    const [{ document, elements }, settings] = await Promise.all([this.images.of(live), this.settings.forDocument(live.uri)]);
    // Asked for at every cursor move: a request the client gave up on while the document was parsed gets nothing.
    if (token.isCancellationRequested) throw cancelled();
    const codeAction = this.capabilities.textDocument?.codeAction;
    return altCodeActions(document, params.range, params.context, {
      workspaceFolders: this.workspaceFolders,
      settings,
      elements,
      disabledSupport: codeAction?.disabledSupport === true,
      resolveSupport: codeAction?.resolveSupport?.properties.includes('edit') === true,
      vscodeClient: this.vscodeClient,
    });
  }

  async resolveCodeAction(action: CodeAction, token: CancellationToken): Promise<CodeAction> {
    await this.ready;
    const uri = (action.data as { uri?: unknown } | undefined)?.uri;
    if (typeof uri !== 'string') return action;
    const resolved = await resolveAltAction(action, this.inference, await this.altFixOptions(uri), token);
    if (token.isCancellationRequested) throw cancelled();
    // A resolved action has no way to carry an error, so the user hears it as a message instead of nothing happening
    // (a server's failure has been told already, with its way out).
    if (resolved.failure && !resolved.action.edit && this.serverFailureTold === undefined) this.client.showMessage('warning', `BLIP-2: ${resolved.failure}`);
    return resolved.action;
  }

  private async altFixOptions(uri: string): Promise<ResolveAltActionOptions> {
    const settings = await this.settings.forDocument(uri);
    return {
      workspaceFolders: this.workspaceFolders,
      settings,
      editSupport: this.editSupport,
      documentNow: (u) => this.documents.get(u),
      parsedNow: async (u) => {
        const live = this.documents.get(u);
        return live && this.images.of(live);
      },
      vscodeClient: this.vscodeClient,
    };
  }

  async executeCommand(params: ExecuteCommandParams, token: CancellationToken, progressToken: ProgressToken | undefined): Promise<AltTextCommandResult | null> {
    await this.ready;
    if (params.command === ServerCommands.fixAltText) return this.fixAltText(params.arguments?.[0]);
    if (params.command !== ServerCommands.generateMissingAltText) {
      throw new ResponseError(ErrorCodes.InvalidParams, `Unknown command ${params.command}.`);
    }
    const args = (params.arguments?.[0] ?? {}) as AltTextCommandArgs;
    const progress = this.client.workDone(progressToken);
    const { source, dispose } = this.cancellable(token, progressToken);
    progress.begin('Generating alt text with BLIP-2', 0, 'Looking for images…', true);
    try {
      const files = args.uri ? [await this.fileForAltText(args.uri)] : await this.workspaceFilesForAltText(source.token);
      const result = await generateMissingAltText(
        files,
        this.inference,
        {
          workspaceFolders: this.workspaceFolders,
          settingsFor: (uri) => this.settings.forDocument(uri),
          current: (file) => this.fileForAltText(file.uri).catch(() => undefined),
          onProgress: (done, total) => progress.report(total === 0 ? 100 : (100 * done) / total, `${done} of ${total} images`),
          priority: 'interactive',
          editSupport: this.editSupport,
          vscodeClient: this.vscodeClient,
          find: async (text, languageId) => {
            const found = await this.parser.find(text, languageId);
            if (found?.skipped) this.client.log(`A ${languageId} file was not searched for images: ${found.skipped}.`);
            return found?.elements ?? [];
          },
        },
        source.token,
      );
      if (args.apply && result.images > 0) await this.client.applyEdit('Generate missing alt text', result.edit);
      return result;
    } catch (e) {
      throw this.responseError(e, source.token);
    } finally {
      dispose();
      progress.done();
    }
  }

  /**
   * The quick fix of clients without `codeAction/resolve`: answered at once, then the caption is computed and
   * written with `workspace/applyEdit` (or a notice says why not). Clients wait for a command's answer only so
   * long (eglot: 10 seconds), and a caption on a CPU can take longer.
   */
  private async fixAltText(data: unknown): Promise<null> {
    if (!isAltFixData(data)) throw new ResponseError(ErrorCodes.InvalidParams, `${ServerCommands.fixAltText} needs the data of the quick fix it came with.`);
    const options = await this.altFixOptions(data.uri);
    const run = async (): Promise<void> => {
      try {
        const fix = await computeAltFix(data, this.inference, options, CancellationToken.None);
        if (fix.edit) await this.client.applyEdit('Generate alt text with BLIP-2', fix.edit);
        else this.client.showMessage('warning', `BLIP-2: ${fix.failure}`);
      } catch (e) {
        this.client.showMessage('warning', `BLIP-2: ${describeError(e)}`);
      }
    };
    // Not at once: Emacs's jsonrpc leaves whatever arrives with the answer to a synchronous request unread until
    // the server writes again, so a cached caption's applyEdit sent right behind this answer would wait forever.
    setTimeout(() => void run(), AFTER_ANSWER_MS);
    return null;
  }

  /** A file for the alt-text command: the editor's text when it is open (unsaved changes included), else the disk's. */
  private async fileForAltText(uri: string): Promise<AltTextFile> {
    const open = this.documents.get(uri);
    if (open) {
      const { document, elements } = await this.images.of(open);
      return { uri, languageId: document.languageId, text: document.getText(), version: document.version, elements };
    }
    if (!uri.startsWith('file:')) throw new ResponseError(ErrorCodes.InvalidParams, `${uri} is not open and not a local file.`);
    const filePath = fileURLToPath(uri);
    const languageId = languageIdOfPath(filePath);
    if (!languageId) throw new ResponseError(ErrorCodes.InvalidParams, `${path.basename(filePath)} is not a markdown, HTML, JSX or TSX file.`);
    try {
      return { uri, languageId, text: await fs.readFile(filePath, 'utf8'), version: null };
    } catch (e) {
      throw new ResponseError(LSPErrorCodes.RequestFailed, describeError(e));
    }
  }

  private async workspaceFilesForAltText(token: CancellationToken): Promise<AltTextFile[]> {
    const excludes = this.capabilities.workspace?.configuration ? await this.client.configuration('files.exclude') : undefined;
    const found = await findWorkspaceFiles(this.workspaceFolders, { excludes: isRecord(excludes) ? excludes : undefined }, token);
    const files: AltTextFile[] = [];
    for (const file of found) {
      try {
        files.push(await this.fileForAltText(file.uri));
      } catch {
        // Vanished or unreadable since the walk: nothing to edit there.
      }
    }
    return files;
  }

  // ---- custom requests ----

  async caption(params: CaptionParams, token: CancellationToken): Promise<GenerationResult> {
    await this.ready;
    const settings = await this.settings.forServer();
    return this.asResponse(token, () => captionImage(params, this.inference, { settings, workspaceFolders: this.workspaceFolders, vscodeClient: this.vscodeClient }, token));
  }

  async ask(params: AskParams, token: CancellationToken): Promise<GenerationResult> {
    await this.ready;
    const settings = await this.settings.forServer();
    const partialToken = params.partialResultToken;
    const onPartial = partialToken === undefined ? undefined : (textSoFar: string) => this.client.answerPartial(partialToken, { textSoFar });
    return this.asResponse(token, () => askAboutImage(params, this.inference, { settings, workspaceFolders: this.workspaceFolders, vscodeClient: this.vscodeClient }, onPartial, token));
  }

  modelStatus(): ModelStatus {
    return this.inference.status();
  }

  counters(): InferenceCounters {
    return this.inference.counters();
  }

  async setUpModel(params: SetUpModelParams, token: CancellationToken): Promise<ModelStatus> {
    await this.ready;
    const progress = this.client.workDone(params.workDoneToken);
    const { source, dispose } = this.cancellable(token, params.workDoneToken);
    progress.begin('Setting up BLIP-2', undefined, params.model ?? 'The configured model', true);
    try {
      const status = await this.inference.setUp(
        params.model,
        {
          report: (message, fraction) => progress.report(fraction === undefined ? 0 : Math.round(fraction * 100), message),
          // Said before anything is downloaded: a client that asked blip2/setUpPlan first has shown it already.
          cost: (plan) => {
            if (!params.costShown) this.client.showMessage('info', `BLIP-2: ${plan.message}`);
            progress.report(0, plan.message);
          },
        },
        source.token,
      );
      if (source.token.isCancellationRequested) throw cancelled();
      return status;
    } catch (e) {
      throw this.responseError(e, source.token);
    } finally {
      dispose();
      progress.done();
    }
  }

  /**
   * A failure of the BLIP-2 server, told once until it answers again: to VS Code as `blip2/serverFailed` (it offers
   * "Use the Local Model"), to other editors as a notice with the setting to clear. Never computed here instead.
   */
  private noticeServerFailure(status: ModelStatus): void {
    if (!status.server) return;
    if (status.state !== 'error') {
      if (status.state === 'ready') this.serverFailureTold = undefined;
      return;
    }
    const message = status.message ?? `The BLIP-2 server at ${status.server} failed.`;
    if (message === this.serverFailureTold) return;
    this.serverFailureTold = message;
    if (this.vscodeClient) this.client.serverFailed(message);
    else this.client.showMessage('warning', `BLIP-2: ${message} ${USE_LOCAL_MODEL_HINT}`);
  }

  async setUpPlan(params: SetUpModelParams, token: CancellationToken): Promise<SetUpPlan> {
    await this.ready;
    try {
      return await this.inference.planSetUp(params.model, token);
    } catch (e) {
      throw this.responseError(e, token);
    }
  }

  /** `window/workDoneProgress/cancel` from the client: the user pressed "Cancel" on a progress notification. */
  cancelProgress(token: ProgressToken): void {
    this.progressCancellations.get(token)?.cancel();
  }

  private cancellable(token: CancellationToken, progressToken: ProgressToken | undefined): { source: CancellationTokenSource; dispose(): void } {
    const linked = linkedSource(token);
    if (progressToken !== undefined) this.progressCancellations.set(progressToken, linked.source);
    return {
      source: linked.source,
      dispose: () => {
        linked.dispose();
        if (progressToken !== undefined) this.progressCancellations.delete(progressToken);
      },
    };
  }

  private async asResponse<T>(token: CancellationToken, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (e) {
      throw this.responseError(e, token);
    }
  }

  /** The one mapping from a failure to the client's error: cancelled, no model (the client offers set-up), or a sentence. */
  private responseError(e: unknown, token: CancellationToken): ResponseError<void> {
    if (e instanceof ResponseError) return e;
    if (token.isCancellationRequested) return cancelled();
    if (e instanceof RequestFailure) return new ResponseError(e.noModel ? Blip2ErrorCodes.NoModel : e.server ? Blip2ErrorCodes.ServerFailed : LSPErrorCodes.RequestFailed, e.message);
    if (isServerFailure(e)) return new ResponseError(Blip2ErrorCodes.ServerFailed, failureSentence(e, this.inference, this.vscodeClient));
    if (isNoModel(e, this.inference)) return new ResponseError(Blip2ErrorCodes.NoModel, failureSentence(e, this.inference, this.vscodeClient));
    return new ResponseError(LSPErrorCodes.RequestFailed, describeError(e));
  }
}

function cancelled(): ResponseError<void> {
  return new ResponseError(LSPErrorCodes.RequestCancelled, 'Cancelled.');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
