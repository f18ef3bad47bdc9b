import type { CancellationToken } from 'vscode-languageserver-protocol';
import type { TextDocument } from 'vscode-languageserver-textdocument';
import type { InferenceService } from '../../inference/types';
import type { GenerationResult } from '../../protocol/messages';
import type { Blip2Settings } from '../../protocol/settings';
import { linkedSource, waitAtMost } from '../cancellation';
import { imageAt } from '../images/find-images';
import { contains, isImageElement, type ImageElement, type OffsetRange } from '../images/image-reference';
import { loadImageAt } from '../images/load-image';
import { failureReason, failureSentence, isNoModel, isServerFailure } from '../inference-failure';
import { captionHoverMarkdown, pendingHoverMarkdown, problemHoverMarkdown, type ThumbnailOptions } from './hover-markdown';

export interface ImageHoverOptions {
  workspaceFolders: readonly string[];
  settings: Blip2Settings;
  /** How long to wait for a caption that is not cached before answering "Captioning…". */
  waitMs: number;
  /**
   * The client is a VS Code-family editor: it sizes hover images with `|height=` and runs the extension's
   * command links; any other editor would show both as raw text.
   */
  vscodeClient: boolean;
  /** The document's image elements, found already (once per version); found here otherwise. */
  elements?: readonly ImageElement[];
}

export interface ImageHover {
  range: OffsetRange;
  markdown: string;
  /** What the hover shows: a caption, the promise of one, or why there is none. */
  state: 'caption' | 'pending' | 'problem';
}

/**
 * The hover for the image reference at `offset`: its caption when cached or ready within `waitMs`, otherwise
 * "Captioning…" while the caption goes on in the background, so the next hover is instant. If the hover is
 * cancelled while it waits, its interest in the run is cancelled with it (the run stops when nobody else waits).
 */
export async function imageHover(
  document: TextDocument,
  offset: number,
  inference: InferenceService,
  options: ImageHoverOptions,
  token: CancellationToken,
): Promise<ImageHover | undefined> {
  const text = document.getText();
  const image = imageAt(text, document.languageId, offset, options.elements);
  if (!image) return undefined;
  // On a reference definition's destination, the hover belongs to that destination, not the distant image.
  const range = contains(image.range, offset) ? image.range : image.destinationRange ?? image.range;
  const { settings } = options;

  const loaded = await loadImageAt(
    { url: image.url, documentUri: document.uri, workspaceFolders: options.workspaceFolders },
    { remoteImages: settings.remoteImages, localImages: settings.localImages },
    token,
  );
  if (token.isCancellationRequested) return undefined;
  if (!loaded.ok) return { range, markdown: problemHoverMarkdown(loaded.reason), state: 'problem' };

  const thumbnail: ThumbnailOptions = { uri: loaded.location === 'inline' ? undefined : loaded.uri, sized: options.vscodeClient };
  const useAsAltText =
    isImageElement(image) && image.altSyntax.kind !== 'dynamic'
      ? { uri: document.uri, range: { start: document.positionAt(image.range.start), end: document.positionAt(image.range.end) } }
      : undefined;
  const show = (caption: GenerationResult): ImageHover => ({
    range,
    markdown: captionHoverMarkdown({ caption, thumbnail, useAsAltText, askImage: loaded.uri, links: options.vscodeClient }),
    state: 'caption',
  });

  // No separate cache lookup: the service answers a cached caption at once (and counts the hit).
  try {
    const interest = linkedSource(token);
    try {
      const waited = await waitAtMost(inference.caption(loaded.source, { priority: 'interactive' }, interest.source.token), options.waitMs, token);
      if (waited.kind === 'done') return show(waited.value);
      if (waited.kind === 'cancelled') return undefined;
      return { range, markdown: pendingHoverMarkdown(thumbnail), state: 'pending' };
    } finally {
      // After the answer, nothing reaches the run any more: a caption still computing goes on for the next hover.
      interest.dispose();
    }
  } catch (e) {
    if (token.isCancellationRequested) return undefined;
    // VS Code gets the way out as a link; other editors show links as raw text, so they get the sentence.
    const way = !options.vscodeClient ? undefined : isServerFailure(e) ? 'useLocalModel' : isNoModel(e, inference) ? 'setUp' : undefined;
    const reason = way === 'setUp' ? failureReason(e, inference) : failureSentence(e, inference, options.vscodeClient);
    return { range, markdown: problemHoverMarkdown(reason, thumbnail, way), state: 'problem' };
  }
}
