import type { CancellationToken } from 'vscode-languageserver-protocol';
import { CancelledError, UserError } from '../../engine/errors';
import { formatBytes } from '../../engine/units';

export interface FetchLimits {
  maxBytes: number;
  timeoutMs: number;
}

export const DEFAULT_FETCH_TIMEOUT_MS = 15_000;

/**
 * The bytes of an http(s) image, refused as soon as it is known to be larger than `maxBytes` (from
 * Content-Length, or while reading a body that has none), and given up after `timeoutMs`. Failures are
 * UserErrors: a sentence naming the address.
 */
export async function fetchRemoteImage(url: string, limits: FetchLimits, token: CancellationToken): Promise<Uint8Array> {
  const abort = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
  }, limits.timeoutMs);
  const subscription = token.onCancellationRequested(() => abort.abort());
  try {
    let response: Response;
    try {
      response = await fetch(url, { signal: abort.signal, redirect: 'follow', headers: { accept: 'image/*' } });
    } catch (e) {
      throw failure(e, url, timedOut, limits, token);
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => undefined);
      throw new UserError(`${url} answered ${response.status}${response.statusText ? ` ${response.statusText}` : ''}, not an image.`);
    }
    const type = response.headers.get('content-type') ?? '';
    if (/^(text\/html|application\/json)/i.test(type)) {
      await response.body?.cancel().catch(() => undefined);
      throw new UserError(`${url} returned ${type.split(';')[0]}, not an image.`);
    }
    const declared = Number(response.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > limits.maxBytes) {
      await response.body?.cancel().catch(() => undefined);
      throw tooLarge(url, limits.maxBytes);
    }
    try {
      return await readLimited(response, url, limits.maxBytes);
    } catch (e) {
      throw failure(e, url, timedOut, limits, token);
    }
  } finally {
    clearTimeout(timer);
    subscription.dispose();
  }
}

async function readLimited(response: Response, url: string, maxBytes: number): Promise<Uint8Array> {
  if (!response.body) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    length += value.byteLength;
    if (length > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(url, maxBytes);
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

function tooLarge(url: string, maxBytes: number): UserError {
  return new UserError(
    `${url} is larger than the limit of ${formatBytes(maxBytes)} for remote images.`,
    'Raise blip2.remoteImages.maxBytes to caption it.',
  );
}

function failure(e: unknown, url: string, timedOut: boolean, limits: FetchLimits, token: CancellationToken): Error {
  if (e instanceof UserError) return e;
  if (token.isCancellationRequested) return new CancelledError();
  if (timedOut) return new UserError(`${url} did not answer within ${Math.round(limits.timeoutMs / 1000)} seconds.`);
  // undici puts the reason (ECONNREFUSED, ENOTFOUND, a TLS error) on `cause`.
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (e as Error).message;
  return new UserError(`${url} could not be downloaded (${why}).`);
}
