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
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { DamagedModelError, throwIfAborted } from '../errors';
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
      const onDisk = (sizeOf(path.join(dir, graph)) ?? 0) + (sizeOf(path.join(dir, `${graph}_data`)) ?? 0);
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
  const problems = await verifyModelFiles(dir, manifest, 'quick', opts);
  if (problems.length > 0) throw damaged(dir, problems);
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
