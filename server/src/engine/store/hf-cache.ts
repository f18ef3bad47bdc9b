/**
 * The Hugging Face cache, read and written in exactly the layout Python's huggingface_hub uses, so a model a
 * Python user already downloaded is reused and what we download serves Python too:
 *
 *   $HF_HUB_CACHE/models--Org--Name/
 *     blobs/<etag>                         file contents, named by the LFS sha256 or the git blob sha1
 *     refs/<revision>                      the commit hash a branch or tag pointed at
 *     snapshots/<commit>/<file>            relative symlinks to ../../blobs/<etag>
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../errors';
import { inspectCheckpoint, type CheckpointInspection } from '../checkpoint/files';

export type Env = Readonly<Record<string, string | undefined>>;

/** `Org/Name` and an optional revision (branch, tag or commit hash); `main` when none was given. */
export interface RepoRef {
  repo: string;
  revision: string;
  /** Whether the user wrote `@revision`, so messages repeat it only then. */
  explicitRevision: boolean;
}

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
const COMMIT_HASH = /^[0-9a-f]{40}$/;

export function isCommitHash(revision: string): boolean {
  return COMMIT_HASH.test(revision);
}

/** `~` as a shell expands it, for paths typed into settings files and environment variables where no shell did. */
export function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') || p.startsWith('~\\') ? path.join(os.homedir(), p.slice(1)) : p;
}

/** Python's `constants.HF_HOME`: HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(env: Env = process.env): string {
  if (env.HF_HOME) return path.resolve(expandHome(env.HF_HOME));
  const xdg = env.XDG_CACHE_HOME ? expandHome(env.XDG_CACHE_HOME) : path.join(os.homedir(), '.cache');
  return path.resolve(xdg, 'huggingface');
}

/** Python's `constants.HF_HUB_CACHE` (HUGGINGFACE_HUB_CACHE is the older name it still reads). */
export function hfHubCacheDir(env: Env = process.env): string {
  const explicit = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  return explicit ? path.resolve(expandHome(explicit)) : path.join(hfHome(env), 'hub');
}

/** HF_ENDPOINT without the trailing slash Python strips too, so URLs never get a double slash. */
export function hfEndpoint(env: Env = process.env): string {
  return (env.HF_ENDPOINT || DEFAULT_ENDPOINT).replace(/\/+$/, '');
}

/**
 * The token Python would send: HF_TOKEN, the older HUGGING_FACE_HUB_TOKEN, else the file `hf auth login`
 * (formerly `huggingface-cli login`) writes, so a user who logged in with Python needs nothing more.
 */
