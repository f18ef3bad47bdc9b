import {
  CodeActionKind,
  type CancellationToken,
  type CodeAction,
  type CodeActionContext,
  type Diagnostic,
  type Range,
  type WorkspaceEdit,
} from 'vscode-languageserver-protocol';
import { TextDocument } from 'vscode-languageserver-textdocument';
import type { InferenceService } from '../../inference/types';
import { ClientCommands, GenerateAltTextActionKind, ServerCommands, type AltTextCommandArgs, type AltTextCommandResult } from '../../protocol/messages';
import type { Blip2Settings } from '../../protocol/settings';
import { altEditFor, anchorFor, relocateImage, toTextEdit, writtenAltSpan, type ImageAnchor, type OffsetEdit } from '../alt-text/alt-edit';
import { EMPTY_CAPTION, generateMissingAltText, needsGeneratedAlt, type AltTextFile } from '../alt-text/generate-alt-text';
import { checkAlts } from '../alt-text/rules';
import { ALT_RULE_IDS } from '../../protocol/settings';
import { altTextDiagnostics, DIAGNOSTIC_SOURCE } from '../diagnostics/alt-diagnostics';
import type { ParsedDocument } from '../images/document-images';
import { findImageElements } from '../images/find-images';
import type { ImageElement } from '../images/image-reference';
import { loadImageAt, REMOTE_IMAGES_OFF } from '../images/load-image';
import { otherCaptions } from '../requests/image-requests';
import { insideByPath, outsideSentence, readRoots } from '../images/read-scope';
import { existingImageFile, resolveImage } from '../images/resolve-image';
import { failureSentence } from '../inference-failure';
import { buildWorkspaceEdit, type EditSupport } from '../workspace/workspace-edit';

export const GENERATE_ALT_TEXT_TITLE = 'Generate alt text with BLIP-2';
export const GENERATE_FILE_ALT_TEXT_TITLE = 'Generate missing alt text in this file';

/**
 * What an unresolved action carries to `codeAction/resolve` (or, for clients without resolve support, what the
 * quick fix's `ServerCommands.fixAltText` command carries): enough to find the image again after edits.
 */
export type AltFixData = { kind: 'blip2.altFix'; uri: string; version: number; anchor: ImageAnchor };
export type AltActionData = AltFixData | { kind: 'blip2.altFile'; uri: string; version: number };

export interface AltActionOptions {
  workspaceFolders: readonly string[];
  settings: Blip2Settings;
  /** The client shows `disabled` actions with their reason; without it, actions that cannot work are left out. */
  disabledSupport?: boolean;
  /**
   * The client resolves an action's edit when it is picked. Without that (eglot, Helix, Sublime), each action
   * runs a server command instead, which computes the caption and applies its edit through workspace/applyEdit:
   * nothing may run the model before the user picks an action, since code actions are asked for on every
   * cursor move.
   */
  resolveSupport?: boolean;
  /** The VS Code extension, which implements `ClientCommands`; other editors answer them "unknown command". */
  vscodeClient?: boolean;
  /** The document's image elements, found already (once per version); found here otherwise. */
  elements?: readonly ImageElement[];
}

/**
 * The quick fix for each of our alt-text diagnostics in `context`, and the source action for the whole file.
 * Nothing runs the model here: the edit is computed when the user picks the action (`resolveAltAction`).
 * Clients that send no diagnostics with the request get the fixes for the problems within `range`.
 */
