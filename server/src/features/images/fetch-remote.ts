import * as dns from 'node:dns';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import type { CancellationToken } from 'vscode-languageserver-protocol';
import { CancelledError, UserError } from '../../engine/errors';
import { formatBytes } from '../../engine/units';

export interface FetchLimits {
  maxBytes: number;
  timeoutMs: number;
}

export interface FetchOptions {
  /** Resolves host names (dns.lookup unless given): tests give an /etc/hosts of their own. */
  lookup?: net.LookupFunction;
}

export const DEFAULT_FETCH_TIMEOUT_MS = 15_000;
/** As browsers give up on a loop, with far fewer hops: no image host needs more than a couple. */
const MAX_REDIRECTS = 5;
/** The code of a connection refused because of the address its host name resolved to. */
const REFUSED_ADDRESS = 'EBLIP2LOCALADDRESS';

/**
 * The bytes of an http(s) image, refused as soon as it is known to be larger than `maxBytes` (from
 * Content-Length, or while reading a body that has none), and given up after `timeoutMs`. Redirects are followed
 * as `redirectRefusal` allows, and then only to the addresses the names resolve to when connecting: a redirect to a
 * public-looking name that resolves to this machine or its local network (an /etc/hosts alias, DNS rebinding) is
 * refused unless the image's own address led to that same address and port. Failures are UserErrors: a sentence
 * naming the address.
 */
export async function fetchRemoteImage(url: string, limits: FetchLimits, token: CancellationToken, options: FetchOptions = {}): Promise<Uint8Array> {
  const abort = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
  }, limits.timeoutMs);
  const subscription = token.onCancellationRequested(() => abort.abort());
  // A token cancelled before it was read never fires its event.
  if (token.isCancellationRequested) abort.abort();
  const lookup = options.lookup ?? (dns.lookup as net.LookupFunction);
  // Where the image's own address led: later hops may reach a local address only there.
  const first = new URL(url);
  const origin = { addresses: new Set<string>(), port: effectivePort(first) };
  try {
    let response: http.IncomingMessage;
    let current = first;
    for (let hops = 0; ; hops++) {
      const target = current;
      // The first hop goes wherever the document said (remote images are on, and it could name an address itself).
      const check = (address: string): string | undefined => {
        if (hops === 0) {
          origin.addresses.add(address);
          return undefined;
        }
        const sameService = origin.addresses.has(address) && (effectivePort(target) === origin.port || upgradeOf(first, target));
        return isLocalHost(address) && !sameService ? address : undefined;
      };
      try {
        response = await get(target, check, lookup, abort.signal);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === REFUSED_ADDRESS) {
          throw new UserError(`${url} redirects to ${target.href}, which is on this machine or its local network (${(e as Error).message}), so it is not followed.`, 'Link the image at its final address.');
        }
        throw failure(e, url, timedOut, limits, token);
      }
      const location = response.headers.location;
      const status = response.statusCode ?? 0;
      if (status < 300 || status >= 400 || status === 304 || !location) break;
      response.destroy();
      if (hops === MAX_REDIRECTS) throw new UserError(`${url} redirects more than ${MAX_REDIRECTS} times.`, 'Link the image at its final address.');
      const next = new URL(location, current);
      const refused = redirectRefusal(current, next);
      if (refused) throw new UserError(`${url} redirects to ${next.href}, which ${refused}, so it is not followed.`, 'Link the image at its final address.');
      current = next;
    }
    const status = response.statusCode ?? 0;
    if (status < 200 || status >= 300) {
      response.destroy();
      throw new UserError(`${url} answered ${status}${response.statusMessage ? ` ${response.statusMessage}` : ''}, not an image.`);
    }
    const type = response.headers['content-type'] ?? '';
    if (/^(text\/html|application\/json)/i.test(type)) {
      response.destroy();
      throw new UserError(`${url} returned ${type.split(';')[0]}, not an image.`);
    }
    const declared = Number(response.headers['content-length']);
    if (Number.isFinite(declared) && declared > limits.maxBytes) {
      response.destroy();
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
 * One GET of `url`, its response's headers read, the body not. `check` sees every address the host resolves to (or
 * the address the URL gives) before anything is sent, and refuses the connection by naming one.
 */
function get(url: URL, check: (address: string) => string | undefined, lookup: net.LookupFunction, signal: AbortSignal): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const literal = url.hostname.replace(/^\[|\]$/g, '');
    if (net.isIP(literal)) {
      const refused = check(literal);
      if (refused) return reject(Object.assign(new Error(refused), { code: REFUSED_ADDRESS }));
    }
    const guarded = ((hostname: string, options: dns.LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void) => {
      lookup(hostname, { ...options, all: true }, (err: NodeJS.ErrnoException | null, found: string | dns.LookupAddress[]) => {
        if (err) return callback(err, '');
        const addresses = typeof found === 'string' ? [{ address: found, family: net.isIP(found) }] : found;
        for (const { address } of addresses) {
          const refused = check(address);
          if (refused) return callback(Object.assign(new Error(refused), { code: REFUSED_ADDRESS }), '');
        }
        if (options.all) callback(null, addresses);
        else callback(null, addresses[0].address, addresses[0].family);
      });
    }) as net.LookupFunction;
    // The body is read as it is, so it is asked for as it is: no compression to undo.
    const request = (url.protocol === 'https:' ? https : http).get(url, { lookup: guarded, signal, headers: { accept: 'image/*', 'accept-encoding': 'identity' } }, resolve);
    request.on('error', reject);
  });
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
  if (sameHost || upgradeOf(from, to)) return undefined;
  if (isLocalHost(to.hostname)) return 'is on this machine or its local network';
  return undefined;
}

/** `to` is `from`'s host over https. */
function upgradeOf(from: URL, to: URL): boolean {
  return from.hostname === to.hostname && from.protocol === 'http:' && to.protocol === 'https:';
}

function effectivePort(url: URL): string {
  return url.port || (url.protocol === 'https:' ? '443' : '80');
}

/** Loopback, private, link-local and unique-local addresses (as URLs and resolvers write them), and the names that stand for them. */
export function isLocalHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.local') || host === '0.0.0.0') return true;
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(host)?.slice(1).map(Number);
  if (v4) {
    const [a, b] = v4;
    return a === 127 || a === 10 || a === 0 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127);
  }
  if (host.includes(':')) {
    // An IPv4 address written as IPv6 (URL writes ::ffff:127.0.0.1 as ::ffff:7f00:1; a resolver as it is).
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
    if (mapped) {
      const [hi, lo] = [parseInt(mapped[1], 16), parseInt(mapped[2], 16)];
      return isLocalHost(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`);
    }
    const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(host);
    if (dotted) return isLocalHost(dotted[1]);
    return host === '::1' || host === '::' || /^f[cd]/.test(host) || /^fe[89ab]/.test(host);
  }
  return false;
}

async function readLimited(response: http.IncomingMessage, url: string, maxBytes: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    length += chunk.byteLength;
    if (length > maxBytes) {
      response.destroy();
      throw tooLarge(url, maxBytes);
    }
    chunks.push(chunk);
  }
  return new Uint8Array(Buffer.concat(chunks, length));
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
  const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  return new UserError(`${url} could not be downloaded (${why}).`);
}
