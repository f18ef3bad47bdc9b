import * as fs from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import type { CancellationToken } from 'vscode-languageserver-protocol';
import type { ImageSource } from '../../inference/types';
import type { Blip2Settings } from '../../protocol/settings';
import { describeError } from '../user-message';
import { DEFAULT_FETCH_TIMEOUT_MS, fetchRemoteImage } from './fetch-remote';
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
}

/** Resolves a destination and loads its image: a file that exists, the bytes of a remote or inline image. */
export async function loadImageAt(location: ImageLocation, options: LoadImageOptions, token: CancellationToken): Promise<LoadedImage> {
  const resolved = resolveImage(location.url, {
    documentUri: location.documentUri,
    workspaceFolders: location.workspaceFolders,
    allowRemote: options.remoteImages.enabled,
  });
  return loadImage(resolved, options, token);
}

export async function loadImage(resolved: ResolvedImage, options: LoadImageOptions, token: CancellationToken): Promise<LoadedImage> {
  switch (resolved.kind) {
    case 'file':
      return loadFile(resolved);
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

async function loadFile(resolved: Extract<ResolvedImage, { kind: 'file' }>): Promise<LoadedImage> {
  const candidates = [resolved.path, ...(resolved.alternatives ?? [])];
  for (const candidate of candidates) {
    try {
      const stat = await fs.stat(candidate);
      if (stat.isDirectory()) return { ok: false, reason: `The image path names a folder, not a file: ${candidate}.` };
      const uri = candidate === resolved.path ? resolved.uri : pathToFileURL(candidate).href;
      return { ok: true, source: { kind: 'file', path: candidate }, key: candidate, uri, location: 'file' };
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') return { ok: false, reason: describeError(e) };
    }
  }
  return { ok: false, reason: `The image file does not exist: ${resolved.path}.` };
}
