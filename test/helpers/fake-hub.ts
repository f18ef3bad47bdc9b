/**
 * A Hugging Face Hub on 127.0.0.1 that answers the requests @huggingface/hub and our downloader make, shaped
 * like the real one (see huggingface_hub's file_download.py and the JS library's model-info.ts, list-files.ts,
 * file-download-info.ts): the revision API with `sha`, the tree API with `oid` and `lfs`, `resolve` with
 * ETag / X-Repo-Commit and, for LFS files, a 302 to a CDN URL carrying X-Linked-Etag / X-Linked-Size, Range
 * requests answered 206 with Content-Range, and X-Error-Code on failures. Every request is logged.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

export interface FakeRepo {
  id: string;
  files: Record<string, Buffer>;
  /** Defaults to a hash of the contents. */
  commit?: string;
  /** Gated: unauthenticated requests get 401 GatedRepo, a wrong token 403. Private: 401, or 404 with a wrong token. */
  access?: { mode: 'gated' | 'private'; token: string };
}

export interface LoggedRequest {
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** The id git gives a file's contents, which the Hub reports as `oid` and ETag of a non-LFS file. */
export const gitBlobSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

const isLfs = (name: string) => name.endsWith('.safetensors') || name.endsWith('.bin');

/** The files of a checkpoint folder, without subfolders (the fixture's reference/ is not part of a Hub repo). */
export function readFolderFiles(dir: string): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isFile()) files[e.name] = fs.readFileSync(path.join(dir, e.name));
  }
  return files;
}

function lfsPointer(b: Buffer): Buffer {
  return Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(b)}\nsize ${b.length}\n`);
}

export class FakeHub {
  readonly log: LoggedRequest[] = [];
  private readonly repos = new Map<string, Required<Pick<FakeRepo, 'commit'>> & FakeRepo>();
  private readonly cuts = new Map<string, number>();
  /** Answer every content request with the whole file, as a server without Range support does. */
  ignoreRange = false;
  /** List files without `oid` and `lfs`, as some mirrors do, so the client must ask `resolve` for each etag. */
  omitOids = false;
  private server!: http.Server;
  url = '';

  constructor(repos: FakeRepo[]) {
    for (const r of repos) {
      const commit =
        r.commit ??
        createHash('sha1')
          .update(r.id)
          .update(Object.entries(r.files).sort(([a], [b]) => a.localeCompare(b)).map(([n, b]) => `${n}:${sha256(b)}`).join('\n'))
          .digest('hex');
      this.repos.set(r.id, { ...r, commit });
    }
  }

  static async start(repos: FakeRepo[]): Promise<FakeHub> {
    const hub = new FakeHub(repos);
    hub.server = http.createServer((req, res) => {
      hub.handle(req, res).catch((e) => {
        res.statusCode = 500;
        res.end(String(e));
      });
    });
    await new Promise<void>((resolve) => hub.server.listen(0, '127.0.0.1', resolve));
    hub.url = `http://127.0.0.1:${(hub.server.address() as AddressInfo).port}`;
    return hub;
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
    const target = isLfs(file) ? `/cdn/${sha256(b)}` : `/${repo}/resolve/`;
    return this.log.filter((l) => l.method === 'GET' && l.url.startsWith(target) && (isLfs(file) || l.url.endsWith(`/${file}`)));
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
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

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    this.log.push({
      method: req.method ?? 'GET',
      url: url.pathname + url.search,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
    });
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);

    if (parts[0] === 'cdn' && parts.length === 2) {
      for (const repo of this.repos.values()) {
        for (const [name, b] of Object.entries(repo.files)) {
          if (sha256(b) === parts[1]) return this.sendBytes(req, res, name, b, { etag: `"${sha256(b)}"` });
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
          }),
        );
        return;
      }
      if (parts[4] === 'tree') {
        const sha = this.revisionOf(r, parts[5] ?? '');
        if (!sha) return this.fail(res, 404, 'RevisionNotFound', 'Invalid rev id');
        const entries = Object.entries(r.files).map(([name, b]) =>
          this.omitOids
            ? { type: 'file', size: b.length, path: name }
            : isLfs(name)
            ? { type: 'file', oid: gitBlobSha1(lfsPointer(b)), size: b.length, path: name, lfs: { oid: sha256(b), size: b.length, pointerSize: lfsPointer(b).length } }
            : { type: 'file', oid: gitBlobSha1(b), size: b.length, path: name },
        );
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
        res.writeHead(302, {
          location: `/cdn/${sha256(b)}`,
          'x-repo-commit': sha,
          'x-linked-etag': `"${sha256(b)}"`,
          'x-linked-size': String(b.length),
          etag: `"${gitBlobSha1(lfsPointer(b))}"`,
        });
        res.end();
        return;
      }
      return this.sendBytes(req, res, name, b, { 'x-repo-commit': sha, etag: `"${gitBlobSha1(b)}"` });
    }
    this.fail(res, 404, 'NotFound', 'Not found');
  }

  private sendBytes(req: http.IncomingMessage, res: http.ServerResponse, name: string, b: Buffer, headers: http.OutgoingHttpHeaders): void {
    let start = 0;
    let end = b.length - 1;
    let status = 200;
    const range = req.headers.range;
    if (range && !this.ignoreRange) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      if (!m || Number(m[1]) >= b.length) {
        res.writeHead(416, { ...headers, 'content-range': `bytes */${b.length}` });
        res.end();
        return;
      }
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), b.length - 1) : b.length - 1;
      status = 206;
      headers = { ...headers, 'content-range': `bytes ${start}-${end}/${b.length}` };
    }
    res.writeHead(status, { ...headers, 'accept-ranges': 'bytes', 'content-length': String(end - start + 1), 'content-type': 'application/octet-stream' });
    if (req.method === 'HEAD') return void res.end();
    const body = b.subarray(start, end + 1);
    const cut = this.cuts.get(name);
    if (cut !== undefined && req.method === 'GET') {
      this.cuts.delete(name);
      // The bytes reach the client's socket first; the pause is the stall a dying connection shows before it drops.
      res.write(body.subarray(0, cut), () => setTimeout(() => res.socket?.destroy(), 50));
      return;
    }
    res.end(body);
  }
}
