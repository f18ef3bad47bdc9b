/**
 * Byte ranges of one file of a Hub repository, as huggingface_hub fetches them: the `resolve` URL is asked once
 * (HEAD, redirects not followed), and the content comes from where it redirects, a signed CDN URL on another host,
 * with `Range` requests. The signed URL expires: it is resolved again when the CDN answers 403, and after an hour in
 * any case. The token goes to the Hub endpoint's own origin only, never to the CDN.
 */
import { CancelledError, UserError } from '../errors';

/** Signed URLs last about an hour on the Hub; one resolved longer ago is resolved again before it is used. */
export const RESOLVE_TTL_MS = 60 * 60 * 1000;
const MAX_REDIRECTS = 5;

export interface HubFileTarget {
  /** `${endpoint}/${repo}/resolve/${commit}/${path}`. */
  resolveUrl: string;
  /** The file as the user knows it, for messages: "model-00001-of-00004.safetensors of Salesforce/blip2-opt-2.7b". */
  label: string;
  token?: string;
  /** Where resolve sent an earlier reader, and when (ms since the epoch): not asked again while it is fresh. */
  resolved?: ResolvedContent;
}

export interface ResolvedContent {
  url: string;
  at: number;
  sameOrigin: boolean;
}

/** A response worth another try after a pause (a dropped connection, a busy server), as opposed to a refusal. */
export class TransientHttpError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = 'TransientHttpError';
  }
}

export interface RangeCounters {
  /** Requests to the resolve endpoint (rate-limited by the Hub) and to wherever it redirects. */
  resolves: number;
  ranges: number;
  /** Body bytes received, those thrown away included (a server that ignores Range sends from the start). */
  bytes: number;
}

export class HubFileRanges {
  private content: ResolvedContent | undefined;
  private readonly origin: string;

  constructor(
    private readonly target: HubFileTarget,
    private readonly counters: RangeCounters,
    private readonly now: () => number = Date.now,
  ) {
    this.origin = new URL(target.resolveUrl).origin;
    this.content = target.resolved;
  }

  /** Where the last resolve led, for a reader in another thread to start from. */
  get resolved(): ResolvedContent | undefined {
    return this.content;
  }

  private headersFor(url: string, extra: Record<string, string> = {}): Record<string, string> {
    const send = !!this.target.token && new URL(url).origin === this.origin;
    return send ? { ...extra, authorization: `Bearer ${this.target.token}` } : extra;
  }

  /** Where the bytes are: the redirect's target, or the resolve URL itself when the endpoint serves them. */
  private async resolve(signal: AbortSignal | undefined): Promise<{ url: string; sameOrigin: boolean }> {
    let url = this.target.resolveUrl;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      this.counters.resolves++;
      const res = await fetch(url, { method: 'HEAD', redirect: 'manual', headers: this.headersFor(url), signal });
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        const next = new URL(location, url).toString();
        // A relative redirect stays on the Hub (a renamed repository); anything else is the CDN.
        if (new URL(next).origin !== this.origin) return { url: next, sameOrigin: false };
        url = next;
        continue;
      }
      if (res.ok) return { url, sameOrigin: true };
      throw httpFailure(res.status, this.target.label, res.headers.get('x-error-code') ?? undefined, !!this.target.token);
    }
    throw new UserError(`The Hub redirected ${this.target.label} more than ${MAX_REDIRECTS} times.`, 'Check HF_ENDPOINT; try again later.');
  }

  private async contentUrl(signal: AbortSignal | undefined, fresh = false): Promise<{ url: string; sameOrigin: boolean }> {
    if (fresh || !this.content || this.now() - this.content.at > RESOLVE_TTL_MS) {
      this.content = { ...(await this.resolve(signal)), at: this.now() };
    }
    return this.content;
  }

  /**
   * The bytes [start, end) as they arrive. A server that ignores Range answers 200 with the whole file; the bytes
   * before `start` are skipped then (and counted).
   */
  async *read(start: number, end: number, signal: AbortSignal | undefined): AsyncGenerator<Uint8Array> {
    let res: Response | undefined;
    for (let attempt = 0; attempt < 2 && !res; attempt++) {
      const { url, sameOrigin } = await this.contentUrl(signal, attempt > 0);
      this.counters.ranges++;
      const r = await fetch(url, { headers: this.headersFor(url, { range: `bytes=${start}-${end - 1}` }), redirect: 'follow', signal });
      // An expired signature: resolve again once. The Hub itself answering 403 is a refusal, handled below.
      if ((r.status === 403 || r.status === 410) && !sameOrigin && attempt === 0) {
        await r.body?.cancel();
        continue;
      }
      if (r.status !== 200 && r.status !== 206) {
        await r.body?.cancel();
        // The CDN refusing a signature made a moment ago is its clock or a race, not the user's access: try later.
        const cdnRefusal = !sameOrigin && (r.status === 403 || r.status === 410);
        if (cdnRefusal || r.status >= 500 || r.status === 429 || r.status === 408) throw new TransientHttpError(`HTTP ${r.status} for ${this.target.label}`, r.status);
        throw httpFailure(r.status, this.target.label, r.headers.get('x-error-code') ?? undefined, !!this.target.token);
      }
      res = r;
    }
    if (!res) throw new TransientHttpError(`the signed address of ${this.target.label} kept expiring`);
    let skip = 0;
    if (res.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== start) {
        await res.body?.cancel();
        throw new TransientHttpError(`the server sent another range of ${this.target.label} than the one asked for`);
      }
    } else {
      skip = start;
    }
    let left = end - start;
    if (!res.body) throw new TransientHttpError(`no body for ${this.target.label}`);
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      if (signal?.aborted) throw new CancelledError();
      this.counters.bytes += chunk.length;
      let c = chunk;
      if (skip > 0) {
        const n = Math.min(skip, c.length);
        skip -= n;
        c = c.subarray(n);
      }
      if (c.length === 0) continue;
      if (c.length >= left) {
        yield c.subarray(0, left);
        left = 0;
        break;
      }
      left -= c.length;
      yield c;
    }
    if (left > 0) throw new TransientHttpError(`the connection closed ${left} bytes before the end of a range of ${this.target.label}`);
  }
}

/** The sentence for a refused request about one file; the resolver's wider mapping (hub-download.ts) covers metadata. */
export function httpFailure(status: number, label: string, code: string | undefined, hasToken: boolean): UserError {
  if (status === 401 || status === 403) {
    return hasToken
      ? new UserError(
          `The Hugging Face Hub refused the token in HF_TOKEN for ${label} (HTTP ${status}${code ? `, ${code}` : ''}): it may have been revoked or lost access.`,
          'Set HF_TOKEN to a valid token of an account that can read the repository, then set up again; it resumes where it stopped.',
        )
      : new UserError(
          `The Hugging Face Hub refused ${label} (HTTP ${status}${code ? `, ${code}` : ''}): the repository is gated or private.`,
          'Set HF_TOKEN to a token of an account that can read it, then set up again; it resumes where it stopped.',
        );
  }
  if (status === 404) {
    return new UserError(`${label} is no longer on the Hugging Face Hub (HTTP 404).`, 'The repository may have changed; set up again to start from its current revision.');
  }
  return new UserError(`The Hugging Face Hub answered HTTP ${status} for ${label}.`, 'Try again later; set-up resumes where it stopped.');
}
