/**
 * Downloads the files of a BLIP-2 checkpoint from the Hugging Face Hub into the Hugging Face cache.
 *
 * @huggingface/hub answers the questions (`modelInfo` for the commit a revision points at, `listFiles` for the
 * names, sizes and hashes, `fileDownloadInfo` for an etag the listing lacks). The bytes are fetched here: the
 * library's `downloadFileToCacheDir` takes no AbortSignal, reports no progress and starts every file from zero,
 * and for a 15 GB checkpoint each of those matters. So each file streams to `blobs/<etag>.incomplete`, as
 * huggingface_hub does; a later attempt (a retry after a dropped connection, or the next run) continues it with
 * `Range: bytes=N-`; the finished file is checked against the Hub's sha256 (git sha1 for small files) and
 * only then renamed to its blob name, so a half-written file never sits where a complete one is expected.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { fileDownloadInfo, HubApiError, listFiles, modelInfo, type ListFileEntry } from '@huggingface/hub';
import { CancelledError, UserError, throwIfAborted } from '../errors';
import {
  CONFIG_FILE,
  OPTIONAL_FILES,
  PROCESSOR_FILES,
  REQUIRED_FILES,
  SAFETENSORS_FILE,
  SAFETENSORS_INDEX_FILE,
  checkBlip2Config,
  isFile,
  shardsOfIndex,
} from '../checkpoint/files';
import {
  DEFAULT_ENDPOINT,
  blobPath,
  cacheLayout,
  displayPath,
  isCommitHash,
  lockPath,
  linkSnapshotFile,
  snapshotDir,
  writeRef,
  type CacheLayout,
  type RepoRef,
} from './hf-cache';

/** Reported while files download; sizes in bytes. */
export interface DownloadProgress {
  /** The file being fetched, as named in the repository. */
  file: string;
  fileBytes: number;
  fileTotal: number;
  /** Every file this checkpoint needs, those already in the cache included, so `bytes / total` is the overall share. */
  bytes: number;
  total: number;
}

export interface HubDownloadOptions {
  cacheDir: string;
  endpoint?: string;
  token?: string;
  signal?: AbortSignal;
  onProgress?: (p: DownloadProgress) => void;
  /** How many times a file whose connection dropped is resumed before giving up. */
  retries?: number;
}

export interface DownloadedCheckpoint {
  commit: string;
  dir: string;
}

/**
 * The Hub could not be reached at all (before any file started). Not a UserError itself: the resolver knows
 * what the cache holds and turns it into the one sentence the user sees.
 */
export class HubUnreachableError extends Error {
  constructor(readonly endpoint: string, readonly reason: string) {
    super(`${endpoint} cannot be reached (${reason}).`);
    this.name = 'HubUnreachableError';
  }
}

/** Something worth another attempt that resumes the file: a dropped connection, a short body, a busy server. */
class TransientError extends Error {}
/** The body ran past the listed size, so nothing of it can be trusted as a prefix: the next attempt starts over. */
class OversizeError extends TransientError {}

const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ENETUNREACH', 'EHOSTUNREACH', 'ENETDOWN',
  'EPIPE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);
const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS|ERR_SSL/;
const FLUSH_BYTES = 4 << 20;
const PROGRESS_STEP = 1 << 20;
const LOCK_STALE_MS = 120_000;
const LOCK_HEARTBEAT_MS = 20_000;

