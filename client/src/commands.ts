// The commands, registered once for the extension's life: they work whether or not the server runs, and say
// why nothing happens when it does not.
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import * as vscode from 'vscode';
import {
  AnswerPartialType,
  AskRequest,
  CaptionRequest,
  CountersRequest,
  type GenerationResult,
  type InferenceCounters,
} from '../../server/src/protocol/messages';
import { chooseAltText, generateMissingAltText, setAltTextAt, setAltTextAtSite } from './alt-text';
import type { LanguageClient } from 'vscode-languageclient/node';
import type { ChatPanels } from './chat-panel';
import { MAX_QUESTION_LENGTH } from './chat-messages';
import type { ServerConnection } from './client';
import { COMMANDS, type CommandKey } from './command-ids';
import { EXTENSION_ID } from './config';
import { resolveImageTarget, type ImageTarget } from './image-target';
import { imageMarkup, imageMarkupLanguage } from './insert-text';
import type { ModelSetup } from './model-setup';
import { describeRequestError } from './request-errors';
import { useLocalModel } from './server-failure';
import { generationFacts, modelStatusDetail } from './status-text';

type Handler = (...args: unknown[]) => unknown;

export interface CommandContext {
  connection: ServerConnection;
  setup: ModelSetup;
  chats: ChatPanels;
}

export function registerCommands(context: CommandContext): vscode.Disposable {
  const { connection, setup, chats } = context;
  // Typed by CommandKey, so a command added to COMMANDS without a handler does not compile.
  const handlers: Record<CommandKey, Handler> = {
    captionImage: (arg) => captionImage(context, arg),
    askAboutImage: (arg, question) => askAboutImage(context, arg, typeof question === 'string' ? question : undefined),
    openImageChat: async (arg) => {
      const target = await resolveImageTarget(arg, 'chat about');
      if (target) chats.open(target);
    },
    generateMissingAltTextInFile: async (arg) => {
      const uri = arg instanceof vscode.Uri ? arg : vscode.window.activeTextEditor?.document.uri;
      if (!uri) {
        void vscode.window.showInformationMessage('BLIP-2: open a markdown, HTML, JSX or TSX file to generate its missing alt text.');
        return;
      }
      await generateMissingAltText(connection, setup, uri);
    },
    generateMissingAltTextInWorkspace: async () => {
      if (!vscode.workspace.workspaceFolders?.length) {
        void vscode.window.showInformationMessage('BLIP-2: open a folder to generate missing alt text across it.');
        return;
      }
      await generateMissingAltText(connection, setup, undefined);
    },
    setUpModel: () => setup.command(),
    showModelStatus: () => showModelStatus(connection),
    restartServer: () =>
      vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'Restarting the BLIP-2 server…' }, () => connection.restart()),
    showOutput: () => connection.output.show(),
    useAsAltText: (uri, range, text) => setAltTextAt(uri, range, text),
    useLocalModel: () => useLocalModel(),
    setServerApiKey: async () => {
      const key = await vscode.window.showInputBox({
        title: 'BLIP-2: API key of the BLIP-2 server',
        prompt: 'Kept in VS Code\'s secret storage and sent only to blip2.server.url, as "Authorization: Bearer". Leave empty to remove it.',
        password: true,
        ignoreFocusOut: true,
      });
      if (key === undefined) return;
      await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'Restarting the BLIP-2 server with the key…' }, () => connection.setServerApiKey(key.trim() || undefined));
    },
    chooseAltText: (uri, range, alternatives) => chooseAltText(uri, range, alternatives),
  };
  return vscode.Disposable.from(
    ...(Object.keys(handlers) as CommandKey[]).map((key) => vscode.commands.registerCommand(COMMANDS[key], handlers[key])),
  );
}