export function altCodeActions(document: TextDocument, range: Range, context: CodeActionContext, options: AltActionOptions): CodeAction[] {
  const text = document.getText();
  const images = options.elements ?? findImageElements(text, document.languageId);
  const problems = checkAlts(images, options.settings.altText);
  const actions: CodeAction[] = [];

  const resolveSupport = options.resolveSupport ?? true;
  if (wants(context, CodeActionKind.QuickFix)) {
    const fixed = new Set<ImageElement>();
    const ours = context.diagnostics.filter((d) => d.source === DIAGNOSTIC_SOURCE && (ALT_RULE_IDS as readonly unknown[]).includes(d.code));
    const diagnostics = ours.length > 0 || context.diagnostics.length > 0 ? ours : altTextDiagnostics(document, options.settings.altText, images).filter((d) => overlaps(d.range, range));
    for (const diagnostic of diagnostics) {
      const image = imageOfDiagnostic(document, images, problems, diagnostic);
      if (!image || image.altSyntax.kind === 'dynamic' || fixed.has(image)) continue;
      fixed.add(image);
      const unavailable = whyUnavailable(image, document.uri, options);
      if (unavailable && !options.disabledSupport) continue;
      const data: AltFixData = { kind: 'blip2.altFix', uri: document.uri, version: document.version, anchor: anchorFor(text, images, image) };
      actions.push({
        title: GENERATE_ALT_TEXT_TITLE,
        kind: CodeActionKind.QuickFix,
        diagnostics: [diagnostic],
        ...(unavailable ? { disabled: { reason: unavailable } } : { isPreferred: true }),
        ...(resolveSupport ? { data } : { command: { title: GENERATE_ALT_TEXT_TITLE, command: ServerCommands.fixAltText, arguments: [data] } }),
      });
    }
  }

  if (wants(context, GenerateAltTextActionKind, true) && images.some((image) => needsGeneratedAlt(image, options.settings.altText))) {
    if (resolveSupport) {
      const data: AltActionData = { kind: 'blip2.altFile', uri: document.uri, version: document.version };
      actions.push({ title: GENERATE_FILE_ALT_TEXT_TITLE, kind: GenerateAltTextActionKind, data });
    } else {
      const args: AltTextCommandArgs = { uri: document.uri, apply: true };
      const command = { title: GENERATE_FILE_ALT_TEXT_TITLE, command: ServerCommands.generateMissingAltText, arguments: [args] };
      actions.push({ title: GENERATE_FILE_ALT_TEXT_TITLE, kind: GenerateAltTextActionKind, command });
    }
  }
  return actions;
}

function overlaps(a: Range, b: Range): boolean {
  const before = (p: Range['start'], q: Range['start']) => p.line < q.line || (p.line === q.line && p.character < q.character);
  return !before(a.end, b.start) && !before(b.end, a.start);
}

/**
 * Whether the client asked for actions of `kind`. Kinds are hierarchical: asking for `source` (or the empty
 * kind, everything) includes `source.blip2.generateAltText`. Source actions only when asked for by kind: VS Code
 * asks for every kind when it fills the light bulb, where source actions do not belong.
 */
export function wants(context: Pick<CodeActionContext, 'only'>, kind: string, onlyWhenAsked = false): boolean {
  if (!context.only || context.only.length === 0) return !onlyWhenAsked;
  return context.only.some((asked) => asked === '' || kind === asked || kind.startsWith(`${asked}.`));
}

/**
 * Why the model could not caption this image, known without reading it: no such file, remote images off, a
 * destination we cannot resolve. Checked cheaply, since code actions are asked for on every cursor move.
 */
function whyUnavailable(image: ImageElement, documentUri: string, options: AltActionOptions): string | undefined {
  const resolved = resolveImage(image.url, { documentUri, workspaceFolders: options.workspaceFolders, allowRemote: options.settings.remoteImages.enabled });
  switch (resolved.kind) {
    case 'file': {
      const file = existingImageFile(resolved);
      if (!file) return `The image file does not exist: ${resolved.path}.`;
      const roots = readRoots(documentUri, options.workspaceFolders);
      if (!options.settings.localImages.outsideWorkspace && !insideByPath(file, roots)) {
        return outsideSentence(file);
      }
      return undefined;
    }
    case 'remote-disallowed':
      return REMOTE_IMAGES_OFF;
    case 'unresolved':
      return resolved.reason;
    default:
      return undefined;
  }
}

