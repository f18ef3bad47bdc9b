/**
 * The model store: where converted models live, keyed by their source and precision so each is converted once.
 *
 *   <store>/hub/<Org>--<Name>/<commit>/<precision>/blip2-onnx.json   a Hub checkpoint at one commit
 *   <store>/hub/<Org>--<Name>/refs/<revision>                        the commit a branch resolved to, so a
 *                                                                    converted model is found offline even
 *                                                                    after the Hugging Face cache is cleared
 *   <store>/local/<basename>-<hash>/<precision>/blip2-onnx.json      a local checkpoint folder
 *
 * A conversion is written to a sibling `<target>.partial-<pid>-<random>` folder and renamed into place, so a
 * folder under its final name is always complete; the manifest is the converter's last file.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../errors';
import { inspectCheckpoint } from '../checkpoint/files';
import { readManifest, type ConvertedManifest } from '../convert/manifest';
import { expandHome, isCommitHash, writeFileAtomic, type Env } from './hf-cache';
import { processAlive } from './hub-download';

export interface StorePaths {
  root: string;
  /** Converted Hub checkpoints, one folder per repository. */
  hub: string;
  /** Converted local checkpoint folders. */
  local: string;
}

const PARTIAL = /\.partial-(\d+)-[0-9a-f]+$/;

/** The per-user cache folder each platform expects, so the store is cleaned by the tools users already trust to. */
export function defaultStoreDir(env: Env = process.env, platform: NodeJS.Platform = process.platform): string {
  if (platform === 'win32') return path.join(env.LOCALAPPDATA || path.join(os.homedir(), 'AppData', 'Local'), 'blip2');
  if (platform === 'darwin') return path.join(os.homedir(), 'Library', 'Caches', 'blip2');
  // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
  const xdg = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : path.join(os.homedir(), '.cache');
  return path.join(xdg, 'blip2');
}

/** `--store DIR`, else BLIP2_HOME, else the per-user default. */
export function storeRoot(store?: string, env: Env = process.env): string {
  if (store) return path.resolve(expandHome(store));
  if (env.BLIP2_HOME) return path.resolve(expandHome(env.BLIP2_HOME));
  return defaultStoreDir(env);
}

export function storePaths(store?: string, env: Env = process.env): StorePaths {
  const root = storeRoot(store, env);
  return { root, hub: path.join(root, 'hub'), local: path.join(root, 'local') };
}

/** Precision names become folder names, so only plain words pass (fp32, fp16, int8, q4, …). */
export function checkPrecision(precision: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/.test(precision)) {
    throw new UserError(`Unknown precision: ${JSON.stringify(precision)}.`, 'Use a precision name such as fp32, fp16 or int8.');
  }
  return precision;
}

/** `Org/Name` → `Org--Name`, the store's name for a repository (repo ids never contain `--`). */
function repoKey(repo: string): string {
  return repo.split('/').join('--');
}

export function convertedDirForRepo(paths: StorePaths, repo: string, commit: string, precision: string): string {
  return path.join(paths.hub, repoKey(repo), commit, checkPrecision(precision));
}

/**
 * `<basename>-<hash>`, the hash over the folder's real path and the size and modification time of every
 * checkpoint file, so the same folder maps to one entry and an edited checkpoint (new weights, a changed
 * config or tokenizer) gets a new one instead of a stale conversion.
 */
export async function checkpointKey(checkpointDir: string): Promise<string> {
  const real = await fs.realpath(checkpointDir);
  const { present } = await inspectCheckpoint(real);
  const hash = createHash('sha256').update(real).update('\0');
  for (const name of [...present].sort()) {
    const st = await fs.stat(path.join(real, name));
    hash.update(`${name}\0${st.size}\0${Math.floor(st.mtimeMs)}\n`);
  }
  const base = path.basename(real).replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[.]+/, '').slice(0, 64) || 'checkpoint';
  return `${base}-${hash.digest('hex').slice(0, 12)}`;
}

export async function convertedDirForCheckpoint(paths: StorePaths, checkpointDir: string, precision: string): Promise<string> {
  return path.join(paths.local, await checkpointKey(checkpointDir), checkPrecision(precision));
}

/** The commit a Hub revision resolved to when this store last saw it. */
export async function readStoreRef(paths: StorePaths, repo: string, revision: string): Promise<string | undefined> {
  if (isCommitHash(revision)) return revision;
  try {
    const commit = (await fs.readFile(path.join(paths.hub, repoKey(repo), 'refs', ...revision.split('/')), 'utf8')).trim();
    return isCommitHash(commit) ? commit : undefined;
  } catch {
    return undefined;
  }
}

export async function writeStoreRef(paths: StorePaths, repo: string, revision: string, commit: string): Promise<void> {
  if (revision === commit) return;
  await writeFileAtomic(path.join(paths.hub, repoKey(repo), 'refs', ...revision.split('/')), commit);
}

