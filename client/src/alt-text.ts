// Writing alt text into documents: one image (from a hover link, a caption, the other beams of a quick fix)
// and every image of a file or the workspace, reviewed in the refactor preview before anything changes.
import { randomUUID } from 'node:crypto';
import * as vscode from 'vscode';
import { ExecuteCommandRequest, type LanguageClient } from 'vscode-languageclient/node';
import { altEditFor, editAlt } from '../../server/src/features/alt-text/alt-edit';
import { findImageElements, type ImageElement } from '../../server/src/features/images/find-images';
import { ServerCommands, type AltTextCommandArgs, type AltTextCommandResult } from '../../server/src/protocol/messages';
import type { ServerConnection } from './client';
import type { ImageSite } from './image-target';
import type { ModelSetup } from './model-setup';
import { describeRequestError } from './request-errors';
import { reportWorkDone } from './work-done';

const EDIT_LABEL = 'Alt text from BLIP-2';

interface RangeLike {
  start: { line: number; character: number };
  end: { line: number; character: number };
}

/**
 * `blip2.useAsAltText` [uri, range, text]: the image element at `range` (any range inside it: the image, its alt
 * text, or the insertion point of a missing alt) gets `text` as its alt text.
 */
export async function setAltTextAt(uriArg: unknown, rangeArg: unknown, text: unknown): Promise<boolean> {
  if (typeof text !== 'string' || !text.trim()) return false;
  const location = await openLocation(uriArg, rangeArg);
  if (!location) return false;
  const { document, offset } = location;
  const image = innermostImageAt(findImageElements(document.getText(), document.languageId), offset);
  if (!image) {
    void vscode.window.showWarningMessage('BLIP-2: there is no longer an image with alt text at that place.');
    return false;
  }
  return applyAltEdit(document, image, text);
}

/** `blip2.chooseAltText` [uri, range, alternatives]: pick one of the other captions for the alt text just written. */
export async function chooseAltText(uriArg: unknown, rangeArg: unknown, alternatives: unknown): Promise<boolean> {
  const options = Array.isArray(alternatives) ? alternatives.filter((a): a is string => typeof a === 'string' && a.trim() !== '') : [];
  if (options.length === 0) {
    void vscode.window.showInformationMessage('BLIP-2 has no other captions for this image.');
    return false;
  }
  const picked = await vscode.window.showQuickPick(
    options.map((label) => ({ label })),
    { title: 'BLIP-2: other captions for this image', placeHolder: 'Pick one to replace the alt text just inserted' },
  );
  return picked ? setAltTextAt(uriArg, rangeArg, picked.label) : false;
}

/** Sets the alt text of an image found by a command in the document it came from. */
export async function setAltTextAtSite(site: ImageSite, text: string): Promise<boolean> {
  const document = site.document;
  if (document.isClosed) {
    void vscode.window.showWarningMessage('BLIP-2: the document with the image was closed.');
    return false;
  }
  // The user asked for this text, so it replaces whatever alt text they typed meanwhile.
  const edit = editAlt(document.getText(), document.languageId, site.anchor, text, { overwriteChangedAlt: true });
  if (!edit) {
    void vscode.window.showWarningMessage('BLIP-2: the image is no longer in the document, or its alt text is set by code.');
    return false;
  }
  const workspaceEdit = new vscode.WorkspaceEdit();
  workspaceEdit.replace(document.uri, offsetRange(document, edit.range), edit.newText);
  return vscode.workspace.applyEdit(workspaceEdit);
}

async function applyAltEdit(document: vscode.TextDocument, image: ImageElement, text: string): Promise<boolean> {
  const edit = altEditFor(image, text);
  if (!edit) {
    void vscode.window.showWarningMessage('BLIP-2: this image\'s alt text is computed by code, so it is left alone.');
    return false;
  }
  const workspaceEdit = new vscode.WorkspaceEdit();
  workspaceEdit.replace(document.uri, offsetRange(document, edit.range), edit.newText);
  return vscode.workspace.applyEdit(workspaceEdit);
}

async function openLocation(uriArg: unknown, rangeArg: unknown): Promise<{ document: vscode.TextDocument; offset: number } | undefined> {
  const uri = typeof uriArg === 'string' ? vscode.Uri.parse(uriArg, true) : uriArg instanceof vscode.Uri ? uriArg : undefined;
  const range = rangeArg as RangeLike | undefined;
  if (!uri || typeof range?.start?.line !== 'number' || typeof range.start.character !== 'number') return undefined;
  const document = await vscode.workspace.openTextDocument(uri);
  return { document, offset: document.offsetAt(new vscode.Position(range.start.line, range.start.character)) };
}