/** Captions an image and offers what to do with the caption; returns the result (for other extensions, tests). */
async function captionImage({ connection, setup }: CommandContext, arg: unknown): Promise<GenerationResult | undefined> {
  const target = await resolveImageTarget(arg, 'caption');
  if (!target) return undefined;
  const client = await connection.ready('caption images');
  if (!client) return undefined;
  let result: GenerationResult;
  try {
    result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `BLIP-2: captioning ${target.label}…`, cancellable: true },
      (_progress, token) => client.sendRequest(CaptionRequest.type, { image: target.image }, token),
    );
  } catch (error) {
    await setup.afterFailure(describeRequestError(error), `caption ${target.label}`);
    return undefined;
  }
  void offerCaption(target, result, { client, setup });
  return result;
}

/** Where the caption command's follow-ups send their requests and report failures. */
interface FollowUp {
  client: LanguageClient;
  setup: ModelSetup;
}

async function offerCaption(target: ImageTarget, result: GenerationResult, followUp: FollowUp): Promise<void> {
  const actions = captionActions(target, result.text);
  const quick = actions.filter((action) => action.quick);
  const more = 'More…';
  const choice = await vscode.window.showInformationMessage(
    `Caption of ${target.label}: "${result.text}" (${generationFacts(result)})`,
    ...quick.map((action) => action.label),
    more,
  );
  if (choice === more) await pickCaptionAndAction(target, result, followUp);
  else await quick.find((action) => action.label === choice)?.run();
}

const OTHER_CAPTIONS = 'Other captions…';

async function pickCaptionAndAction(target: ImageTarget, result: GenerationResult, { client, setup }: FollowUp): Promise<void> {
  let text = result.text;
  const action = await vscode.window.showQuickPick(
    [
      ...captionActions(target, text).map((a) => ({ label: a.label, description: a.description, run: a.run })),
      { label: OTHER_CAPTIONS, description: 'from a beam search run for them now', run: undefined },
    ],
    { title: `"${text}"`, placeHolder: 'What to do with this caption' },
  );
  if (action?.label !== OTHER_CAPTIONS) {
    await action?.run?.();
    return;
  }
  // The other captions cost a beam search of their own, so they are computed only when asked for.
  let others: GenerationResult;
  try {
    others = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `BLIP-2: finding other captions of ${target.label}…`, cancellable: true },
      (_progress, token) => client.sendRequest(CaptionRequest.type, { image: target.image, alternatives: true }, token),
    );
  } catch (error) {
    await setup.afterFailure(describeRequestError(error), `find other captions of ${target.label}`);
    return;
  }
  if (others.alternatives.length === 0) {
    void vscode.window.showInformationMessage(`BLIP-2 found no other caption of ${target.label}.`);
    return;
  }
  const picked = await vscode.window.showQuickPick(
    [others.text, ...others.alternatives].map((label, index) => ({ label, description: index === 0 ? 'the caption shown' : undefined })),
    { title: `BLIP-2 captions of ${target.label}`, placeHolder: 'Pick a caption' },
  );
  if (!picked) return;
  text = picked.label;
  const next = await vscode.window.showQuickPick(
    captionActions(target, text).map((a) => ({ label: a.label, description: a.description, run: a.run })),
    { title: `"${text}"`, placeHolder: 'What to do with this caption' },
  );
  await next?.run();
}

interface CaptionAction {
  label: string;
  description?: string;
  /** Offered as a button on the notification, not only in the "More…" list. */
  quick: boolean;
  run: () => Promise<unknown>;
}

function captionActions(target: ImageTarget, text: string): CaptionAction[] {
  const actions: CaptionAction[] = [
    { label: 'Copy', quick: true, run: () => Promise.resolve(vscode.env.clipboard.writeText(text)) },
  ];
  const site = target.site;
  if (site) {
    actions.push({
      label: 'Use as Alt Text',
      description: `in ${vscode.workspace.asRelativePath(site.document.uri)}`,
      quick: true,
      run: () => setAltTextAtSite(site, text),
    });
  }
  const editor = vscode.window.activeTextEditor;
  if (editor) {
    actions.push({
      label: 'Insert at Cursor',
      description: vscode.workspace.asRelativePath(editor.document.uri),
      quick: !site,
      run: () => Promise.resolve(editor.edit((builder) => builder.replace(editor.selection, text))),
    });
    const language = imageMarkupLanguage(editor.document.languageId);
    if (language && !site) {
      actions.push({
        label: 'Insert Image Here',
        description: 'the image with this caption as its alt text',
        quick: false,
        run: () => Promise.resolve(editor.edit((builder) => builder.replace(editor.selection, imageMarkup(language, imageSource(editor.document, target), text)))),
      });
    }
  }
  actions.push(
    { label: 'Ask a Question…', quick: false, run: () => Promise.resolve(vscode.commands.executeCommand(COMMANDS.askAboutImage, target.image)) },
    { label: 'Open Image Chat', quick: false, run: () => Promise.resolve(vscode.commands.executeCommand(COMMANDS.openImageChat, target.image)) },
  );
  return actions;
}