/** The image a diagnostic is about: the one whose problem has its rule and range, else the one it starts in. */
function imageOfDiagnostic(
  document: TextDocument,
  images: readonly ImageElement[],
  problems: ReturnType<typeof checkAlts>,
  diagnostic: Diagnostic,
): ImageElement | undefined {
  const start = document.offsetAt(diagnostic.range.start);
  const end = document.offsetAt(diagnostic.range.end);
  const exact = problems.find((p) => p.ruleId === diagnostic.code && p.range.start === start && p.range.end === end);
  if (exact) return exact.image;
  return images.find((image) => image.range.start <= start && start <= image.range.end);
}

export interface ResolveAltActionOptions extends AltActionOptions {
  /** The document as it is at this moment; called again after the model ran, since the user may have typed. */
  documentNow(uri: string): TextDocument | undefined;
  /**
   * The same with its image elements, found once per version (the server's); found here from `documentNow`
   * when absent.
   */
  parsedNow?(uri: string): Promise<ParsedDocument | undefined>;
  editSupport: EditSupport;
}

function parsedNowOf(options: ResolveAltActionOptions): (uri: string) => Promise<ParsedDocument | undefined> {
  if (options.parsedNow) return options.parsedNow;
  return async (uri) => {
    const live = options.documentNow(uri);
    if (!live) return undefined;
    const document = TextDocument.create(live.uri, live.languageId, live.version, live.getText());
    return { document, elements: findImageElements(document.getText(), document.languageId) };
  };
}

export type ResolvedAltAction = { action: CodeAction; failure?: string; result?: AltTextCommandResult };

/**
 * Runs the model for a code action the user picked and fills in its edit. The quick fix's edit inserts the
 * caption at the alt text of the image as it is now (found again by its anchor), never over the destination, and
 * carries the version it was computed for, so an editor that has a newer one refuses it rather than apply it in
 * the wrong place. In VS Code the other beams are offered through `ClientCommands.chooseAltText`. Without an
 * edit, `failure` says why (an empty caption is never written: an empty alt would mark the image as decorative).
 */
export async function resolveAltAction(
  action: CodeAction,
  inference: InferenceService,
  options: ResolveAltActionOptions,
  token: CancellationToken,
): Promise<ResolvedAltAction> {
  const data = action.data as AltActionData | undefined;
  if (data?.kind === 'blip2.altFile') return resolveFileAction(action, data, inference, options, token);
  if (data?.kind !== 'blip2.altFix') return { action };
  const fix = await computeAltFix(data, inference, options, token);
  if (!fix.edit) return { action, failure: fix.failure };
  const resolved: CodeAction = { ...action, edit: fix.edit };
  if (options.vscodeClient && fix.alternatives.length > 0 && fix.altRange) {
    resolved.command = {
      title: 'Choose another caption',
      command: ClientCommands.chooseAltText,
      arguments: [fix.uri, fix.altRange, fix.alternatives],
    };
  }
  return { action: resolved };
}

export type AltFix =
  | { edit: WorkspaceEdit; uri: string; alternatives: string[]; altRange: Range | undefined; failure?: undefined }
  | { edit?: undefined; failure: string };

/** Whether `value` is what a quick fix carries (`AltFixData`), as it comes back from a client. */
export function isAltFixData(value: unknown): value is AltFixData {
  const data = value as Partial<AltFixData> | undefined;
  return data?.kind === 'blip2.altFix' && typeof data.uri === 'string' && typeof data.anchor?.destination === 'string';
}

/**
 * The caption of the anchored image, as the edit that writes it into the document as it is when the model is
 * done; the resolve step and the `ServerCommands.fixAltText` command both come here.
 */
