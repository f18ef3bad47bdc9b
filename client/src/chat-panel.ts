// "Open Image Chat": a webview panel per image. The page keeps the conversation in its own state; this side
// runs each question with the earlier turns and streams the answer through the ask request's partial results.
import { randomBytes, randomUUID } from 'node:crypto';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { AnswerPartialType, AskRequest, type AskParams, type GenerationResult } from '../../server/src/protocol/messages';
import { chatPageHtml, makeNonce } from './chat-html';
import { CHAT_VIEW_TYPE, parseWebviewMessage, type ExtensionMessage, type WebviewMessage } from './chat-messages';
import type { ServerConnection } from './client';
import type { ImageTarget } from './image-target';
import type { ModelSetup } from './model-setup';
import { describeRequestError } from './request-errors';
import { statusBarView, type ServerState } from './status-text';

/** What the page saves with setState; VS Code hands it back when it restores the panel after a reload. */
interface SavedState {
  imageUri?: unknown;
}

export class ChatPanels implements vscode.Disposable {
  private readonly sessions = new Map<string, ChatSession>();
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly extensionUri: vscode.Uri,
    private readonly connection: ServerConnection,
    private readonly setup: ModelSetup,
  ) {
    this.disposables.push(
      vscode.window.registerWebviewPanelSerializer(CHAT_VIEW_TYPE, {
        deserializeWebviewPanel: async (panel, state: SavedState | undefined) => {
          const imageUri = typeof state?.imageUri === 'string' ? state.imageUri : undefined;
          if (!imageUri) {
            panel.dispose();
            return;
          }
          const uri = vscode.Uri.parse(imageUri, true);
          this.attach(panel, { image: imageUri, uri, label: path.posix.basename(uri.path) });
        },
      }),
      connection.onDidChangeState((state) => {
        for (const session of this.sessions.values()) session.postStatus(state);
      }),
    );
  }

  open(target: ImageTarget): void {
    const existing = this.sessions.get(target.image);
    if (existing) {
      existing.panel.reveal();
      return;
    }
    const panel = vscode.window.createWebviewPanel(CHAT_VIEW_TYPE, `Chat: ${target.label}`, vscode.ViewColumn.Beside, webviewOptions(this.extensionUri, target));
    this.attach(panel, target);
  }

  private attach(panel: vscode.WebviewPanel, target: ImageTarget): void {
    panel.title = `Chat: ${target.label}`;
    panel.iconPath = vscode.Uri.joinPath(this.extensionUri, 'media', 'icon.png');
    panel.webview.options = webviewOptions(this.extensionUri, target);
    const session = new ChatSession(panel, target, this.extensionUri, this.connection, this.setup);
    this.sessions.set(target.image, session);
    panel.onDidDispose(() => {
      session.dispose();
      if (this.sessions.get(target.image) === session) this.sessions.delete(target.image);
    });
  }

  dispose(): void {
    for (const session of this.sessions.values()) session.panel.dispose();
    for (const disposable of this.disposables) disposable.dispose();
  }
}

function webviewOptions(extensionUri: vscode.Uri, target: ImageTarget): vscode.WebviewOptions & vscode.WebviewPanelOptions {
  const roots = [vscode.Uri.joinPath(extensionUri, 'media')];
  if (target.uri.scheme === 'file') roots.push(vscode.Uri.file(path.dirname(target.uri.fsPath)));
  return { enableScripts: true, enableCommandUris: false, localResourceRoots: roots };
}