export async function hfToken(env: Env = process.env): Promise<string | undefined> {
  const fromEnv = (env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN)?.trim();
  if (fromEnv) return fromEnv;
  const tokenPath = env.HF_TOKEN_PATH ? expandHome(env.HF_TOKEN_PATH) : path.join(hfHome(env), 'token');
  try {
    return (await fs.readFile(tokenPath, 'utf8')).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Python's `_is_true` over HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE, which it also honours). */
export function isHubOffline(env: Env = process.env): boolean {
  const value = env.HF_HUB_OFFLINE || env.TRANSFORMERS_OFFLINE;
  return value !== undefined && ['1', 'ON', 'YES', 'TRUE'].includes(value.trim().toUpperCase());
}

/** A path as a user would type it: the home folder shortened to `~` where that is unambiguous. */
export function displayPath(p: string): string {
  const home = os.homedir();
  if (process.platform !== 'win32' && home && (p === home || p.startsWith(home + path.sep))) {
    return '~' + p.slice(home.length);
  }
  return p;
}

/**
 * `Org/Name` or `Org/Name@revision`, checked as strictly as huggingface_hub's `validate_repo_id`; a name with
 * no organisation is refused because no BLIP-2 checkpoint lives at the Hub's top level and such a spec is far
 * more often a mistyped local folder. Returns undefined for anything else.
 */
export function parseRepoSpec(spec: string): RepoRef | undefined {
  const at = spec.indexOf('@');
  const repo = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? '' : spec.slice(at + 1);
  const part = /^[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9_])?$/;
  const pieces = repo.split('/');
  if (pieces.length !== 2 || !pieces.every((p) => part.test(p))) return undefined;
  if (repo.length > 96 || repo.includes('--') || repo.includes('..')) return undefined;
  if (at >= 0 && !isSafeRevision(revision)) return undefined;
  return { repo, revision: revision || 'main', explicitRevision: at >= 0 };
}

/** Revisions become file names under refs/ (ours and Python's), so nothing may climb out of that folder. */
function isSafeRevision(revision: string): boolean {
  return (
    revision.length > 0 &&
    revision.length <= 255 &&
    !/[\\\0-\x1f:*?"<>|]/.test(revision) &&
    !revision.startsWith('/') &&
    !revision.endsWith('/') &&
    !revision.split('/').some((s) => s === '' || s === '.' || s === '..')
  );
}

/** `models--Org--Name`, the folder name Python derives from a model repo id. */
export function repoFolderName(repo: string): string {
  return ['models', ...repo.split('/')].join('--');
}

export interface CacheLayout {
  cacheDir: string;
  /** `models--Org--Name` */
  folder: string;
  repoDir: string;
}

export function cacheLayout(cacheDir: string, repo: string): CacheLayout {
  const folder = repoFolderName(repo);
  return { cacheDir, folder, repoDir: path.join(cacheDir, folder) };
}

export const blobPath = (l: CacheLayout, etag: string) => path.join(l.repoDir, 'blobs', etag);
export const snapshotDir = (l: CacheLayout, commit: string) => path.join(l.repoDir, 'snapshots', commit);
export const refPath = (l: CacheLayout, revision: string) => path.join(l.repoDir, 'refs', ...revision.split('/'));
/** Where a download of `etag` keeps its lock, beside the `.locks` folder Python keeps for its own. */
export const lockPath = (l: CacheLayout, etag: string) => path.join(l.cacheDir, '.locks', l.folder, `${etag}.blip2.lock`);

/** The commit a revision stands for in the cache: a commit hash stands for itself, a branch or tag is read from refs/. */
export async function readRef(l: CacheLayout, revision: string): Promise<string | undefined> {
  if (isCommitHash(revision)) return revision;
  try {
    const commit = (await fs.readFile(refPath(l, revision), 'utf8')).trim();
    return isCommitHash(commit) ? commit : undefined;
  } catch {
    return undefined;
  }
}

/** Writes through a temporary name, so a reader never sees a ref that holds half a hash. */
export async function writeRef(l: CacheLayout, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  await writeFileAtomic(refPath(l, revision), commit);
}

export async function writeFileAtomic(file: string, text: string): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  await fs.writeFile(tmp, text);
  try {
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
}

export interface CachedSnapshot {
  commit: string;
  dir: string;
  inspection: CheckpointInspection;
  complete: boolean;
}

/** The cached snapshot a revision points at, and whether it holds every file we need; undefined when none is cached. */
export async function findCachedSnapshot(cacheDir: string, ref: RepoRef): Promise<CachedSnapshot | undefined> {
  const layout = cacheLayout(cacheDir, ref.repo);
  const commit = await readRef(layout, ref.revision);
  if (!commit) return undefined;
  const dir = snapshotDir(layout, commit);
  try {
    if (!(await fs.stat(dir)).isDirectory()) return undefined;
  } catch {
    return undefined;
  }
  let inspection: CheckpointInspection;
  try {
    inspection = await inspectCheckpoint(dir);
  } catch (e) {
    // A damaged index makes the snapshot incomplete; which sentence the user gets depends on whether we go online.
    if (!(e instanceof UserError)) throw e;
    inspection = { present: [], missing: ['a readable model.safetensors.index.json'], weights: [] };
  }
  return { commit, dir, inspection, complete: inspection.missing.length === 0 };
}

/**
 * Points `snapshots/<commit>/<file>` at its blob with a relative link, as Python does (the cache survives being
 * moved). Where links are not allowed (Windows without developer mode) the blob itself moves into the
 * snapshot, Python's own fallback, rather than doubling gigabytes on disk.
 */
export async function linkSnapshotFile(blob: string, pointer: string): Promise<void> {
  await fs.mkdir(path.dirname(pointer), { recursive: true });
  await fs.rm(pointer, { force: true });
  try {
    await fs.symlink(path.relative(path.dirname(pointer), blob), pointer);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'EACCES' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw e;
    await fs.rename(blob, pointer);
  }
}
