import type { Diagnostic, ProgressToken, WorkspaceEdit } from 'vscode-languageserver-protocol';
import type { AnswerPartial, ModelStatus } from '../protocol/messages';

/** Work-done progress on a token the client passed with a request; a no-op without one. */
export interface WorkDoneReporter {
  begin(title: string, percentage?: number, message?: string, cancellable?: boolean): void;
  report(percentage: number, message?: string): void;
  done(): void;
}

/**
 * Everything the server says to the client, and asks of it. The server class talks only to this, so it can be
 * run in-process with a fake; `connection-client.ts` implements it over a vscode-languageserver connection.
 */
export interface LspClient {
  /** `workspace/configuration` for one section; undefined when the client cannot answer. */
  configuration(section: string, scopeUri?: string): Promise<unknown>;
  /** Asks to be told about configuration changes (dynamic registration), for clients that need to be asked. */
  watchConfiguration(): void;
  /** Asks to be told when files matching the glob change (dynamic registration of didChangeWatchedFiles). */
  watchFiles(globPattern: string): void;
  publishDiagnostics(uri: string, version: number | undefined, diagnostics: Diagnostic[]): void;
  /** `workspace/applyEdit`; resolves with whether the client applied it. */
  applyEdit(label: string, edit: WorkspaceEdit): Promise<boolean>;
  modelStatusChanged(status: ModelStatus): void;
  /** The BLIP-2 server failed (`blip2/serverFailed`, for the VS Code client, which offers the local model). */
  serverFailed(message: string): void;
  workDone(token: ProgressToken | undefined): WorkDoneReporter;
  answerPartial(token: ProgressToken, partial: AnswerPartial): void;
  /** A notice (`window/showMessage`): no buttons, so no editor blocks on it. */
  showMessage(kind: 'error' | 'warning' | 'info', message: string): void;
  log(line: string): void;
}