class ChatSession {
  /** Questions running now, by the page's request id. */
  private readonly running = new Map<string, vscode.CancellationTokenSource>();
  /** What the page missed while hidden (a hidden webview is unloaded and cannot receive messages). */
  private outbox: ExtensionMessage[] = [];
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    readonly panel: vscode.WebviewPanel,
    private readonly target: ImageTarget,
    private readonly extensionUri: vscode.Uri,
    private readonly connection: ServerConnection,
    private readonly setup: ModelSetup,
  ) {
    this.disposables.push(panel.webview.onDidReceiveMessage((raw) => this.received(parseWebviewMessage(raw))));
    panel.webview.html = this.html();
  }

  private html(): string {
    const webview = this.panel.webview;
    const media = (file: string): string => webview.asWebviewUri(vscode.Uri.joinPath(this.extensionUri, 'media', file)).toString();
    const remote = this.target.uri.scheme === 'http' || this.target.uri.scheme === 'https';
    return chatPageHtml({
      nonce: makeNonce(randomBytes),
      cspSource: webview.cspSource,
      scriptUri: media('chat.js'),
      styleUri: media('chat.css'),
      imageSrc: remote ? this.target.image : webview.asWebviewUri(this.target.uri).toString(),
      imageUri: this.target.image,
      imageLabel: this.target.label,
      remoteOrigin: remote ? new URL(this.target.image).origin : undefined,
    });
  }

  private received(message: WebviewMessage | undefined): void {
    if (!message) return;
    switch (message.type) {
      case 'ready': {
        const pending = this.outbox;
        this.outbox = [];
        this.post({ type: 'hello', activeRequestIds: [...this.running.keys()] });
        for (const queued of pending) this.post(queued);
        this.postStatus(this.connection.state);
        break;
      }
      case 'ask':
        void this.ask(message.requestId, message.question, message.history);
        break;
      case 'cancel':
        this.running.get(message.requestId)?.cancel();
        break;
      case 'copy':
        void vscode.env.clipboard.writeText(message.text);
        break;
    }
  }

  private async ask(requestId: string, question: string, history: AskParams['history']): Promise<void> {
    const client = await this.connection.ready('answer questions');
    if (!client) {
      this.post({ type: 'error', requestId, question, message: 'The BLIP-2 server is not running.' });
      return;
    }
    const source = new vscode.CancellationTokenSource();
    this.running.set(requestId, source);
    const partialResultToken = randomUUID();
    const partials = client.onProgress(AnswerPartialType, partialResultToken, ({ textSoFar }) =>
      this.post({ type: 'partial', requestId, textSoFar }),
    );
    try {
      const result: GenerationResult = await client.sendRequest(
        AskRequest.type,
        { image: this.target.image, question, history, partialResultToken },
        source.token,
      );
      this.post({
        type: 'answer',
        requestId,
        question,
        text: result.text,
        meta: { model: result.model, precision: result.precision, device: result.device, durationMs: result.durationMs, cached: result.cached },
      });
    } catch (error) {
      const failure = describeRequestError(error);
      const message =
        failure.kind === 'cancelled' ? 'Stopped.' : failure.kind === 'noModel' ? 'No model is set up yet.' : `No answer: ${failure.message}`;
      this.post({ type: 'error', requestId, question, message });
      if (failure.kind === 'noModel') void this.setup.afterFailure(failure, 'answer the question');
    } finally {
      partials.dispose();
      source.dispose();
      this.running.delete(requestId);
    }
  }

  postStatus(state: ServerState): void {
    const model = state.kind === 'running' ? state.model : undefined;
    const ready = model !== undefined && (model.state === 'ready' || model.state === 'busy' || model.state === 'unloaded');
    this.post({ type: 'status', text: statusBarView(state).accessibilityLabel, ready });
  }

  private post(message: ExtensionMessage): void {
    if (this.panel.visible) {
      // A page that is reloading drops messages; the outcome of a question must still reach it.
      void this.panel.webview.postMessage(message).then((delivered) => {
        if (!delivered && (message.type === 'answer' || message.type === 'error')) this.queue(message);
      });
      return;
    }
    this.queue(message);
  }

  private queue(message: ExtensionMessage): void {
    if (message.type === 'status' || message.type === 'hello') return; // sent afresh on 'ready'
    // Only the latest partial answer of a question matters.
    if (message.type === 'partial') this.outbox = this.outbox.filter((m) => !(m.type === 'partial' && m.requestId === message.requestId));
    this.outbox.push(message);
  }

  dispose(): void {
    for (const source of this.running.values()) source.cancel();
    for (const disposable of this.disposables) disposable.dispose();
  }
}
