// The BLIP-2 extension: a client for the BLIP-2 language server (dist/server.js), which owns the model. Here are
// the commands, the status bar, the image chat and model set-up; hovers, diagnostics and code actions come from
// the server through vscode-languageclient.
import * as vscode from 'vscode';
import { ChatPanels } from './chat-panel';
import { ServerConnection } from './client';
import { registerCommands } from './commands';
import { changedReloadSettings, SECTION, userOnlySettingsIn } from './config';
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
    vscode.workspace.onDidChangeWorkspaceFolders(() => void warnAboutWorkspaceServer()),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration(SECTION)) void warnAboutWorkspaceServer();
    }),
    { dispose: () => void server.dispose() },
  );

  void warnAboutWorkspaceServer();
  await server.start();
}

const warned = new Set<string>();

/**
 * A workspace's settings that name a BLIP-2 server are ignored (the setting is machine-scoped, and the extension
 * reads it from the user's settings only): said once per file, so that whoever opened a repository asking for their
 * images knows it was refused, and where to set a server of their own.
 */
async function warnAboutWorkspaceServer(): Promise<void> {
  const files = [
    ...(vscode.workspace.workspaceFolders ?? []).map((folder) => ({ uri: vscode.Uri.joinPath(folder.uri, '.vscode', 'settings.json'), workspaceFile: false })),
    ...(vscode.workspace.workspaceFile?.scheme === 'file' ? [{ uri: vscode.workspace.workspaceFile, workspaceFile: true }] : []),
  ];
  for (const file of files) {
    let text: string;
    try {
      text = new TextDecoder().decode(await vscode.workspace.fs.readFile(file.uri));
    } catch {
      continue;
    }
    for (const key of userOnlySettingsIn(text, file.workspaceFile)) {
      const id = `${file.uri.toString()}#${key}`;
      if (warned.has(id)) continue;
      warned.add(id);
      void vscode.window.showWarningMessage(
        `BLIP-2: ${vscode.workspace.asRelativePath(file.uri)} sets ${key}; it is ignored, since a workspace must not choose where your images are sent. Set it in your user settings to use a server.`,
      );
    }
  }
}

export async function deactivate(): Promise<void> {
  await connection?.stop();
  connection = undefined;
}
