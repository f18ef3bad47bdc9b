import type { CancellationToken } from 'vscode-languageserver-protocol';
import type { TextDocument } from 'vscode-languageserver-textdocument';
import type { InferenceService } from '../../inference/types';
import type { Blip2Settings } from '../../protocol/settings';
import { findImages, imageSyntaxOf, type ImageElement } from '../images/find-images';
import { MAX_PARSE_CHARS } from '../images/image-parser';
import { loadImageAt } from '../images/load-image';
import { describeError } from '../user-message';

/** A document with hundreds of image paths (a JSON manifest) must not fill the queue for an hour. */
export const MAX_BACKGROUND_IMAGES = 32;

export interface CaptionOnOpenOptions {
  workspaceFolders: readonly string[];
  settings: Blip2Settings;
  log?: (line: string) => void;
  /** The document's image elements, found already (once per version); found here otherwise. */
  elements?: readonly ImageElement[];
}

/**
 * Queues background captions for the images of a document that just opened, so that hovering one is usually
 * instant. Remote images are never fetched for this: opening a file must not contact other hosts. Resolves
 * with the number of images queued once they are all done (or failed, or cancelled with the document).
 */
export async function captionImagesInBackground(
  document: TextDocument,
  inference: InferenceService,
  options: CaptionOnOpenOptions,
  token: CancellationToken,
): Promise<number> {
  // Without a usable model every run would fail the same way; set-up is the user's call, not a file's.
  const state = inference.status().state;
  if (state === 'noModel' || state === 'error') return 0;
  const markup = imageSyntaxOf(document.languageId) !== 'other';
  // Paths in other files are found on this thread: a huge one (a log, a bundle) is not searched at all.
  if (!markup && document.getText().length > MAX_PARSE_CHARS) return 0;
  const images = markup && options.elements ? options.elements : findImages(document.getText(), document.languageId);
  const seen = new Set<string>();
  const runs: Promise<unknown>[] = [];
  for (const image of images) {
    if (runs.length >= MAX_BACKGROUND_IMAGES || token.isCancellationRequested) break;
    const loaded = await loadImageAt(
      { url: image.url, documentUri: document.uri, workspaceFolders: options.workspaceFolders },
      { remoteImages: options.settings.remoteImages, localImages: options.settings.localImages, fetchRemote: false },
      token,
    );
    if (!loaded.ok || seen.has(loaded.key)) continue;
    seen.add(loaded.key);
    runs.push(
      inference.caption(loaded.source, { priority: 'background' }, token).catch((e: unknown) => {
        if (!token.isCancellationRequested) options.log?.(`Background caption of ${loaded.key} failed: ${describeError(e)}`);
      }),
    );
  }
  await Promise.all(runs);
  return runs.length;
}
