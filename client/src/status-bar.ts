// The status bar item: the server's and the model's state at a glance; a click shows the details.
import * as vscode from 'vscode';
import type { ServerConnection } from './client';
import { statusBarView } from './status-text';

export const SHOW_MODEL_STATUS_COMMAND = 'blip2.showModelStatus';

export function createStatusBar(connection: ServerConnection): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('blip2.status', vscode.StatusBarAlignment.Right, 100);
  item.name = 'BLIP-2 Model';
  item.command = SHOW_MODEL_STATUS_COMMAND;
  const update = (): void => {
    const view = statusBarView(connection.state);
    item.text = view.text;
    item.tooltip = view.tooltip;
    item.accessibilityInformation = { label: view.accessibilityLabel, role: 'button' };
    item.backgroundColor =
      view.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : view.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  };
  update();
  item.show();
  const subscription = connection.onDidChangeState(update);
  return vscode.Disposable.from(subscription, item);
}