function innermostImageAt(images: readonly ImageElement[], offset: number): ImageElement | undefined {
  let best: ImageElement | undefined;
  for (const image of images) {
    if (image.range.start <= offset && offset <= image.range.end) {
      if (!best || image.range.end - image.range.start < best.range.end - best.range.start) best = image;
    }
  }
  return best;
}

function offsetRange(document: vscode.TextDocument, range: { start: number; end: number }): vscode.Range {
  return new vscode.Range(document.positionAt(range.start), document.positionAt(range.end));
}

/**
 * "Generate Missing Alt Text": the server captions every image that needs it (one file, or the workspace when
 * `uri` is undefined) and returns one edit; the user reviews it in the refactor preview, where it applies as
 * one undoable step or not at all.
 */
export async function generateMissingAltText(connection: ServerConnection, setup: ModelSetup, uri: vscode.Uri | undefined): Promise<void> {
  const client = await connection.ready('generate alt text');
  if (!client) return;
  const where = uri ? vscode.workspace.asRelativePath(uri) : 'the workspace';
  const args: AltTextCommandArgs = { uri: uri ? client.code2ProtocolConverter.asUri(uri) : undefined };

  let result: AltTextCommandResult | undefined;
  try {
    result = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `BLIP-2: alt text for ${where}`, cancellable: true },
      async (progress, token) => {
        const workDoneToken = randomUUID();
        const subscription = reportWorkDone(client, workDoneToken, progress);
        try {
          return (await client.sendRequest(
            ExecuteCommandRequest.type,
            { command: ServerCommands.generateMissingAltText, arguments: [args], workDoneToken },
            token,
          )) as AltTextCommandResult | undefined;
        } finally {
          subscription.dispose();
        }
      },
    );
  } catch (error) {
    await setup.afterFailure(describeRequestError(error), 'generate alt text');
    return;
  }
  if (!result) return;
  await reviewAndApply(client, connection.output, result, where);
}

async function reviewAndApply(client: LanguageClient, output: vscode.LogOutputChannel, result: AltTextCommandResult, where: string): Promise<void> {
  const failures = result.failures ?? [];
  for (const failure of failures) output.warn(`No caption for ${failure.image} in ${failure.uri}: ${failure.reason}`);
  const failureNote = failures.length ? ` ${failures.length} image${failures.length === 1 ? '' : 's'} could not be captioned.` : '';

  if (!result.images) {
    const message = `BLIP-2: no image in ${where} needs alt text.${failureNote}`;
    await (failures.length ? showWithDetails(vscode.window.showWarningMessage, message, output) : vscode.window.showInformationMessage(message));
    return;
  }

  const converted = await client.protocol2CodeConverter.asWorkspaceEdit(result.edit);
  const count = `${result.images} image${result.images === 1 ? '' : 's'} in ${result.files} file${result.files === 1 ? '' : 's'}`;
  // Changes that need confirmation start unticked in the preview: say so, or "Apply" would seem to do nothing.
  void vscode.window.showInformationMessage(
    `BLIP-2 has alt text for ${count} ready to review. In the Refactor Preview, tick the changes to keep (a file's box ticks all of its changes), then Apply.`,
  );
  const applied = await vscode.workspace.applyEdit(needingConfirmation(converted), { isRefactoring: true });
  if (applied && failures.length) {
    await showWithDetails(vscode.window.showWarningMessage, `BLIP-2: alt text applied.${failureNote}`, output);
  } else if (!applied && failures.length) {
    await showWithDetails(vscode.window.showWarningMessage, `BLIP-2: alt text was not applied.${failureNote}`, output);
  }
}

/**
 * The same text edits, each marked as needing confirmation: that makes VS Code open the refactor preview, where
 * the user sees every file's diff and can untick single changes before applying.
 */
export function needingConfirmation(edit: vscode.WorkspaceEdit): vscode.WorkspaceEdit {
  const reviewed = new vscode.WorkspaceEdit();
  for (const [uri, edits] of edit.entries()) {
    const metadata: vscode.WorkspaceEditEntryMetadata = {
      needsConfirmation: true,
      label: EDIT_LABEL,
      description: vscode.workspace.asRelativePath(uri),
    };
    for (const textEdit of edits) reviewed.replace(uri, textEdit.range, textEdit.newText, metadata);
  }
  return reviewed;
}

async function showWithDetails(
  show: (message: string, ...items: string[]) => Thenable<string | undefined>,
  message: string,
  output: vscode.LogOutputChannel,
): Promise<void> {
  if ((await show(message, 'Show Details')) === 'Show Details') output.show(true);
}