export async function computeAltFix(data: AltFixData, inference: InferenceService, options: ResolveAltActionOptions, token: CancellationToken): Promise<AltFix> {
  const parsedNow = parsedNowOf(options);
  const before = await parsedNow(data.uri);
  if (!before) return { failure: 'The document is no longer open.' };
  const image = relocateImage(before.document.getText(), before.document.languageId, data.anchor, before.elements);
  if (!image) return { failure: 'The image is no longer in the document.' };
  const loaded = await loadImageAt(
    { url: image.url, documentUri: data.uri, workspaceFolders: options.workspaceFolders },
    { remoteImages: options.settings.remoteImages, localImages: options.settings.localImages },
    token,
  );
  if (!loaded.ok) return { failure: loaded.reason };

  let caption;
  try {
    caption = await inference.caption(loaded.source, { priority: 'interactive' }, token);
  } catch (e) {
    return { failure: failureSentence(e, inference, options.vscodeClient) };
  }
  if (!caption.text.trim()) return { failure: EMPTY_CAPTION };
  // The caption inserted is the one the hover showed; the others come from a beam search run only now, for a
  // client that can offer them.
  let alternatives: string[] = [];
  if (options.vscodeClient) {
    try {
      alternatives = await otherCaptions(inference, loaded.source, caption.text, options.settings.generation.alternatives, undefined, token);
    } catch (e) {
      if (token.isCancellationRequested) return { failure: failureSentence(e, inference, options.vscodeClient) };
      // Without alternatives the fix still inserts its caption.
    }
  }

  const now = await parsedNow(data.uri);
  if (!now) return { failure: 'The document is no longer open.' };
  const { document } = now;
  const target = relocateImage(document.getText(), document.languageId, data.anchor, now.elements);
  const edit = target && target.alt === data.anchor.alt ? altEditFor(target, caption.text) : undefined;
  if (!target || !edit) return { failure: 'The image or its alt text changed while BLIP-2 was captioning it; nothing was inserted.' };
  return {
    edit: buildWorkspaceEdit([{ uri: document.uri, version: document.version, edits: [toTextEdit(document, edit)] }], options.editSupport),
    uri: document.uri,
    alternatives,
    altRange: insertedAltRange(document, target, edit, caption.text),
  };
}

/**
 * Where the alt text will be once `edit` is applied: the range `chooseAltText` replaces with another caption. The
 * written alt is one line, and nothing before the edit moves, so it is found from the edit's start without parsing
 * the edited document again.
 */
function insertedAltRange(document: TextDocument, image: ImageElement, edit: OffsetEdit, newAlt: string): Range | undefined {
  const span = writtenAltSpan(image, newAlt);
  if (!span) return undefined;
  const start = document.positionAt(edit.range.start);
  const character = start.character + span.offset;
  return { start: { line: start.line, character }, end: { line: start.line, character: character + span.length } };
}

async function resolveFileAction(
  action: CodeAction,
  data: Extract<AltActionData, { kind: 'blip2.altFile' }>,
  inference: InferenceService,
  options: ResolveAltActionOptions,
  token: CancellationToken,
): Promise<ResolvedAltAction> {
  const parsedNow = parsedNowOf(options);
  const snapshot = async (uri: string): Promise<AltTextFile | undefined> => {
    const parsed = await parsedNow(uri);
    const document = parsed?.document;
    return document && { uri, languageId: document.languageId, text: document.getText(), version: document.version, elements: parsed.elements };
  };
  const file = await snapshot(data.uri);
  if (!file) return { action, failure: 'The document is no longer open.' };
  const result = await generateMissingAltText([file], inference, {
    workspaceFolders: options.workspaceFolders,
    settingsFor: async () => options.settings,
    current: (f) => snapshot(f.uri),
    priority: 'interactive',
    editSupport: options.editSupport,
  }, token);
  const failure = result.images === 0 ? result.failures[0]?.reason ?? 'No image needed alt text.' : undefined;
  return { action: { ...action, edit: result.edit }, failure, result };
}
