/**
 * A Hugging Face Hub on 127.0.0.1 that answers the requests @huggingface/hub and our downloader make, shaped
 * like the real one (see huggingface_hub's file_download.py and the JS library's model-info.ts, list-files.ts,
 * file-download-info.ts): the revision API with `sha`, the tree API with `oid` and `lfs`, `resolve` with
 * ETag / X-Repo-Commit and, for LFS files, a 302 to a signed CDN URL on another origin (a second port) carrying
 * X-Linked-Etag / X-Linked-Size, which answers 403 once its signature has expired, Range requests answered 206
 * with Content-Range, and X-Error-Code on failures. Files are buffers, or files on disk (the benchmark serves a
 * 15 GB checkpoint); bodies can be held to a bandwidth. Every request is logged, with the bytes it was sent.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

/** A file served from disk, with its SHA-256 known beforehand (hashing 15 GB per start would dominate a benchmark). */
export interface DiskFile {
  path: string;
  size: number;
  sha256: string;
}

export type FakeFile = Buffer | DiskFile;

export interface FakeRepo {
  id: string;
  files: Record<string, FakeFile>;
  /** Defaults to a hash of the contents. */
  commit?: string;
  /** Gated: unauthenticated requests get 401 GatedRepo, a wrong token 403. Private: 401, or 404 with a wrong token. */
  access?: { mode: 'gated' | 'private'; token: string };
  /** The model card's metadata, as the model API returns it with `expand=cardData`. */
  cardData?: Record<string, unknown>;
}

export interface LoggedRequest {
  method: string;
  url: string;
  /** 'hub' or 'cdn': which origin it was sent to. */
  host: 'hub' | 'cdn';
  status?: number;
  range?: string;
  authorization?: string;
  /** Body bytes sent. */
  bytes: number;
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** The id git gives a file's contents, which the Hub reports as `oid` and ETag of a non-LFS file. */
export const gitBlobSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

// What the Hub's default .gitattributes stores in LFS, among the files these tests serve.
const isLfs = (name: string) => /\.(safetensors|bin|onnx|onnx_data|data)$/.test(name);
const sizeOf = (f: FakeFile) => (Buffer.isBuffer(f) ? f.length : f.size);
const shaOf = (f: FakeFile) => (Buffer.isBuffer(f) ? sha256(f) : f.sha256);

/** The files of a checkpoint folder, without subfolders (the fixture's reference/ is not part of a Hub repo). */
export function readFolderFiles(dir: string, filter: (name: string) => boolean = () => true): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isFile() && filter(e.name)) files[e.name] = fs.readFileSync(path.join(dir, e.name));
  }
  return files;
}

