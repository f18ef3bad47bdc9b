/**
 * Whether a converted model is still what its conversion wrote. The manifest records every file's size, CRC-32
 * and SHA-256; a model is checked before it answers anything, since a flipped byte in a weight file loads without
 * complaint and then captions garbage.
 *
 * Two depths, by what they cost (measured here on 2.67 GB, the int4 model of the real size, in the page cache):
 * - `quick`, at every load: sizes and a CRC-32 of every byte: 0.8 to 1.1 s beside a 7 to 9 s load.
 *   CRC-32 finds any burst of changed bits up to 32 long and any other change with odds of 1 in 4 billion, which
 *   is what damage on disk looks like; it is no defence against someone forging a file, and is not meant to be.
 * - `full`, on demand (`blip2 verify`): SHA-256 as well: 2.4 to 2.6 s. Recording both after a conversion: 2.6 to 3.2 s.
 * A load re-reads nothing when no file changed since its bytes were last found intact: each file's size, mtime,
 * ctime and inode at that moment are kept beside the model (`.verified.json`), and a write to a file changes them.
 * So the quick check runs once after a conversion or a change, and a load costs a stat per file.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { DamagedModelError, throwIfAborted } from '../errors';
import { externalDataPath } from '../graphs/external-data';
import { formatBytes } from '../units';
import { MANIFEST_FILE, type ConvertedManifest, type ModelFile } from './manifest';

export type VerifyDepth = 'quick' | 'full';

export interface VerifyProgress {
  done: number;
  total: number;
  file: string;
}

export interface FileProblem {
  name: string;
  /** What is wrong, as the end of a sentence: "is missing", "has changed since it was converted (…)". */
  problem: string;
}

const CHUNK = 8 << 20;

/** Every file of the model folder but the manifest, with its size and checksums, in name order. */
export async function recordModelFiles(dir: string, signal?: AbortSignal): Promise<ModelFile[]> {
  const out: ModelFile[] = [];
  for (const name of listFiles(dir)) {
    const sums = await checksums(path.join(dir, name), 'full', signal);
    out.push({ name, bytes: sums.bytes, crc32: sums.crc32, sha256: sums.sha256! });
  }
  return out;
}

/**
 * What differs between the folder and its manifest's record: missing files, other sizes, other checksums.
 * Empty when the model is intact. A manifest from before checksums were recorded is checked by sizes alone.
 */
export async function verifyModelFiles(
  dir: string,
  manifest: ConvertedManifest,
  depth: VerifyDepth,
  opts: { signal?: AbortSignal; onProgress?: (p: VerifyProgress) => void } = {},
): Promise<FileProblem[]> {
  const problems: FileProblem[] = [];
  const recorded = manifest.files ?? [];
  const total = recorded.reduce((s, f) => s + f.bytes, 0);
  let before = 0;
  for (const file of recorded) {
    const full = path.join(dir, ...file.name.split('/'));
    const size = sizeOf(full);
    if (size === undefined) problems.push({ name: file.name, problem: 'is missing' });
    else if (size !== file.bytes) problems.push({ name: file.name, problem: `is ${formatBytes(size)} but was ${formatBytes(file.bytes)} when converted` });
    else {
      const sums = await checksums(full, depth, opts.signal, (done) => opts.onProgress?.({ done: before + done, total, file: file.name }));
      if (sums.crc32 !== file.crc32 || (sums.sha256 !== undefined && sums.sha256 !== file.sha256)) {
        problems.push({ name: file.name, problem: 'has changed since it was converted (its checksum differs)' });
      }
    }
    before += file.bytes;
  }
  if (!manifest.files) {
    // Only the graphs' total sizes were recorded then.
    for (const [graph, bytes] of Object.entries(manifest.sizes)) {
      const onDisk = (sizeOf(path.join(dir, graph)) ?? 0) + (sizeOf(externalDataPath(path.join(dir, graph))) ?? 0);
      if (onDisk !== bytes) problems.push({ name: graph, problem: `and its data are ${formatBytes(onDisk)} but were ${formatBytes(bytes)} when converted` });
    }
  }
  return problems;
}

/** Throws DamagedModelError, naming what changed, unless the model folder is as its conversion wrote it. */
export async function checkModelIntact(
  dir: string,
  manifest: ConvertedManifest,
  opts: { signal?: AbortSignal; onProgress?: (p: VerifyProgress) => void } = {},
): Promise<void> {
  const names = (manifest.files ?? []).map((f) => f.name);
  const stampsFile = path.join(dir, VERIFIED_FILE);
  if (names.length > 0 && stampsMatch(dir, names, readStamps(stampsFile))) return;
  const problems = await verifyModelFiles(dir, manifest, 'quick', opts);
  if (problems.length > 0) throw damaged(dir, problems);
  writeStamps(stampsFile, dir, names);
}

/** Where a model folder keeps the stamps of its files as they were when last found intact. */
export const VERIFIED_FILE = '.verified.json';

