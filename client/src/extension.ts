// The BLIP-2 extension: a client for the BLIP-2 language server (dist/server.js), which owns the model. Here are
// the commands, the status bar, the image chat and model set-up; hovers, diagnostics and code actions come from
// the server through vscode-languageclient.
import * as vscode from 'vscode';
import { ChatPanels } from './chat-panel';
import { ServerConnection } from './client';
import { registerCommands } from './commands';
import { changedReloadSettings, SECTION } from './config';
import { ModelSetup } from './model-setup';
import { createStatusBar } from './status-bar';

let connection: ServerConnection | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('BLIP-2', { log: true });
  connection = new ServerConnection(context, output);
  const server = connection;

  let settingModelOurselves = false;
  const setup = new ModelSetup(context, server, (expected) => (settingModelOurselves = expected));
  const chats = new ChatPanels(context.extensionUri, server, setup);

  context.subscriptions.push(
    output,
    setup,
    chats,
    createStatusBar(server),
    registerCommands({ connection: server, setup, chats }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration(SECTION)) return;
      const changed = changedReloadSettings((key) => event.affectsConfiguration(key));
      if (!changed.length || settingModelOurselves) return;
      const names = changed.map((key) => `"${SECTION}.${key}"`).join(', ');
      const choice = await vscode.window.showInformationMessage(
        `BLIP-2 uses the new ${names} after the server restarts.`,
        'Restart Now',
      );
      if (choice === 'Restart Now') await server.restart();
    }),
    // Workspace values of the restricted settings (the model, remote images) count only once trusted.
    vscode.workspace.onDidGrantWorkspaceTrust(() => server.restart()),
    { dispose: () => void server.dispose() },
  );

  await server.start();
}

export async function deactivate(): Promise<void> {
  await connection?.stop();
  connection = undefined;
}
