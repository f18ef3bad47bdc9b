import { pathToFileURL } from 'node:url';
import type { CancellationToken } from 'vscode-languageserver-protocol';
import { UserError } from '../../engine/errors';
import { checkImageFile } from '../../engine/preprocess/image-file';
import type { ImageSource } from '../../inference/types';
import type { Blip2Settings } from '../../protocol/settings';
import { describeError } from '../user-message';
import { DEFAULT_FETCH_TIMEOUT_MS, fetchRemoteImage } from './fetch-remote';
import { outsideReason, readRoots } from './read-scope';
import { resolveImage, type ResolvedImage } from './resolve-image';

/** An image ready for the inference service, or the one sentence that says why it is not. */
export type LoadedImage =
  | {
      ok: true;
      source: ImageSource;
      /** Names the image for de-duplication and in messages: a file path or an address. */
      key: string;
      /** A URI an editor can show as a thumbnail and a client can pass back to `blip2/ask`. */
      uri: string;
      /** A local file, or an address fetched because remote images are on. */
      location: 'file' | 'remote' | 'inline';
    }
  | { ok: false; reason: string; remoteDisabled?: boolean };

export interface LoadImageOptions {
  remoteImages: Blip2Settings['remoteImages'];
  localImages: Blip2Settings['localImages'];
  /** Remote images are fetched only when this is true as well: never for work nobody asked for (captions on open). */
  fetchRemote?: boolean;
  fetchTimeoutMs?: number;
}

export const REMOTE_IMAGES_OFF =
  'Remote images are off, so this image is not downloaded. To caption images from http(s) addresses, set "blip2.remoteImages.enabled" to true (the image is then downloaded from its address; nothing else leaves the machine).';

/** Where an image is, from a destination as written in a document (see `resolveImage`). */
export interface ImageLocation {
  /** The destination as written: escapes resolved, percent-encoding kept (`ImageReference.url`). */
  url: string;
  documentUri: string;
  workspaceFolders: readonly string[];
  /**
   * The user named this image themselves (a command, a `blip2/caption` request), so it is read wherever it is;
   * images a document names are read only within the workspace unless the settings allow more (read-scope.ts).
   */
  namedByUser?: boolean;
}

/** Resolves a destination and loads its image: a file that exists, the bytes of a remote or inline image. */
export async function loadImageAt(location: ImageLocation, options: LoadImageOptions, token: CancellationToken): Promise<LoadedImage> {
  const resolved = resolveImage(location.url, {
    documentUri: location.documentUri,
    workspaceFolders: location.workspaceFolders,
    allowRemote: options.remoteImages.enabled,
  });
  const confined = !location.namedByUser && !options.localImages.outsideWorkspace;
  return loadImage(resolved, options, token, confined ? readRoots(location.documentUri, location.workspaceFolders) : undefined);
}

/** `roots`: the folders a file may be read from (after its links), or undefined for anywhere. */
export async function loadImage(resolved: ResolvedImage, options: LoadImageOptions, token: CancellationToken, roots?: readonly string[]): Promise<LoadedImage> {
  switch (resolved.kind) {
    case 'file':
      return loadFile(resolved, options.localImages.maxBytes, roots);
    case 'remote-disallowed':
      return { ok: false, reason: REMOTE_IMAGES_OFF, remoteDisabled: true };
    case 'remote': {
      if (options.fetchRemote === false) return { ok: false, reason: 'Remote images are only downloaded when asked for.' };
      try {
        const bytes = await fetchRemoteImage(
          resolved.url,
          { maxBytes: options.remoteImages.maxBytes, timeoutMs: options.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS },
          token,
        );
        return { ok: true, source: { kind: 'bytes', bytes, name: resolved.url }, key: resolved.url, uri: resolved.url, location: 'remote' };
      } catch (e) {
        return { ok: false, reason: describeError(e) };
      }
    }
    case 'inline': {
      const name = `data:${resolved.mimeType}`;
      return { ok: true, source: { kind: 'bytes', bytes: resolved.bytes, name }, key: name, uri: name, location: 'inline' };
    }
    case 'unresolved':
      return { ok: false, reason: resolved.reason };
  }
}

/**
 * The first candidate that exists, if it is a regular file within the size limit and the read scope. Only stat
 * and realpath are called: the bytes are read once, by the inference service, for the hash and the model alike.
 */
async function loadFile(resolved: Extract<ResolvedImage, { kind: 'file' }>, maxBytes: number, roots: readonly string[] | undefined): Promise<LoadedImage> {
  const candidates = [resolved.path, ...(resolved.alternatives ?? [])];
  for (const candidate of candidates) {
    const outside = roots && (await outsideReason(candidate, roots));
    try {
      await checkImageFile(candidate, { maxBytes, raiseHint: 'Raise blip2.localImages.maxBytes to caption it.' });
    } catch (e) {
      if (e instanceof UserError && /does not exist/.test(e.message)) continue;
      return { ok: false, reason: outside || describeError(e) };
    }
    if (outside) return { ok: false, reason: outside };
    const uri = candidate === resolved.path ? resolved.uri : pathToFileURL(candidate).href;
    return { ok: true, source: { kind: 'file', path: candidate }, key: candidate, uri, location: 'file' };
  }
  return { ok: false, reason: `The image file does not exist: ${resolved.path}.` };
}
