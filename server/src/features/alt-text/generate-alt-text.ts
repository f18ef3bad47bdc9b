import type { CancellationToken } from 'vscode-languageserver-protocol';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { DEFAULT_MAX_BATCH, type InferenceService, type Priority } from '../../inference/types';
import type { AltTextCommandResult } from '../../protocol/messages';
import type { AltRuleSettings, Blip2Settings } from '../../protocol/settings';
import { throwIfCancelled } from '../cancellation';
import { findImageElements } from '../images/find-images';
import type { ImageElement } from '../images/image-reference';
import { loadImageAt, type LoadedImage } from '../images/load-image';
import { failureSentence, isNoModel } from '../inference-failure';
import { buildWorkspaceEdit, type EditSupport, type FileEdits } from '../workspace/workspace-edit';
import { altEditsForDocument, toTextEdit } from './alt-edit';
import { checkAlt } from './rules';

/** A document to give alt text: its text when the work started, from the editor if open, else from disk. */
export interface AltTextFile {
  uri: string;
  languageId: string;
  text: string;
  /** The editor's version; null for a file that is not open. */
  version: number | null;
  /** Its image elements, when they were found already (an open document's, once per version). */
  elements?: readonly ImageElement[];
}

export interface CaptionForAltTextOptions {
  workspaceFolders: readonly string[];
  settingsFor(uri: string): Promise<Blip2Settings>;
  /** After each image is captioned (or failed): `done` of `total` images. */
  onProgress?(done: number, total: number): void;
  priority: Priority;
  /** Failures name the VS Code command as the way out, rather than the `model` setting. */
  vscodeClient?: boolean;
  /** The image elements of a file that does not carry them (off the main thread, in the server); found here otherwise. */
  find?(text: string, languageId: string): Promise<readonly ImageElement[]>;
}

/** A file's image elements: those it carries, else found by `find`, else on this thread. */
function elementsOf(file: AltTextFile, options: CaptionForAltTextOptions): Promise<readonly ImageElement[]> | readonly ImageElement[] {
  return file.elements ?? (options.find ? options.find(file.text, file.languageId) : findImageElements(file.text, file.languageId));
}

export interface GenerateAltTextOptions extends CaptionForAltTextOptions {
  /** The file as it is now; asked again after captioning, since the user may have typed meanwhile. */
  current(file: AltTextFile): Promise<AltTextFile | undefined>;
  editSupport: EditSupport;
}

export interface AltTextCaptions {
  /** Per file URI, the caption for each destination as written (`ImageElement.url`). */
  captions: Map<string, Map<string, string>>;
  /** Images that could not be captioned, with the reason. */
  failures: AltTextCommandResult['failures'];
  /** Images that needed alt text. */
  total: number;
}

/** What an empty caption is reported as: alt="" would mark the image as decoration, which is a claim. */
export const EMPTY_CAPTION = 'BLIP-2 gave an empty caption for this image; write its alt text yourself.';

/** Captions asked for at once: as many as the engine decodes together, so they share its batches. */
const IN_FLIGHT = DEFAULT_MAX_BATCH;

/** The images that "Generate missing alt text" fills in: what the rules flag, except length alone. */
export function needsGeneratedAlt(image: ImageElement, settings: AltRuleSettings): boolean {
  return image.altSyntax.kind !== 'dynamic' && checkAlt(image, settings).some((p) => p.ruleId !== 'alt-too-long');
}

/**
 * Captions every image in `files` whose alt text is missing or unhelpful: one caption run per distinct image
 * (by its content, whatever file names it), up to `IN_FLIGHT` at a time. The LSP command and `blip2 fix` both
 * start here and write the captions their own way.
 */
