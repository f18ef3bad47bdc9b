import * as path from 'node:path';
import type { CancellationToken } from 'vscode-languageserver-protocol';
import type { ImageSource, InferenceService } from '../../inference/types';
import type { AskParams, CaptionParams, GenerationResult } from '../../protocol/messages';
import type { Blip2Settings } from '../../protocol/settings';
import { loadImageAt, type LoadedImage } from '../images/load-image';
import { failureSentence, isNoModel, isServerFailure } from '../inference-failure';

/** A request that failed for a reason the user can act on; `noModel` makes the client offer model set-up. */
export class RequestFailure extends Error {
  constructor(
    message: string,
    readonly noModel = false,
    /** The BLIP-2 server `blip2.server.url` names failed. */
    readonly server = false,
  ) {
    super(message);
    this.name = 'RequestFailure';
  }
}

export interface ImageRequestOptions {
  settings: Blip2Settings;
  workspaceFolders: readonly string[];
  /** Failures name the VS Code command as the way out, rather than the `model` setting. */
  vscodeClient?: boolean;
}

/** `blip2/caption`: the caption of the image at a file: or http(s): URI, with the other captions when asked for. */
export async function captionImage(params: CaptionParams, inference: InferenceService, options: ImageRequestOptions, token: CancellationToken): Promise<GenerationResult> {
  const loaded = await load(params.image, options, token);
  return run(inference, options, async () => {
    const caption = await inference.caption(loaded.source, { priority: 'interactive', prompt: params.prompt }, token);
    if (!params.alternatives) return caption;
    const others = await otherCaptions(inference, loaded.source, caption.text, options.settings.generation.alternatives, params.prompt, token);
    return { ...caption, alternatives: others };
  });
}

/**
 * Captions other than `text` (the one shown or inserted) to offer beside it: the beams of a search run for them,
 * at most `count`, none repeated.
 */
export async function otherCaptions(inference: InferenceService, image: ImageSource, text: string, count: number, prompt: string | undefined, token: CancellationToken): Promise<string[]> {
  if (count <= 0) return [];
  const beams = await inference.caption(image, { priority: 'interactive', prompt, alternatives: true }, token);
  return [...new Set([beams.text, ...beams.alternatives])].filter((t) => t.trim() !== '' && t !== text).slice(0, count);
}

/** `blip2/ask`: the answer to a question about an image, with the text so far passed to `onPartial` as it grows. */
export async function askAboutImage(
  params: AskParams,
  inference: InferenceService,
  options: ImageRequestOptions,
  onPartial: ((textSoFar: string) => void) | undefined,
  token: CancellationToken,
): Promise<GenerationResult> {
  const question = params.question.trim();
  if (!question) throw new RequestFailure('The question is empty.');
  const loaded = await load(params.image, options, token);
  return run(inference, options, () =>
    inference.ask(loaded.source, question, { priority: 'interactive', history: params.history, onPartial }, token),
  );
}

async function load(image: string, options: ImageRequestOptions, token: CancellationToken): Promise<Extract<LoadedImage, { ok: true }>> {
  // A relative path has no document to be relative to: only the workspace folder can anchor it.
  const hasScheme = /^[a-z][a-z0-9+.-]+:/i.test(image) && !/^[a-z]:[\\/]/i.test(image);
  if (!hasScheme && !path.isAbsolute(image) && options.workspaceFolders.length === 0) {
    throw new RequestFailure(`"${image}" is neither an absolute path nor a file: or http(s): address.`);
  }
  const loaded = await loadImageAt(
    { url: image, documentUri: '', workspaceFolders: options.workspaceFolders, namedByUser: true },
    { remoteImages: options.settings.remoteImages, localImages: options.settings.localImages },
    token,
  );
  if (!loaded.ok) throw new RequestFailure(loaded.reason);
  return loaded;
}

async function run(inference: InferenceService, options: ImageRequestOptions, work: () => Promise<GenerationResult>): Promise<GenerationResult> {
  try {
    return await work();
  } catch (e) {
    throw new RequestFailure(failureSentence(e, inference, options.vscodeClient), isNoModel(e, inference), isServerFailure(e));
  }
}