/** What a file's metadata was when its bytes were last found intact; a write to the file changes at least one. */
interface Stamp {
  bytes: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

function stampOf(file: string): Stamp | undefined {
  try {
    const st = fs.statSync(file);
    return st.isFile() ? { bytes: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino } : undefined;
  } catch {
    return undefined;
  }
}

function readStamps(file: string): Record<string, Stamp> {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, Stamp>;
  } catch {
    return {};
  }
}

function stampsMatch(dir: string, names: readonly string[], stamps: Record<string, Stamp>): boolean {
  return names.every((name) => {
    const now = stampOf(path.join(dir, ...name.split('/')));
    const then = stamps[name];
    return !!now && !!then && now.bytes === then.bytes && now.mtimeMs === then.mtimeMs && now.ctimeMs === then.ctimeMs && now.ino === then.ino;
  });
}

/** Best effort: a store that cannot be written only means the next load checks the bytes again. */
function writeStamps(file: string, dir: string, names: readonly string[]): void {
  const stamps = Object.fromEntries(names.map((n) => [n, stampOf(path.join(dir, ...n.split('/')))]));
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, JSON.stringify(stamps));
    fs.renameSync(tmp, file);
  } catch {
    fs.rmSync(tmp, { force: true });
  }
}

/**
 * Files outside a manifest (the optimized copies onnxruntime writes) recorded by size and CRC-32 in `recordFile`,
 * and checked against it the same way: by stamps when nothing changed, by their bytes otherwise.
 */
export async function recordFiles(dir: string, names: readonly string[], recordFile: string): Promise<void> {
  const files: { name: string; bytes: number; crc32: number }[] = [];
  for (const name of names) {
    const sums = await checksums(path.join(dir, name), 'quick', undefined);
    files.push({ name, bytes: sums.bytes, crc32: sums.crc32 });
  }
  fs.writeFileSync(recordFile, JSON.stringify({ files, stamps: Object.fromEntries(names.map((n) => [n, stampOf(path.join(dir, n))])) }));
}

export async function filesIntact(dir: string, recordFile: string): Promise<boolean> {
  let record: { files: { name: string; bytes: number; crc32: number }[]; stamps: Record<string, Stamp> };
  try {
    record = JSON.parse(fs.readFileSync(recordFile, 'utf8')) as typeof record;
  } catch {
    return false;
  }
  const names = record.files.map((f) => f.name);
  if (stampsMatch(dir, names, record.stamps)) return true;
  for (const f of record.files) {
    const full = path.join(dir, f.name);
    if (sizeOf(full) !== f.bytes || (await checksums(full, 'quick', undefined)).crc32 !== f.crc32) return false;
  }
  const stamps = Object.fromEntries(names.map((n) => [n, stampOf(path.join(dir, n))]));
  try {
    fs.writeFileSync(recordFile, JSON.stringify({ ...record, stamps }));
  } catch {
    // read-only: checked by bytes again next time
  }
  return true;
}

export function damaged(dir: string, problems: readonly FileProblem[]): DamagedModelError {
  const listed = problems.slice(0, 3).map((p) => `${p.name} ${p.problem}`);
  const more = problems.length > 3 ? `, and ${problems.length - 3} more` : '';
  return new DamagedModelError(
    `The converted model in ${dir} is damaged: ${listed.join('; ')}${more}.`,
    'Convert it again: "BLIP-2: Set Up Model…" in the editor, or `blip2 verify --repair` on the command line.',
  );
}

/** Files under `dir` but the manifest, relative with `/`, sorted; links are not followed into other folders. */
function listFiles(dir: string, prefix = ''): string[] {
  const names: string[] = [];
  for (const entry of fs.readdirSync(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) names.push(...listFiles(dir, rel));
    else if (entry.isFile() && rel !== MANIFEST_FILE) names.push(rel);
  }
  return names.sort();
}

function sizeOf(file: string): number | undefined {
  try {
    const st = fs.statSync(file);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

async function checksums(
  file: string,
  depth: VerifyDepth,
  signal: AbortSignal | undefined,
  onBytes?: (done: number) => void,
): Promise<{ bytes: number; crc32: number; sha256?: string }> {
  const sha = depth === 'full' ? crypto.createHash('sha256') : undefined;
  let crc = 0;
  let bytes = 0;
  const handle = await fs.promises.open(file, 'r');
  // Two buffers: the next chunk is read in the pool while this one is summed on the thread.
  const buffers = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
  let pending = handle.read(buffers[0], 0, CHUNK, 0);
  try {
    for (let turn = 1; ; turn++) {
      throwIfAborted(signal);
      const { bytesRead, buffer } = await pending;
      if (bytesRead === 0) break;
      pending = handle.read(buffers[turn % 2], 0, CHUNK, bytes + bytesRead);
      const chunk = buffer.subarray(0, bytesRead);
      crc = zlib.crc32(chunk, crc);
      sha?.update(chunk);
      bytes += bytesRead;
      onBytes?.(bytes);
    }
  } finally {
    // A read still in flight (after a cancellation) must finish before its file closes.
    await pending.catch(() => undefined);
    await handle.close();
  }
  return { bytes, crc32: crc, sha256: sha?.digest('hex') };
}