export async function captionImagesForAltText(
  files: readonly AltTextFile[],
  inference: InferenceService,
  options: CaptionForAltTextOptions,
  token: CancellationToken,
): Promise<AltTextCaptions> {
  const failures: AltTextCommandResult['failures'] = [];
  // Per file, the caption for each destination as written; images with the same file share one caption run.
  const captions = new Map<string, Map<string, string>>();
  const jobs = new Map<string, { loaded: Extract<LoadedImage, { ok: true }>; users: { uri: string; url: string }[] }>();
  let total = 0;

  for (const file of files) {
    throwIfCancelled(token);
    const settings = await options.settingsFor(file.uri);
    const images = (await elementsOf(file, options)).filter((image) => needsGeneratedAlt(image, settings.altText));
    const loadedByUrl = new Map<string, LoadedImage>();
    for (const image of images) {
      let loaded = loadedByUrl.get(image.url);
      if (!loaded) {
        loaded = await loadImageAt({ url: image.url, documentUri: file.uri, workspaceFolders: options.workspaceFolders }, { remoteImages: settings.remoteImages, localImages: settings.localImages }, token);
        loadedByUrl.set(image.url, loaded);
      }
      total++;
      if (!loaded.ok) {
        failures.push({ uri: file.uri, image: image.url, reason: loaded.reason });
        continue;
      }
      const job = jobs.get(loaded.key) ?? { loaded, users: [] };
      job.users.push({ uri: file.uri, url: image.url });
      jobs.set(loaded.key, job);
    }
  }

  let done = failures.length;
  options.onProgress?.(done, total);
  const queue = [...jobs.values()];
  const worker = async (): Promise<void> => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      throwIfCancelled(token);
      try {
        const result = await inference.caption(job.loaded.source, { priority: options.priority }, token);
        for (const user of job.users) {
          if (!result.text.trim()) {
            failures.push({ uri: user.uri, image: user.url, reason: EMPTY_CAPTION });
            continue;
          }
          const forFile = captions.get(user.uri) ?? new Map<string, string>();
          forFile.set(user.url, result.text);
          captions.set(user.uri, forFile);
        }
      } catch (e) {
        throwIfCancelled(token);
        // Without a model every image would fail the same way; the command fails once, so set-up is offered.
        if (isNoModel(e, inference)) throw e;
        const reason = failureSentence(e, inference, options.vscodeClient);
        for (const user of job.users) failures.push({ uri: user.uri, image: user.url, reason });
      }
      done += job.users.length;
      options.onProgress?.(done, total);
    }
  };
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, queue.length) }, worker));
  throwIfCancelled(token);
  return { captions, failures, total };
}

/**
 * Captions every image in `files` whose alt text is missing or unhelpful and returns one workspace edit that
 * puts each caption into its image's alt text, computed against the files as they are after captioning. The
 * edit is annotated as needing confirmation, so the user reviews it before it is applied.
 */
export async function generateMissingAltText(
  files: readonly AltTextFile[],
  inference: InferenceService,
  options: GenerateAltTextOptions,
  token: CancellationToken,
): Promise<AltTextCommandResult> {
  const { captions, failures } = await captionImagesForAltText(files, inference, options, token);
  const fileEdits: FileEdits[] = [];
  let imagesEdited = 0;
  for (const file of files) {
    const forFile = captions.get(file.uri);
    if (!forFile) continue;
    const now = await options.current(file);
    if (!now) continue;
    const settings = await options.settingsFor(file.uri);
    const edits = altEditsForDocument(now.text, now.languageId, (image) => forFile.get(image.url), {
      settings: settings.altText,
      include: (image) => needsGeneratedAlt(image, settings.altText),
      elements: await elementsOf(now, options),
    });
    if (edits.length === 0) continue;
    const document = TextDocument.create(now.uri, now.languageId, now.version ?? 0, now.text);
    fileEdits.push({ uri: now.uri, version: now.version, edits: edits.map((e) => toTextEdit(document, e)) });
    imagesEdited += edits.length;
  }

  const edit = buildWorkspaceEdit(fileEdits, options.editSupport, {
    label: 'Alt text from BLIP-2',
    description: 'Captions computed on this machine; review them before applying.',
    needsConfirmation: true,
  });
  return { edit, images: imagesEdited, files: fileEdits.length, failures };
}
