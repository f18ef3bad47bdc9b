// Work-done progress that the server reports against a token the client made, shown in a progress notification.
import type * as vscode from 'vscode';
import { WorkDoneProgress, type LanguageClient } from 'vscode-languageclient/node';

/**
 * Forwards the server's `$/progress` for `token` to `progress`. LSP sends percentages as totals and VS Code
 * wants increments, so the last one is remembered.
 */
export function reportWorkDone(
  client: LanguageClient,
  token: string,
  progress: vscode.Progress<{ message?: string; increment?: number }>,
): vscode.Disposable {
  let reported = 0;
  return client.onProgress(WorkDoneProgress.type, token, (value) => {
    if (value.kind === 'end') {
      progress.report({ message: value.message, increment: Math.max(0, 100 - reported) });
      reported = 100;
      return;
    }
    const percentage = value.percentage;
    const increment = percentage === undefined ? undefined : Math.max(0, percentage - reported);
    if (percentage !== undefined) reported = Math.max(reported, percentage);
    progress.report({ message: value.kind === 'begin' ? (value.message ?? value.title) : value.message, increment });
  });
}