/** undici reports every failure as `TypeError('fetch failed' | 'terminated')` with the system error as its cause. */
export function errorCode(e: unknown): string | undefined {
  let cur: unknown = e;
  for (let depth = 0; cur && depth < 4; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

export function isNetworkError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = errorCode(e);
  if (code && TLS_CODES.test(code)) return false;
  if (code && NETWORK_CODES.has(code)) return true;
  return e.name === 'TypeError' && (e.message === 'fetch failed' || e.message === 'terminated');
}

function tlsError(e: unknown, endpoint: string): UserError | undefined {
  const code = errorCode(e);
  if (!code || !TLS_CODES.test(code)) return undefined;
  return new UserError(
    `The connection to ${endpoint} failed its TLS certificate check (${code}).`,
    'If a proxy or firewall re-signs HTTPS traffic, set NODE_EXTRA_CA_CERTS to its certificate file.',
  );
}

/** Python strips these the same way before naming a blob after an etag. */
function normalizeEtag(etag: string): string {
  return etag.replace(/^W\//, '').replace(/^"|"$/g, '');
}

export function abortableDelay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new CancelledError());
    const onAbort = () => {
      clearTimeout(timer);
      reject(new CancelledError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

async function fileSize(p: string): Promise<number> {
  try {
    return (await fs.stat(p)).size;
  } catch {
    return 0;
  }
}

/** What the finished file must hash to: the Hub's LFS sha256, or the git blob sha1 of a small file. */
export interface Expected {
  size: number;
  algorithm?: 'sha256' | 'git-sha1';
  digest?: string;
}

/** A running hash of the first `upTo` bytes of the partial file, so a resumed download is checked end to end without reading it twice. */
class RunningDigest {
  private hash: Hash | undefined;
  upTo = 0;

  constructor(private readonly expected: Expected) {
    this.reset();
  }

  reset(): void {
    const { algorithm, size } = this.expected;
    this.upTo = 0;
    if (!algorithm) return void (this.hash = undefined);
    this.hash = createHash(algorithm === 'sha256' ? 'sha256' : 'sha1');
    if (algorithm === 'git-sha1') this.hash.update(`blob ${size}\0`);
  }

  update(chunk: Uint8Array): void {
    this.hash?.update(chunk);
    this.upTo += chunk.length;
  }

  /** Re-reads the bytes already on disk, after a restart or when an earlier attempt's hash cannot be trusted. */
  async catchUp(file: string, length: number): Promise<void> {
    if (this.upTo === length) return;
    this.reset();
    if (length === 0) return;
    for await (const chunk of createReadStream(file, { start: 0, end: length - 1 })) this.update(chunk as Buffer);
  }

  matches(): boolean {
    return !this.hash || this.hash.digest('hex') === this.expected.digest;
  }
}

/**
 * One download of one revision. It remembers the X-Error-Code of the last failed response, because the library
 * turns responses into HubApiError without it, and that header is what tells a gated repo from a missing one.
 */
export class HubSession {
  readonly endpoint: string;
  private readonly origin: string;
  lastErrorCode: string | undefined;

  constructor(
    readonly ref: RepoRef,
    private readonly opts: HubDownloadOptions,
  ) {
    this.endpoint = (opts.endpoint ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
    this.origin = new URL(this.endpoint).origin;
  }

  get signal(): AbortSignal | undefined {
    return this.opts.signal;
  }

  /**
   * Passed to the library as its `fetch`, and used for the file bodies. The token goes in here rather than as
   * the library's `accessToken`, which refuses tokens without the `hf_` prefix that self-hosted endpoints issue;
   * it is sent only to the endpoint itself (fetch drops it on a redirect to the CDN).
   */
  readonly fetch: typeof fetch = async (input, init) => {
    const headers = new Headers(init?.headers);
    const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    if (this.opts.token && url.origin === this.origin && !headers.has('authorization')) {
      headers.set('authorization', `Bearer ${this.opts.token}`);
    }
    const res = await fetch(input, { ...init, headers, signal: this.opts.signal });
    if (!res.ok) this.lastErrorCode = res.headers.get('x-error-code') ?? undefined;
    return res;
  };

  /** The one sentence for a failed request; `file` when the failure was about one file rather than the repo. */
  toUserError(e: unknown, file?: string): unknown {
    if (this.signal?.aborted) return new CancelledError();
    if (e instanceof UserError || e instanceof CancelledError) return e;
    const tls = tlsError(e, this.endpoint);
    if (tls) return tls;
    const status = e instanceof HubApiError ? e.statusCode : e instanceof HttpError ? e.status : undefined;
    if (status === undefined) return e;
    const { repo, revision, explicitRevision } = this.ref;
    const code = this.lastErrorCode;
    const page = `${this.endpoint}/${repo}`;
    if (code === 'GatedRepo' || (status === 403 && this.opts.token)) {
      return this.opts.token
        ? new UserError(
            `Your Hugging Face token (HF_TOKEN) has no access to ${repo}: it is gated or private.`,
            `Request access on ${page} with the account that owns the token, then run this again.`,
          )
        : new UserError(
            `${repo} is a gated repository on the Hugging Face Hub and needs an access token.`,
            `Accept its terms on ${page}, then set HF_TOKEN to a token of that account.`,
          );
    }
    if (status === 401) {
      return this.opts.token
        ? new UserError(
            `The Hugging Face Hub refused the token in HF_TOKEN for ${repo} (HTTP 401).`,
            `Check the repo id, or set HF_TOKEN to a valid token from ${DEFAULT_ENDPOINT}/settings/tokens.`,
          )
        : new UserError(
            `${repo} was not found on the Hugging Face Hub, or it is private and needs an access token.`,
            'Check the repo id, or set HF_TOKEN to a token that can read it.',
          );
    }
    if (status === 403) {
      return new UserError(
        `The Hugging Face Hub denied access to ${repo} (HTTP 403).`,
        'Set HF_TOKEN to a token of an account that can read it.',
      );
    }
    if (status === 404) {
      if (code === 'RevisionNotFound' || (explicitRevision && code !== 'RepoNotFound' && !file)) {
        return new UserError(
          `${repo} has no revision "${revision}" on the Hugging Face Hub.`,
          `Pass a branch, tag or commit hash that exists on ${page}.`,
        );
      }
      if (file && code !== 'RepoNotFound') {
        return new UserError(
          `${file} of ${repo} is listed on the Hugging Face Hub but cannot be downloaded (HTTP 404).`,
          'Run this again in a few minutes; if it persists, pass --model with a local checkpoint folder.',
        );
      }
      return new UserError(
        `${repo} was not found on the Hugging Face Hub.`,
        'Check the repo id (for example Salesforce/blip2-opt-2.7b), or pass --model with a local checkpoint folder.',
      );
    }
    return new UserError(
      `The Hugging Face Hub answered HTTP ${status} for ${file ? `${file} of ` : ''}${repo}.`,
      'Try again later, or pass --model with a local checkpoint folder.',
    );
  }
}

/** A failed body request, with its status (the library's HubApiError plays this part for metadata). */
class HttpError extends Error {
  constructor(readonly status: number, url: string) {
    super(`HTTP ${status} for ${url}`);
  }
}

/** A revision of a Hub repository as the Hub lists it: its commit and its top-level files. */
export interface HubRevision {
  hub: HubSession;
  commit: string;
  /** The top level's files and folders, by path. */
  listing: Map<string, ListFileEntry>;
  layout: CacheLayout;
}

/** Asks the Hub which commit a revision is and what files it has (two requests). */
export async function openHubRevision(ref: RepoRef, opts: HubDownloadOptions): Promise<HubRevision> {
  const hub = new HubSession(ref, opts);
  const layout = cacheLayout(opts.cacheDir, ref.repo);
  throwIfAborted(opts.signal);
  const listing = new Map<string, ListFileEntry>();
  try {
    const info = await modelInfo({
      name: ref.repo,
      revision: ref.revision,
      hubUrl: hub.endpoint,
      fetch: hub.fetch,
      additionalFields: ['sha'],
    });
    if (typeof info.sha !== 'string' || !isCommitHash(info.sha)) {
      throw new UserError(
        `${hub.endpoint} did not say which commit ${ref.repo}@${ref.revision} is.`,
        'Check HF_ENDPOINT, or pass --model with a local checkpoint folder.',
      );
    }
    // Top level only: every file of a transformers checkpoint lives there, and shard names are checked to be plain
    // names; folders are listed too (a repository of conversions has one per precision).
    for await (const entry of listFiles({ repo: ref.repo, revision: info.sha, hubUrl: hub.endpoint, fetch: hub.fetch })) listing.set(entry.path, entry);
    return { hub, commit: info.sha, listing, layout };
  } catch (e) {
    if (isNetworkError(e) && !opts.signal?.aborted) throw new HubUnreachableError(hub.endpoint, errorCode(e) ?? String(e));
    throw hub.toUserError(e);
  }
}

/** A file of the repository as it will be fetched: its size, blob name and checksum. */
export interface PlannedFile {
  path: string;
  size: number;
  etag: string;
  expected: Expected;
}

export interface CheckpointFiles {
  /** Every file the checkpoint needs, weights last. */
  planned: PlannedFile[];
  /** The safetensors files. */
  weights: PlannedFile[];
  fetcher: FileFetcher;
  snapshot: string;
}

/**
 * Fetches the small files of the checkpoint (configs, tokenizer, the index) into the cache's snapshot and plans the
 * weights: a repository that is not BLIP-2 is refused here, before any weight moves.
 */
export async function fetchCheckpointConfigs(rev: HubRevision, opts: HubDownloadOptions): Promise<CheckpointFiles> {
  const { hub, commit, listing, layout } = rev;
  const ref = hub.ref;
  const snapshot = snapshotDir(layout, commit);
  const names = chooseFiles(ref.repo, listing);
  const planned: PlannedFile[] = [];
  for (const name of names) planned.push(await planFile(hub, commit, listing.get(name)!));

  // The index is read before the total is known, so the shards can be counted in it; it is a few kilobytes.
  const fetcher = new FileFetcher(hub, layout, commit, opts);
  if (names.includes(SAFETENSORS_INDEX_FILE)) {
    const index = planned.find((f) => f.path === SAFETENSORS_INDEX_FILE)!;
    await fetcher.ensure(index);
    const indexPath = path.join(snapshot, SAFETENSORS_INDEX_FILE);
    const shards = shardsOfIndex(await fs.readFile(indexPath, 'utf8'), `${SAFETENSORS_INDEX_FILE} of ${ref.repo}`);
    const absent = shards.filter((s) => !listing.has(s));
    if (absent.length > 0) {
      throw new UserError(
        `${ref.repo} on the Hugging Face Hub is incomplete: its index names ${absent.join(', ')}, which the repository does not have.`,
        'Pass --model with a local checkpoint folder, or pick another revision with repo@revision.',
      );
    }
    for (const shard of shards) planned.push(await planFile(hub, commit, listing.get(shard)!));
  }
  fetcher.total = planned.reduce((sum, f) => sum + f.size, 0);
  // Small files first, so a repository that is not BLIP-2 is refused before gigabytes of weights move.
  const weights = planned.filter((f) => f.path.endsWith('.safetensors'));
  for (const file of planned.filter((f) => !weights.includes(f))) {
    await fetcher.ensure(file);
    if (file.path === CONFIG_FILE) await checkBlip2Config(path.join(snapshot, CONFIG_FILE), ref.repo);
  }
  return { planned, weights, fetcher, snapshot };
}

/**
 * Downloads what the checkpoint needs (never the whole repository: the Salesforce repos also carry PyTorch
 * weights of the same size) into the cache, and points refs/<revision> at the commit once every file is
 * there, so a half-finished download never looks complete to us or to Python.
 */
export async function downloadCheckpoint(
  ref: RepoRef,
  opts: HubDownloadOptions & {
    /** Called once the configs are in and before any weight is fetched (to state the cost, or to stop there). */
    beforeWeights?: (rev: HubRevision, files: CheckpointFiles) => Promise<void>;
    /** The revision, when the caller asked the Hub already. */
    rev?: HubRevision;
  },
): Promise<DownloadedCheckpoint> {
  const rev = opts.rev ?? (await openHubRevision(ref, opts));
  const files = await fetchCheckpointConfigs(rev, opts);
  const { planned, weights, fetcher, snapshot } = files;
  await opts.beforeWeights?.(rev, files);
  await fetcher.checkDiskSpace(planned);
  for (const file of weights) await fetcher.ensure(file);
  await writeRef(rev.layout, ref.revision, rev.commit);
  return { commit: rev.commit, dir: snapshot };
}

/** The repository's files that the checkpoint needs, or the sentence saying why this repository cannot serve. */
function chooseFiles(repo: string, listing: Map<string, ListFileEntry>): string[] {
  const chosen: string[] = [];
  const missing: string[] = [];
  for (const name of REQUIRED_FILES) (listing.has(name) ? chosen : missing).push(name);
  const processors = PROCESSOR_FILES.filter((n) => listing.has(n));
  if (processors.length === 0) missing.push(PROCESSOR_FILES.join(' or '));
  chosen.push(...processors, ...OPTIONAL_FILES.filter((n) => listing.has(n)));
  if (listing.has(SAFETENSORS_FILE)) chosen.push(SAFETENSORS_FILE);
  else if (listing.has(SAFETENSORS_INDEX_FILE)) chosen.push(SAFETENSORS_INDEX_FILE);
  else missing.push(`${SAFETENSORS_FILE} or ${SAFETENSORS_INDEX_FILE}`);
  if (missing.length === 0) return chosen;

  const onlyPytorch = !chosen.some((n) => n.startsWith('model.safetensors')) && [...listing.keys()].some((n) => n.startsWith('pytorch_model'));
  throw new UserError(
    `${repo} on the Hugging Face Hub is not a BLIP-2 checkpoint we can read: it has no ${missing.join(', ')}.`,
    onlyPytorch
      ? "It has only PyTorch .bin weights; save it with transformers' save_pretrained(safe_serialization=True) and pass that folder with --model."
      : 'Pass --model with a BLIP-2 repository, for example Salesforce/blip2-opt-2.7b.',
  );
}

/** Blob name and checksum from the listing; the library's `fileDownloadInfo` supplies an etag when a mirror leaves it out. */
export async function planFile(hub: HubSession, commit: string, entry: ListFileEntry): Promise<PlannedFile> {
  if (entry.lfs) {
    return {
      path: entry.path,
      size: entry.lfs.size,
      etag: entry.lfs.oid,
      expected: { size: entry.lfs.size, algorithm: 'sha256', digest: entry.lfs.oid },
    };
  }
  if (entry.oid) {
    return { path: entry.path, size: entry.size, etag: entry.oid, expected: { size: entry.size, algorithm: 'git-sha1', digest: entry.oid } };
  }
  let info;
  try {
    info = await fileDownloadInfo({ repo: hub.ref.repo, path: entry.path, revision: commit, hubUrl: hub.endpoint, fetch: hub.fetch });
  } catch (e) {
    throw hub.toUserError(e, entry.path);
  }
  if (!info) throw hub.toUserError(new HttpError(404, entry.path), entry.path);
  const etag = normalizeEtag(info.etag);
  if (!/^[\w.-]+$/.test(etag)) {
    throw new UserError(`${hub.endpoint} gave ${entry.path} an etag we cannot use as a file name.`, 'Check HF_ENDPOINT.');
  }
  return { path: entry.path, size: info.size, etag, expected: { size: info.size } };
}

/** Fetches planned files into one snapshot, keeping the overall progress. */
export class FileFetcher {
  /** Unknown (0) while the index is fetched to learn the shards; nothing is reported until it is set. */
  total = 0;
  private done = 0;
  private readonly finished = new Set<string>();

  constructor(
    private readonly hub: HubSession,
    private readonly layout: CacheLayout,
    private readonly commit: string,
    private readonly opts: HubDownloadOptions,
  ) {}

  /** Refuses early when the disk cannot hold what is left, rather than failing at 90 % of 15 GB. */
  async checkDiskSpace(files: PlannedFile[]): Promise<void> {
    let needed = 0;
    for (const f of files) {
      const pointer = path.join(snapshotDir(this.layout, this.commit), f.path);
      if ((await isFile(pointer)) || (await isFile(blobPath(this.layout, f.etag)))) continue;
      needed += f.size - Math.min(f.size, await fileSize(blobPath(this.layout, f.etag) + '.incomplete'));
    }
    if (needed === 0) return;
    const blobs = path.join(this.layout.repoDir, 'blobs');
    await fs.mkdir(blobs, { recursive: true }).catch((e) => {
      throw cacheWriteError(e, this.layout.cacheDir);
    });
    let free: number;
    try {
      const s = await fs.statfs(blobs);
      free = s.bavail * s.bsize;
    } catch {
      return;
    }
    if (free < needed) {
      const gb = (n: number) => (n / 1e9).toFixed(1);
      throw new UserError(
        `Downloading ${this.hub.ref.repo} needs ${gb(needed)} GB, but only ${gb(free)} GB are free in ${displayPath(this.layout.cacheDir)}.`,
        'Free some space, or set HF_HOME (or HF_HUB_CACHE) to a folder on a bigger disk.',
      );
    }
  }

  private report(file: PlannedFile, fileBytes: number): void {
    if (this.total === 0) return;
    this.opts.onProgress?.({ file: file.path, fileBytes, fileTotal: file.size, bytes: this.done + fileBytes, total: this.total });
  }

  /** Makes `snapshots/<commit>/<file>` exist, downloading its blob only when no process has it yet. */
  async ensure(file: PlannedFile): Promise<void> {
    const pointer = path.join(snapshotDir(this.layout, this.commit), file.path);
    const blob = blobPath(this.layout, file.etag);
    try {
      if (!(await isFile(pointer))) {
        if (!(await isFile(blob))) {
          await withLock(lockPath(this.layout, file.etag), this.opts.signal, async () => {
            // Another process may have finished this blob while we waited for its lock.
            if (!(await isFile(blob))) await this.download(file, blob);
          });
        }
        await linkSnapshotFile(blob, pointer);
      }
    } catch (e) {
      if (this.opts.signal?.aborted) throw new CancelledError();
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EACCES' || code === 'EPERM' || code === 'EROFS') throw cacheWriteError(e, this.layout.cacheDir);
      throw e;
    }
    if (this.finished.has(file.path)) return;
    this.report(file, file.size);
    this.finished.add(file.path);
    this.done += file.size;
  }

  /**
   * Downloads `file` to `target` itself rather than into the cache (a converted model's files go straight into the
   * model store): resumed from `<target>.incomplete`, checked against the Hub's checksum, renamed into place.
   */
  async fetchInto(file: PlannedFile, target: string): Promise<void> {
    if (!(await isFile(target))) await this.download(file, target);
    if (this.finished.has(file.path)) return;
    this.report(file, file.size);
    this.finished.add(file.path);
    this.done += file.size;
  }

  private async download(file: PlannedFile, blob: string): Promise<void> {
    const incomplete = `${blob}.incomplete`;
    await fs.mkdir(path.dirname(blob), { recursive: true });
    const digest = new RunningDigest(file.expected);
    const retries = this.opts.retries ?? 3;
    let restartedAfterMismatch = false;
    for (let attempt = 0; ; ) {
      let resumedFrom = 0;
      try {
        resumedFrom = await this.transfer(file, incomplete, digest);
        if (!digest.matches()) {
          await fs.rm(incomplete, { force: true });
          digest.reset();
          // A bad byte in a resumed file may predate this run; one fresh start is worth it before blaming the Hub.
          if (resumedFrom > 0 && !restartedAfterMismatch) {
            restartedAfterMismatch = true;
            continue;
          }
          throw new UserError(
            `The download of ${file.path} from ${this.hub.ref.repo} was corrupt (its checksum does not match the Hub's).`,
            'Run this again to download it afresh; if it keeps failing, check for a proxy that alters downloads.',
          );
        }
        await fs.rename(incomplete, blob);
        return;
      } catch (e) {
        if (this.opts.signal?.aborted) throw new CancelledError();
        const transient =
          e instanceof TransientError || isNetworkError(e) || (e instanceof HttpError && (e.status >= 500 || e.status === 429));
        if (transient && attempt < retries) {
          attempt++;
          await abortableDelay(500 * attempt, this.opts.signal);
          continue;
        }
        if (transient) {
          throw new UserError(
            `The download of ${file.path} from ${this.hub.ref.repo} kept failing (${errorCode(e) ?? (e as Error).message}).`,
            'Run this again when the connection is stable; it resumes where it stopped.',
          );
        }
        throw tlsError(e, this.hub.endpoint) ?? this.hub.toUserError(e, file.path);
      }
    }
  }

  /**
   * Streams the rest of the file into `incomplete`, starting where the partial file ends. Returns the offset it
   * resumed from. Bytes are written in the order they arrive, so whatever is on disk after a failure is a
   * correct prefix to resume from.
   */
  private async transfer(file: PlannedFile, incomplete: string, digest: RunningDigest): Promise<number> {
    let have = await fileSize(incomplete);
    if (have > file.size) {
      await fs.truncate(incomplete, 0);
      have = 0;
    }
    await digest.catchUp(incomplete, have);
    this.report(file, have);
    if (have === file.size) return have;

    const url = `${this.hub.endpoint}/${this.hub.ref.repo}/resolve/${this.commit}/${file.path.split('/').map(encodeURIComponent).join('/')}`;
    const res = await this.hub.fetch(url, { headers: have > 0 ? { range: `bytes=${have}-` } : {}, redirect: 'follow' });
    if (res.status === 416) {
      // The server holds fewer bytes than the partial file: the partial is not a prefix of this file.
      await res.body?.cancel();
      await fs.truncate(incomplete, 0);
      throw new TransientError('the partial file was longer than the server\'s');
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new HttpError(res.status, url);
    }
    let position = have;
    if (have > 0 && res.status === 206) {
      const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== have) {
        await res.body?.cancel();
        await fs.truncate(incomplete, 0);
        throw new TransientError('the server sent another range than the one asked for');
      }
    } else {
      // A server that ignores Range sends the whole file; it replaces the partial one.
      position = 0;
      digest.reset();
    }
    const resumedFrom = position;

    const fh = await fs.open(incomplete, position === 0 ? 'w' : 'r+');
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    let lastReport = position;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const buf = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      await fh.write(buf, 0, buf.length, position);
      position += buf.length;
      digest.update(buf);
    };
    let failed = false;
    try {
      if (res.body) {
        for await (const chunk of res.body) {
          if (position + pendingBytes + chunk.length > file.size) {
            throw new OversizeError(`the server sent more than the ${file.size} bytes the Hub listed`);
          }
          pending.push(chunk);
          pendingBytes += chunk.length;
          // Reported on arrival rather than on write: what has arrived is flushed even if the run stops now.
          const received = position + pendingBytes;
          if (received - lastReport >= PROGRESS_STEP) {
            lastReport = received;
            this.report(file, received);
          }
          if (pendingBytes >= FLUSH_BYTES) await flush();
        }
      }
    } catch (e) {
      failed = true;
      if (e instanceof OversizeError) {
        pending = [];
        pendingBytes = 0;
        await fh.truncate(0);
        position = 0;
        digest.reset();
      }
      throw e;
    } finally {
      // Bytes that arrived before a dropped connection or a cancel are good; keeping them is what makes resume pay.
      try {
        await flush();
        if (!failed) await fh.sync();
      } finally {
        await fh.close();
      }
    }
    if (position !== file.size) throw new TransientError(`the connection closed after ${position} of ${file.size} bytes`);
    return resumedFrom;
  }
}

function cacheWriteError(e: unknown, cacheDir: string): UserError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC') {
    return new UserError(
      `The disk holding the Hugging Face cache (${displayPath(cacheDir)}) is full.`,
      'Free some space, or set HF_HOME (or HF_HUB_CACHE) to a folder on a bigger disk; the download resumes where it stopped.',
    );
  }
  return new UserError(
    `Cannot write to the Hugging Face cache (${displayPath(cacheDir)}): ${code ?? 'permission denied'}.`,
    'Set HF_HOME (or HF_HUB_CACHE) to a folder you can write to.',
  );
}

/**
 * One writer per blob across processes (the editor's language server and a terminal may fetch the same model
 * at once). The lock file holds the owner's pid and is touched while held, so a lock left by a crash, or by a
 * pid since reused, is taken over once it is stale.
 */
export async function withLock<T>(file: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  for (;;) {
    throwIfAborted(signal);
    try {
      await fs.writeFile(file, String(process.pid), { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (await lockIsStale(file)) {
      await fs.rm(file, { force: true });
      continue;
    }
    await abortableDelay(500, signal);
  }
  const heartbeat = setInterval(() => {
    const now = new Date();
    fs.utimes(file, now, now).catch(() => undefined);
  }, LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(heartbeat);
    await fs.rm(file, { force: true });
  }
}

async function lockIsStale(file: string): Promise<boolean> {
  try {
    const [text, st] = await Promise.all([fs.readFile(file, 'utf8'), fs.stat(file)]);
    if (Date.now() - st.mtimeMs > LOCK_STALE_MS) return true;
    const pid = Number(text.trim());
    return !Number.isInteger(pid) || pid <= 0 || !processAlive(pid);
  } catch {
    return true;
  }
}

/** Signal 0 checks existence; EPERM means the process exists under another user. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