/**
 * A finished conversion this version can load: its manifest (written last) reads as the runtime reads it, so a
 * conversion by an older converter counts as absent and is redone.
 */
export async function isConverted(dir: string): Promise<boolean> {
  return manifestOf(dir) !== undefined;
}

function manifestOf(dir: string): ConvertedManifest | undefined {
  try {
    return readManifest(dir);
  } catch {
    return undefined;
  }
}

/** Bytes on disk under `dir`; links are counted as links, never followed. */
export async function dirSize(dir: string): Promise<number> {
  let total = 0;
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await dirSize(p);
    else total += (await fs.lstat(p).catch(() => undefined))?.size ?? 0;
  }
  return total;
}

export interface StoreEntry {
  kind: 'hub' | 'local';
  /** `Org/Name` for a Hub checkpoint; for a local one the path the manifest records, else the store key. */
  source: string;
  /** The commit, for a Hub checkpoint. */
  revision?: string;
  precision: string;
  dir: string;
  bytes: number;
}

async function subdirs(dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/** Every finished conversion in the store, with its size; partial folders and refs are left out. */
export async function listStore(store?: string | StorePaths): Promise<StoreEntry[]> {
  const paths = typeof store === 'object' ? store : storePaths(store);
  const out: StoreEntry[] = [];
  const add = async (kind: StoreEntry['kind'], dir: string, precision: string, source: string, revision?: string) => {
    if (PARTIAL.test(precision) || !(await isConverted(dir))) return;
    const recorded = kind === 'local' ? manifestOf(dir)?.source.model : undefined;
    out.push({ kind, source: recorded ?? source, ...(revision ? { revision } : {}), precision, dir, bytes: await dirSize(dir) });
  };
  for (const key of await subdirs(paths.hub)) {
    const repo = key.replace('--', '/');
    for (const commit of (await subdirs(path.join(paths.hub, key))).filter(isCommitHash)) {
      for (const precision of await subdirs(path.join(paths.hub, key, commit))) {
        await add('hub', path.join(paths.hub, key, commit, precision), precision, repo, commit);
      }
    }
  }
  for (const key of await subdirs(paths.local)) {
    for (const precision of await subdirs(path.join(paths.local, key))) {
      await add('local', path.join(paths.local, key, precision), precision, key);
    }
  }
  return out;
}

/** A sibling name `cleanStaleTemp` recognises as this process's unfinished work. */
function partialName(target: string): string {
  return `${target}.partial-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/**
 * A fresh sibling of `target` to convert into: same parent, so `fs.rename` into place is atomic and never
 * crosses a file system; the pid in its name lets `cleanStaleTemp` tell an abandoned one from a running one.
 */
export async function tempDirFor(target: string): Promise<string> {
  await fs.mkdir(path.dirname(target), { recursive: true });
  const dir = partialName(target);
  await fs.mkdir(dir);
  return dir;
}

/**
 * Renames a finished temporary folder to `target`. When another process got there first with a finished
 * conversion, ours is dropped; a leftover unfinished `target` is replaced.
 */
export async function publishDir(temp: string, target: string): Promise<void> {
  try {
    await fs.rename(temp, target);
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST' && code !== 'ENOTEMPTY' && code !== 'EPERM' && code !== 'EISDIR') throw e;
  }
  if (await isConverted(target)) {
    await fs.rm(temp, { recursive: true, force: true });
    return;
  }
  // Moved aside under a partial name, so a crash between these steps leaves something cleanStaleTemp removes.
  const aside = partialName(target);
  await fs.rename(target, aside);
  await fs.rename(temp, target);
  await fs.rm(aside, { recursive: true, force: true });
}

/**
 * Deletes a finished conversion (a damaged one, to convert again): renamed to a partial name first, so that
 * nothing takes it for finished meanwhile and a crash half-way leaves something `cleanStaleTemp` removes.
 */
export async function discardDir(target: string): Promise<void> {
  const aside = partialName(target);
  await fs.rename(target, aside);
  await fs.rm(aside, { recursive: true, force: true });
}

/** Removes partial folders whose process has ended (a crash, a kill, a closed editor); returns what it removed. */
export async function cleanStaleTemp(store?: string | StorePaths): Promise<string[]> {
  const paths = typeof store === 'object' ? store : storePaths(store);
  const removed: string[] = [];
  // Partial folders sit at depth 3 (local/<key>/<precision>) or 4 (hub/<repo>/<commit>/<precision>).
  const walk = async (dir: string, depth: number): Promise<void> => {
    for (const name of await subdirs(dir)) {
      const p = path.join(dir, name);
      const m = PARTIAL.exec(name);
      if (m) {
        const pid = Number(m[1]);
        if (pid !== process.pid && !processAlive(pid)) {
          await fs.rm(p, { recursive: true, force: true });
          removed.push(p);
        }
      } else if (depth < 4) {
        await walk(p, depth + 1);
      }
    }
  };
  await walk(paths.root, 1);
  return removed;
}
