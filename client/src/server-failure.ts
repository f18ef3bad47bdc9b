// A failure of the BLIP-2 server that blip2.server.url names: one sentence and the way back to the model on this
// machine. Nothing is computed here instead unless the user says so.
import * as vscode from 'vscode';
import { ClientCommands } from '../../server/src/protocol/messages';
import { SECTION } from './config';

const USE_LOCAL = 'Use the Local Model';
const SET_KEY = 'Set API Key…';
/** Sentences on screen now: the same failure from a hover and a command is one notification. */
const showing = new Set<string>();

export async function showServerFailure(message: string): Promise<void> {
  if (showing.has(message)) return;
  showing.add(message);
  try {
    const buttons = /API key/.test(message) ? [USE_LOCAL, SET_KEY] : [USE_LOCAL];
    const choice = await vscode.window.showWarningMessage(`BLIP-2: ${message}`, ...buttons);
    if (choice === USE_LOCAL) await vscode.commands.executeCommand(ClientCommands.useLocalModel);
    else if (choice === SET_KEY) await vscode.commands.executeCommand('blip2.setServerApiKey');
  } finally {
    showing.delete(message);
  }
}

/**
 * Empties the user's blip2.server.url: the language server switches to the model here when it sees the change.
 * Empty rather than removed: in a remote window VS Code writes a machine-scoped setting into the remote machine's
 * settings, where an empty value overrides one in the local user settings and a removed one would not.
 */
export async function useLocalModel(): Promise<void> {
  const configuration = vscode.workspace.getConfiguration(SECTION);
  if (!configuration.inspect<string>('server.url')?.globalValue) return;
  await configuration.update('server.url', '', vscode.ConfigurationTarget.Global);
  void vscode.window.showInformationMessage('BLIP-2: captions and answers are computed on this machine again (blip2.server.url cleared).');
}
