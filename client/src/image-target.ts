// Which image a command is about: the one it was given (explorer, image preview, a hover link), else the one
// shown in the image preview, else the image reference under the cursor, else one the user picks.
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as vscode from 'vscode';
import { anchorFor, type ImageAnchor } from '../../server/src/features/alt-text/alt-edit';
import { findImageElements, imageAt, IMAGE_EXTENSIONS, isImageElement } from '../../server/src/features/images/find-images';
import { existingImageFile, resolveImage } from '../../server/src/features/images/resolve-image';
import { SECTION } from './config';
import { isImageFileName } from './insert-text';

/** The built-in image preview's custom editor. */
export const IMAGE_PREVIEW_VIEW_TYPE = 'imagePreview.previewEditor';

export interface ImageTarget {
  /** What the server takes: a file: or http(s): URI. */
  image: string;
  /** The same, for VS Code; a file URI for local images. */
  uri: vscode.Uri;
  /** The file name, for messages and titles. */
  label: string;
  /** Where the image is referenced, when it was picked in a document: there its alt text can be set. */
  site?: ImageSite;
}

export interface ImageSite {
  document: vscode.TextDocument;
  /** Finds the image again after edits (the model may run for seconds while the user types). */
  anchor: ImageAnchor;
}

/**
 * The image for a command, or undefined after telling the user why there is none (or they cancelled the
 * picker). `arg` is what VS Code or a link passed: a Uri, `[uri, selectedUris]` from the explorer, or a string.
 */
export async function resolveImageTarget(arg: unknown, purpose: string): Promise<ImageTarget | undefined> {
  const given = argumentUri(arg);
  if (given) {
    if (!['file', 'http', 'https'].includes(given.scheme)) {
      void vscode.window.showWarningMessage(`BLIP-2 reads images from disk or, when allowed, the web; it cannot read "${given.toString(true)}".`);
      return undefined;
    }
    if (given.scheme === 'file' && !isImageFileName(given.path)) {
      void vscode.window.showWarningMessage(`BLIP-2 can ${purpose} only for image files (${IMAGE_EXTENSIONS.join(', ')}); "${path.basename(given.path)}" is not one.`);
      return undefined;
    }
    return targetFor(given, undefined, typeof arg === 'string' && given.scheme !== 'file' ? arg.trim() : undefined);
  }

  const tab = vscode.window.tabGroups.activeTabGroup.activeTab;
  if (tab?.input instanceof vscode.TabInputCustom && tab.input.viewType === IMAGE_PREVIEW_VIEW_TYPE) return targetFor(tab.input.uri);

  const editor = vscode.window.activeTextEditor;
  if (editor) {
    const found = imageUnderCursor(editor);
    if (found === 'none') {
      // Fall through to the picker: the cursor is simply not on an image.
    } else if (typeof found === 'string') {
      void vscode.window.showWarningMessage(found);
      return undefined;
    } else {
      return found;
    }
  }

  const picked = await vscode.window.showOpenDialog({
    canSelectFiles: true,
    canSelectFolders: false,
    canSelectMany: false,
    defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri,
    filters: { Images: [...IMAGE_EXTENSIONS] },
    openLabel: `Choose Image to ${purpose[0].toUpperCase()}${purpose.slice(1)}`,
    title: `BLIP-2: choose an image to ${purpose}`,
  });
  return picked?.[0] ? targetFor(picked[0]) : undefined;
}

function argumentUri(arg: unknown): vscode.Uri | undefined {
  if (arg instanceof vscode.Uri) return arg;
  if (Array.isArray(arg)) return argumentUri(arg[0]);
  if (typeof arg === 'string' && arg.trim()) {
    const value = arg.trim();
    // A scheme of one letter is a Windows drive.
    return /^[a-z][\w+.-]+:/i.test(value) ? vscode.Uri.parse(value, true) : vscode.Uri.file(value);
  }
  // A Uri that crossed a command link arrives as its JSON form.
  if (typeof arg === 'object' && arg !== null && 'scheme' in arg && 'path' in arg) {
    try {
      return vscode.Uri.from(arg as { scheme: string; path: string });
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function targetFor(uri: vscode.Uri, site?: ImageSite, address?: string): ImageTarget {
  // Node's own file URLs, which the server turns back into paths with fileURLToPath; a web address as written.
  const image = uri.scheme === 'file' ? pathToFileURL(uri.fsPath).href : (address ?? uri.toString());
  return { image, uri, label: labelOf(uri), site };
}

function labelOf(uri: vscode.Uri): string {
  return path.posix.basename(uri.path) || uri.toString(true);
}

/** The image reference at the cursor: a target, 'none', or a sentence saying why it cannot be used. */
function imageUnderCursor(editor: vscode.TextEditor): ImageTarget | 'none' | string {
  const document = editor.document;
  const text = document.getText();
  const image = imageAt(text, document.languageId, document.offsetAt(editor.selection.active));
  if (!image) return 'none';
  const allowRemote = vscode.workspace.getConfiguration(SECTION, document.uri).get<boolean>('remoteImages.enabled', false);
  const resolved = resolveImage(image.url, {
    documentUri: document.uri.toString(),
    workspaceFolders: vscode.workspace.workspaceFolders?.map((folder) => folder.uri.toString()),
    allowRemote,
  });
  let uri: vscode.Uri;
  let address: string | undefined;
  switch (resolved.kind) {
    case 'file':
      uri = vscode.Uri.file(existingImageFile(resolved) ?? resolved.path);
      break;
    case 'remote':
      uri = vscode.Uri.parse(resolved.url, true);
      address = resolved.url;
      break;
    case 'remote-disallowed':
      return `The image at ${resolved.url} is on the web, and fetching remote images is off ("blip2.remoteImages.enabled"), so that no request leaves this machine.`;
    case 'inline':
      return 'Images written inline as data: addresses cannot be captioned from here; hover them instead.';
    case 'unresolved':
      return resolved.reason;
  }
  if (!isImageElement(image)) return targetFor(uri, undefined, address);
  const elements = findImageElements(text, document.languageId);
  return targetFor(uri, { document, anchor: anchorFor(text, elements, image) }, address);
}