/** How the document should name the image: relative to it when both are files, else the address. */
function imageSource(document: vscode.TextDocument, target: ImageTarget): string {
  if (document.uri.scheme !== 'file' || target.uri.scheme !== 'file') return target.image;
  return path.relative(path.dirname(document.uri.fsPath), target.uri.fsPath).split(path.sep).join('/');
}

async function askAboutImage({ connection, setup, chats }: CommandContext, arg: unknown, given?: string): Promise<GenerationResult | undefined> {
  const target = await resolveImageTarget(arg, 'ask about');
  if (!target) return undefined;
  const question =
    given ??
    (await vscode.window.showInputBox({
      title: `BLIP-2: ask about ${target.label}`,
      prompt: 'A question about the image, answered on this machine.',
      placeHolder: 'What is in the picture?',
      validateInput: (value) => (value.length > MAX_QUESTION_LENGTH ? `At most ${MAX_QUESTION_LENGTH} characters.` : undefined),
    }));
  if (!question?.trim()) return undefined;
  const client = await connection.ready('answer questions');
  if (!client) return undefined;

  let result: GenerationResult;
  try {
    result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `BLIP-2: ${question.trim()}`, cancellable: true },
      async (progress, token) => {
        const partialResultToken = randomUUID();
        const partials = client.onProgress(AnswerPartialType, partialResultToken, ({ textSoFar }) => progress.report({ message: textSoFar }));
        try {
          return await client.sendRequest(AskRequest.type, { image: target.image, question: question.trim(), partialResultToken }, token);
        } finally {
          partials.dispose();
        }
      },
    );
  } catch (error) {
    await setup.afterFailure(describeRequestError(error), 'answer the question');
    return undefined;
  }
  void (async () => {
    const choice = await vscode.window.showInformationMessage(
      `${question.trim()} — BLIP-2: "${result.text}" (${generationFacts(result)})`,
      'Copy',
      'Ask Another…',
      'Open Image Chat',
    );
    if (choice === 'Copy') await vscode.env.clipboard.writeText(result.text);
    else if (choice === 'Ask Another…') await askAboutImage({ connection, setup, chats }, target.image);
    else if (choice === 'Open Image Chat') chats.open(target);
  })();
  return result;
}

async function showModelStatus(connection: ServerConnection): Promise<void> {
  await connection.refreshModelStatus();
  let counters: InferenceCounters | undefined;
  const client = connection.languageClient;
  if (client && connection.state.kind === 'running') {
    counters = await client.sendRequest(CountersRequest.type).then(
      (value) => value,
      () => undefined,
    );
  }
  const choice = await vscode.window.showInformationMessage(
    'BLIP-2 model status',
    { modal: true, detail: modelStatusDetail(connection.state, counters) },
    'Set Up Model…',
    'Restart Server',
    'Open Settings',
    'Show Output',
  );
  switch (choice) {
    case 'Set Up Model…':
      await vscode.commands.executeCommand(COMMANDS.setUpModel);
      break;
    case 'Restart Server':
      await vscode.commands.executeCommand(COMMANDS.restartServer);
      break;
    case 'Open Settings':
      await vscode.commands.executeCommand('workbench.action.openSettings', `@ext:${EXTENSION_ID}`);
      break;
    case 'Show Output':
      connection.output.show();
      break;
  }
}