function lfsPointer(f: FakeFile): Buffer {
  return Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${shaOf(f)}\nsize ${sizeOf(f)}\n`);
}

export class FakeHub {
  readonly log: LoggedRequest[] = [];
  private readonly repos = new Map<string, Required<Pick<FakeRepo, 'commit'>> & FakeRepo>();
  private readonly cuts = new Map<string, number>();
  /** Answer every content request with the whole file, as a server without Range support does. */
  ignoreRange = false;
  /** List files without `oid` and `lfs`, as some mirrors do, so the client must ask `resolve` for each etag. */
  omitOids = false;
  /** How long a signed CDN URL is valid, as the Hub's are for about an hour. */
  signedUrlTtlMs = 60 * 60 * 1000;
  /** Bytes per second per response body; 0 for as fast as loopback goes. */
  bytesPerSecond = 0;
  /**
   * The next `count` requests matching `match`, after the first `after` of them, fail with `status` (0: the
   * connection drops without an answer, as when the network goes).
   */
  failures: { match: RegExp; status: number; count: number; after?: number } | undefined;
  private readonly tampered = new Map<string, number>();
  /** The token that may create repositories and commit to them (the upload API); none accepts any. */
  writeToken: string | undefined;
  /** LFS objects uploaded and not yet committed, by their SHA-256, and where they were written. */
  private readonly uploads = new Map<string, DiskFile>();
  private uploadDir: string | undefined;
  private server!: http.Server;
  private cdn!: http.Server;
  private readonly secret = randomBytes(16);
  url = '';
  cdnUrl = '';

  constructor(repos: FakeRepo[]) {
    for (const r of repos) this.addRepo(r);
  }

  /** Serves another repository from now on. */
  addRepo(r: FakeRepo): void {
    const commit =
      r.commit ??
      createHash('sha1')
        .update(r.id)
        .update(Object.entries(r.files).sort(([a], [b]) => a.localeCompare(b)).map(([n, b]) => `${n}:${shaOf(b)}`).join('\n'))
        .digest('hex');
    this.repos.set(r.id, { ...r, commit });
  }

  static async start(repos: FakeRepo[]): Promise<FakeHub> {
    const hub = new FakeHub(repos);
    const serve = (host: LoggedRequest['host']) =>
      http.createServer((req, res) => {
        hub.handle(req, res, host).catch((e) => {
          if (!res.headersSent) res.statusCode = 500;
          res.end(String(e));
        });
      });
    hub.server = serve('hub');
    hub.cdn = serve('cdn');
    await new Promise<void>((resolve) => hub.server.listen(0, '127.0.0.1', resolve));
    // Another origin, as the Hub's CDN is another host: a client must not send it the Hub's token.
    await new Promise<void>((resolve) => hub.cdn.listen(0, '127.0.0.1', resolve));
    hub.url = `http://127.0.0.1:${(hub.server.address() as AddressInfo).port}`;
    hub.cdnUrl = `http://127.0.0.1:${(hub.cdn.address() as AddressInfo).port}`;
    return hub;
  }

  /** Serves `file` with the byte at `offset` changed, while the listing keeps the true SHA-256. */
  tamper(file: string, offset: number): void {
    this.tampered.set(file, offset);
  }

  /** A gated or private repository's token changes: the old one is refused from now on (a revoked token). */
  setToken(repo: string, token: string): void {
    const r = this.repos.get(repo)!;
    if (r.access) r.access = { ...r.access, token };
  }

  /** Body bytes sent, in all or for the requests `filter` picks. */
  bytesSent(filter: (l: LoggedRequest) => boolean = () => true): number {
    return this.log.filter(filter).reduce((s, l) => s + l.bytes, 0);
  }

  private sign(sha: string, expires: number): string {
    return createHmac('sha256', this.secret).update(`${sha}:${expires}`).digest('hex');
  }

  commitOf(repo: string): string {
    return this.repos.get(repo)!.commit;
  }

  /** The next download of `file`'s contents sends `afterBytes` bytes, then the connection drops. */
  cutOnce(file: string, afterBytes: number): void {
    this.cuts.set(file, afterBytes);
  }

  /** Requests for one file's contents (the CDN leg for LFS files, resolve for the others). */
  contentRequests(repo: string, file: string): LoggedRequest[] {
    const r = this.repos.get(repo)!;
    const b = r.files[file];
    const target = isLfs(file) ? `/cdn/${shaOf(b)}` : `/${repo}/resolve/`;
    return this.log.filter((l) => l.method === 'GET' && l.url.startsWith(target) && (isLfs(file) || l.url.split('?')[0].endsWith(`/${file}`)));
  }

  async close(): Promise<void> {
    for (const s of [this.server, this.cdn]) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    if (this.uploadDir) fs.rmSync(this.uploadDir, { recursive: true, force: true });
  }

  /** The repository as it is now (after commits), for a test to read back what was published. */
  repo(id: string): (FakeRepo & { commit: string }) | undefined {
    return this.repos.get(id);
  }

  private canWrite(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    if (this.writeToken === undefined || req.headers.authorization === `Bearer ${this.writeToken}`) return true;
    this.fail(res, req.headers.authorization ? 403 : 401, 'Unauthorized', 'Invalid credentials in Authorization header');
    return false;
  }

  private async body(req: http.IncomingMessage): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of req) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  /**
   * The part of the upload API @huggingface/hub's createRepo and uploadFiles use without Xet (huggingface.js
   * create-repo.ts and commit.ts): create, preupload (large or binary files go to LFS), the LFS batch API with
   * "basic" transfers, the PUT of each object, and the ndjson commit.
   */
  private async handleUpload(req: http.IncomingMessage, res: http.ServerResponse, parts: string[]): Promise<boolean> {
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    if (req.method === 'POST' && parts.join('/') === 'api/repos/create') {
      if (!this.canWrite(req, res)) return true;
      const b = JSON.parse((await this.body(req)).toString()) as { name: string; organization?: string };
      const id = `${b.organization}/${b.name}`;
      if (this.repos.has(id)) return this.fail(res, 409, 'RepoExists', 'You already created this model repo'), true;
      this.repos.set(id, { id, files: {}, commit: createHash('sha1').update(`${id}:empty`).digest('hex') });
      return json(200, { url: `${this.url}/${id}`, name: id }), true;
    }
    if (req.method === 'POST' && parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'preupload') {
      if (!this.canWrite(req, res)) return true;
      const b = JSON.parse((await this.body(req)).toString()) as { files: { path: string; size: number }[] };
      return json(200, { files: b.files.map((f) => ({ path: f.path, uploadMode: isLfs(f.path) || f.size > 10 << 20 ? 'lfs' : 'regular' })) }), true;
    }
    if (req.method === 'POST' && parts.length === 6 && parts[1].endsWith('.git') && parts.slice(2).join('/') === 'info/lfs/objects/batch') {
      if (!this.canWrite(req, res)) return true;
      const b = JSON.parse((await this.body(req)).toString()) as { objects: { oid: string; size: number }[] };
      res.writeHead(200, { 'content-type': 'application/vnd.git-lfs+json' });
      res.end(JSON.stringify({ transfer: 'basic', objects: b.objects.map((o) => ({ oid: o.oid, size: o.size, actions: { upload: { href: `${this.url}/lfs-upload/${o.oid}` } } })) }));
      return true;
    }
    if (req.method === 'PUT' && parts[0] === 'lfs-upload' && parts.length === 2) {
      this.uploadDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'fake-hub-uploads-'));
      const file = path.join(this.uploadDir, parts[1]);
      const hash = createHash('sha256');
      let size = 0;
      const out = fs.createWriteStream(file);
      for await (const c of req) {
        hash.update(c as Buffer);
        size += (c as Buffer).length;
        if (!out.write(c)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
      }
      await new Promise<void>((resolve) => out.end(() => resolve()));
      if (hash.digest('hex') !== parts[1]) return this.fail(res, 400, 'BadObject', 'The object does not match its oid'), true;
      this.uploads.set(parts[1], { path: file, size, sha256: parts[1] });
      res.writeHead(200);
      res.end();
      return true;
    }
    if (req.method === 'POST' && parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'commit') {
      if (!this.canWrite(req, res)) return true;
      const id = `${parts[2]}/${parts[3]}`;
      const repo = this.repos.get(id);
      if (!repo) return this.fail(res, 404, 'RepoNotFound', 'Repository not found'), true;
      const files = { ...repo.files };
      for (const line of (await this.body(req)).toString().split('\n').filter(Boolean)) {
        const op = JSON.parse(line) as { key: string; value: { path: string; content?: string; oid?: string } };
        if (op.key === 'file') files[op.value.path] = Buffer.from(op.value.content!, 'base64');
        else if (op.key === 'lfsFile') {
          const upload = this.uploads.get(op.value.oid!);
          if (!upload) return this.fail(res, 400, 'MissingObject', `LFS object ${op.value.oid} was not uploaded`), true;
          files[op.value.path] = upload;
        } else if (op.key === 'deletedFile') delete files[op.value.path];
      }
      const commit = createHash('sha1').update(repo.commit).update(JSON.stringify(Object.keys(files).sort())).update(String(Date.now())).digest('hex');
      this.repos.set(id, { ...repo, files, commit });
      return json(200, { commitOid: commit, commitUrl: `${this.url}/${id}/commit/${commit}` }), true;
    }
    return false;
  }

  private fail(res: http.ServerResponse, status: number, code: string, message: string): void {
    res.writeHead(status, { 'content-type': 'application/json', 'x-error-code': code });
    res.end(JSON.stringify({ error: message }));
  }

  /** True when the request may not read the repo; it has then been answered as the Hub would. */
  private denied(repo: FakeRepo | undefined, req: http.IncomingMessage, res: http.ServerResponse): boolean {
    if (!repo) {
      this.fail(res, req.headers.authorization ? 404 : 401, 'RepoNotFound', 'Repository not found');
      return true;
    }
    if (!repo.access) return false;
    const auth = req.headers.authorization;
    if (auth === `Bearer ${repo.access.token}`) return false;
    if (repo.access.mode === 'gated') {
      this.fail(res, auth ? 403 : 401, 'GatedRepo', 'Access to this model is restricted');
    } else {
      this.fail(res, auth ? 404 : 401, 'RepoNotFound', 'Repository not found');
    }
    return true;
  }

  private revisionOf(repo: FakeRepo & { commit: string }, rev: string): string | undefined {
    return rev === 'main' || rev === 'HEAD' || rev === repo.commit ? repo.commit : undefined;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse, host: LoggedRequest['host']): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const entry: LoggedRequest = {
      method: req.method ?? 'GET',
      url: url.pathname + url.search,
      host,
      bytes: 0,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
    };
    this.log.push(entry);
    const write = res.write.bind(res) as (chunk: Buffer, cb?: () => void) => boolean;
    res.write = ((chunk: Buffer, ...rest: unknown[]) => {
      entry.bytes += chunk.length;
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof res.write;
    res.on('finish', () => (entry.status = res.statusCode));
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const f = this.failures;
    if (f && f.count > 0 && f.match.test(entry.url)) {
      if ((f.after ?? 0) > 0) f.after!--;
      else {
        f.count--;
        if (f.status === 0) return void req.socket.destroy();
        return this.fail(res, f.status, 'Injected', 'Injected failure');
      }
    }

    if (host === 'hub' && (await this.handleUpload(req, res, parts))) return;

    if (host === 'cdn') {
      if (parts[0] !== 'cdn' || parts.length !== 2) return this.fail(res, 404, 'EntryNotFound', 'No such object');
      const expires = Number(url.searchParams.get('expires'));
      // An S3- or CloudFront-style refusal of an expired or forged signature.
      if (!(expires > Date.now()) || url.searchParams.get('sig') !== this.sign(parts[1], expires)) {
        res.writeHead(403, { 'content-type': 'application/xml' });
        res.end('<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
        return;
      }
      for (const repo of this.repos.values()) {
        for (const [name, b] of Object.entries(repo.files)) {
          if (shaOf(b) === parts[1]) return this.sendBytes(req, res, name, b, { etag: `"${shaOf(b)}"` });
        }
      }
      return this.fail(res, 404, 'EntryNotFound', 'No such object');
    }

    if (parts[0] === 'api' && parts[1] === 'models') {
      const repo = this.repos.get(`${parts[2]}/${parts[3]}`);
      if (this.denied(repo, req, res)) return;
      const r = repo!;
      if (parts[4] === 'revision') {
        const sha = this.revisionOf(r, parts.slice(5).join('/'));
        if (!sha) return this.fail(res, 404, 'RevisionNotFound', 'Invalid rev id');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            _id: '0123456789abcdef01234567',
            id: r.id,
            sha,
            private: r.access?.mode === 'private',
            gated: r.access?.mode === 'gated' ? 'manual' : false,
            downloads: 0,
            likes: 0,
            lastModified: '2024-01-01T00:00:00.000Z',
            pipeline_tag: 'image-to-text',
            ...(r.cardData && { cardData: r.cardData }),
          }),
        );
        return;
      }
      if (parts[4] === 'tree') {
        const sha = this.revisionOf(r, parts[5] ?? '');
        if (!sha) return this.fail(res, 404, 'RevisionNotFound', 'Invalid rev id');
        // The files under the path asked for; without recursive=true, its direct children, folders as such.
        const under = parts.slice(6).join('/');
        const prefix = under ? `${under}/` : '';
        const recursive = url.searchParams.get('recursive') === 'true';
        const entries: object[] = [];
        const folders = new Set<string>();
        for (const [name, b] of Object.entries(r.files)) {
          if (!name.startsWith(prefix)) continue;
          const rest = name.slice(prefix.length).split('/');
          for (let depth = 1; depth < rest.length && (recursive || depth === 1); depth++) folders.add(prefix + rest.slice(0, depth).join('/'));
          if (rest.length > 1 && !recursive) continue;
          entries.push(
            this.omitOids
              ? { type: 'file', size: sizeOf(b), path: name }
              : isLfs(name)
              ? { type: 'file', oid: gitBlobSha1(lfsPointer(b)), size: sizeOf(b), path: name, lfs: { oid: shaOf(b), size: sizeOf(b), pointerSize: lfsPointer(b).length } }
              : { type: 'file', oid: gitBlobSha1(Buffer.isBuffer(b) ? b : fs.readFileSync(b.path)), size: sizeOf(b), path: name },
          );
        }
        for (const folder of folders) entries.push({ type: 'directory', oid: createHash('sha1').update(folder).digest('hex'), size: 0, path: folder });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(entries));
        return;
      }
      return this.fail(res, 404, 'NotFound', 'No such API');
    }

    // /<org>/<name>/resolve/<rev>/<file>
    if (parts[2] === 'resolve' && parts.length >= 5) {
      const repo = this.repos.get(`${parts[0]}/${parts[1]}`);
      if (this.denied(repo, req, res)) return;
      const r = repo!;
      const sha = this.revisionOf(r, parts[3]);
      if (!sha) return this.fail(res, 404, 'RevisionNotFound', 'Invalid rev id');
      const name = parts.slice(4).join('/');
      const b = r.files[name];
      if (!b) return this.fail(res, 404, 'EntryNotFound', 'Entry not found');
      if (isLfs(name)) {
        const expires = Date.now() + this.signedUrlTtlMs;
        res.writeHead(302, {
          location: `${this.cdnUrl}/cdn/${shaOf(b)}?expires=${expires}&sig=${this.sign(shaOf(b), expires)}`,
          'x-repo-commit': sha,
          'x-linked-etag': `"${shaOf(b)}"`,
          'x-linked-size': String(sizeOf(b)),
          etag: `"${gitBlobSha1(lfsPointer(b))}"`,
        });
        res.end();
        return;
      }
      return this.sendBytes(req, res, name, b, { 'x-repo-commit': sha, etag: `"${gitBlobSha1(Buffer.isBuffer(b) ? b : fs.readFileSync(b.path))}"` });
    }
    this.fail(res, 404, 'NotFound', 'Not found');
  }

  private sendBytes(req: http.IncomingMessage, res: http.ServerResponse, name: string, b: FakeFile, headers: http.OutgoingHttpHeaders): void {
    const size = sizeOf(b);
    let start = 0;
    let end = size - 1;
    let status = 200;
    const range = req.headers.range;
    if (range && !this.ignoreRange) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      if (!m || Number(m[1]) >= size) {
        res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` });
        res.end();
        return;
      }
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
      status = 206;
      headers = { ...headers, 'content-range': `bytes ${start}-${end}/${size}` };
    }
    res.writeHead(status, { ...headers, 'accept-ranges': 'bytes', 'content-length': String(end - start + 1), 'content-type': 'application/octet-stream' });
    if (req.method === 'HEAD') return void res.end();
    const cut = this.cuts.get(name);
    if (cut !== undefined && req.method === 'GET') this.cuts.delete(name);
    void this.stream(res, b, start, end + 1, cut, name);
  }

  /**
   * The body in chunks, paced to `bytesPerSecond` when set, honouring the socket's backpressure. `cut`: the
   * connection drops after that many bytes (they reach the client's socket first; the pause is the stall a dying
   * connection shows before it drops).
   */
  private async stream(res: http.ServerResponse, b: FakeFile, start: number, end: number, cut?: number, name?: string): Promise<void> {
    const chunk = 1 << 20;
    const started = Date.now();
    let sent = 0;
    const fd = Buffer.isBuffer(b) ? undefined : await fs.promises.open(b.path, 'r');
    try {
      for (let at = start; at < end && !res.destroyed; ) {
        let n = Math.min(chunk, end - at);
        if (cut !== undefined) n = Math.min(n, cut - sent);
        let bytes = Buffer.isBuffer(b) ? b.subarray(at, at + n) : (await fd!.read(Buffer.allocUnsafe(n), 0, n, at)).buffer;
        const flip = name === undefined ? undefined : this.tampered.get(name);
        if (flip !== undefined && flip >= at && flip < at + n) {
          bytes = Buffer.from(bytes);
          bytes[flip - at] ^= 0xff;
        }
        at += n;
        sent += n;
        if (cut !== undefined && sent >= cut) {
          res.write(bytes, () => setTimeout(() => res.socket?.destroy(), 50));
          return;
        }
        if (!res.write(bytes)) await new Promise((resolve) => res.once('drain', resolve));
        if (this.bytesPerSecond > 0) {
          const due = started + (sent / this.bytesPerSecond) * 1000;
          if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
        }
      }
      res.end();
    } finally {
      await fd?.close();
    }
  }
}

/** A loopback Hub for one test, closed when the test ends. */
export async function startHub(t: { after(fn: () => unknown): void }, repos: FakeRepo[]): Promise<FakeHub> {
  const hub = await FakeHub.start(repos);
  t.after(() => hub.close());
  return hub;
}
