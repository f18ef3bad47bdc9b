import type { CancellationToken } from 'vscode-languageserver-protocol';
import { CancelledError, UserError } from '../../engine/errors';
import { formatBytes } from '../../engine/units';

export interface FetchLimits {
  maxBytes: number;
  timeoutMs: number;
}

export const DEFAULT_FETCH_TIMEOUT_MS = 15_000;
/** As browsers give up on a loop, with far fewer hops: no image host needs more than a couple. */
const MAX_REDIRECTS = 5;

/**
 * The bytes of an http(s) image, refused as soon as it is known to be larger than `maxBytes` (from
 * Content-Length, or while reading a body that has none), and given up after `timeoutMs`. Redirects are followed
 * as `redirectRefusal` allows. Failures are UserErrors: a sentence naming the address.
 */
export async function fetchRemoteImage(url: string, limits: FetchLimits, token: CancellationToken): Promise<Uint8Array> {
  const abort = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
  }, limits.timeoutMs);
  const subscription = token.onCancellationRequested(() => abort.abort());
  // A token cancelled before it was read never fires its event.
  if (token.isCancellationRequested) abort.abort();
  try {
    let response: Response;
    let current = url;
    for (let hops = 0; ; hops++) {
      try {
        response = await fetch(current, { signal: abort.signal, redirect: 'manual', headers: { accept: 'image/*' } });
      } catch (e) {
        throw failure(e, url, timedOut, limits, token);
      }
      const location = response.headers.get('location');
      if (response.status < 300 || response.status >= 400 || response.status === 304 || !location) break;
      await response.body?.cancel().catch(() => undefined);
      if (hops === MAX_REDIRECTS) throw new UserError(`${url} redirects more than ${MAX_REDIRECTS} times.`, 'Link the image at its final address.');
      const next = new URL(location, current);
      const refused = redirectRefusal(new URL(current), next);
      if (refused) throw new UserError(`${url} redirects to ${next.href}, which ${refused}, so it is not followed.`, 'Link the image at its final address.');
      current = next.href;
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

/**
 * Why a redirect from `from` to `to` is not followed, or undefined when it is. Redirects may move to another
 * path, to https, or to another public host (image links on GitHub and CDNs redirect to other hosts); they may not
 * leave http(s), or lead to this machine or its local network from anywhere but that same host and port: a
 * document's remote image must not become a way to reach a service that only listens locally.
 */
export function redirectRefusal(from: URL, to: URL): string | undefined {
  if (to.protocol !== 'http:' && to.protocol !== 'https:') return `is not an http(s) address`;
  const sameHost = from.hostname === to.hostname && effectivePort(from) === effectivePort(to);
  const upgrade = from.hostname === to.hostname && from.protocol === 'http:' && to.protocol === 'https:';
  if (sameHost || upgrade) return undefined;
  if (isLocalHost(to.hostname)) return 'is on this machine or its local network';
  return undefined;
}

function effectivePort(url: URL): string {
  return url.port || (url.protocol === 'https:' ? '443' : '80');
}

/** Loopback, private, link-local and unique-local addresses, and the names that stand for them. */
export function isLocalHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.local') || host === '0.0.0.0') return true;
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(host)?.slice(1).map(Number);
  if (v4) {
    const [a, b] = v4;
    return a === 127 || a === 10 || a === 0 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127);
  }
  if (host.includes(':')) {
    // An IPv4 address written as IPv6 (URL writes ::ffff:127.0.0.1 as ::ffff:7f00:1).
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
    if (mapped) {
      const [hi, lo] = [parseInt(mapped[1], 16), parseInt(mapped[2], 16)];
      return isLocalHost(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`);
    }
    return host === '::1' || host === '::' || /^f[cd]/.test(host) || /^fe[89ab]/.test(host);
  }
  return false;
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
