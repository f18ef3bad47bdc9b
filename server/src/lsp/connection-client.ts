import {
  DidChangeConfigurationNotification,
  DidChangeWatchedFilesNotification,
  MessageType,
  ShowMessageNotification,
  type Connection,
} from 'vscode-languageserver/node';
import type { Diagnostic, ProgressToken, WorkspaceEdit } from 'vscode-languageserver-protocol';
import { AnswerPartialType, ModelStatusNotification,
  ServerFailureNotification, type AnswerPartial, type ModelStatus } from '../protocol/messages';
import type { LspClient, WorkDoneReporter } from './lsp-client';

/** `LspClient` over a vscode-languageserver connection. */
export class ConnectionClient implements LspClient {
  constructor(private readonly connection: Connection) {}

  async configuration(section: string, scopeUri?: string): Promise<unknown> {
    try {
      return await this.connection.workspace.getConfiguration(scopeUri ? { section, scopeUri } : { section });
    } catch (e) {
      this.log(`workspace/configuration for ${section} failed: ${(e as Error).message}`);
      return undefined;
    }
  }

  watchConfiguration(): void {
    this.connection.client.register(DidChangeConfigurationNotification.type, { section: 'blip2' }).catch((e: Error) => {
      this.log(`registering for configuration changes failed: ${e.message}`);
    });
  }

  watchFiles(globPattern: string): void {
    this.connection.client.register(DidChangeWatchedFilesNotification.type, { watchers: [{ globPattern }] }).catch((e: Error) => {
      this.log(`registering a watcher for ${globPattern} failed: ${e.message}`);
    });
  }

  publishDiagnostics(uri: string, version: number | undefined, diagnostics: Diagnostic[]): void {
    void this.connection.sendDiagnostics({ uri, version, diagnostics });
  }

  async applyEdit(label: string, edit: WorkspaceEdit): Promise<boolean> {
    const result = await this.connection.workspace.applyEdit({ label, edit });
    if (!result.applied && result.failureReason) this.log(`workspace/applyEdit was refused: ${result.failureReason}`);
    return result.applied;
  }

  modelStatusChanged(status: ModelStatus): void {
    void this.connection.sendNotification(ModelStatusNotification.type, status);
  }

  serverFailed(message: string): void {
    void this.connection.sendNotification(ServerFailureNotification.type, { message });
  }

  workDone(token: ProgressToken | undefined): WorkDoneReporter {
    const reporter = this.connection.window.attachWorkDoneProgress(token);
    return {
      begin: (title, percentage, message, cancellable) => reporter.begin(title, percentage, message, cancellable),
      report: (percentage, message) => (message === undefined ? reporter.report(percentage) : reporter.report(percentage, message)),
      done: () => reporter.done(),
    };
  }

  answerPartial(token: ProgressToken, partial: AnswerPartial): void {
    void this.connection.sendProgress(AnswerPartialType, token, partial);
  }

  showMessage(kind: 'error' | 'warning' | 'info', message: string): void {
    // Not the library's show*Message: those send window/showMessageRequest, which Neovim turns into a prompt.
    const type = kind === 'error' ? MessageType.Error : kind === 'warning' ? MessageType.Warning : MessageType.Info;
    void this.connection.sendNotification(ShowMessageNotification.type, { type, message });
  }

  log(line: string): void {
    this.connection.console.log(line);
  }
}
