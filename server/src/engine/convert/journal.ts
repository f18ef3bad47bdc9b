/**
 * A conversion's progress, saved after every group of the checkpoint it has fully used: which group comes next,
 * the SHA-256 state of the file it is in, where every output already made went, and the tensors still waiting for
 * a partner (saved beside it). A conversion interrupted by a cancel, a crash, a kill or a lost connection resumes
 * from there instead of from zero. The journal is written whole to a temporary file and renamed over the old one,
 * after the outputs it describes are on disk, so the one on disk always describes bytes that are there.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SourceFile } from './manifest';
import type { OutputState } from './output-files';

export const JOURNAL_DIR = '.journal';
const JOURNAL_FILE = 'journal.json';
const FORMAT = 1;

export interface Journal extends OutputState {
  format: typeof FORMAT;
  /** Everything the outputs depend on (source, precision, converter, forms): a journal for another is discarded. */
  identity: string;
  nextGroup: number;
  hashState?: string;
  /** Source files read to their end, with their checksums. */
  files: SourceFile[];
  /** Tensors that arrived and still wait for a partner, saved under held/. */
  held: string[];
}

export function journalDir(staging: string): string {
  return path.join(staging, JOURNAL_DIR);
}

export function readJournal(staging: string, identity: string): Journal | undefined {
  try {
    const j = JSON.parse(fs.readFileSync(path.join(journalDir(staging), JOURNAL_FILE), 'utf8')) as Journal;
    return j.format === FORMAT && j.identity === identity ? j : undefined;
  } catch {
    return undefined;
  }
}

function heldFile(staging: string, name: string): string {
  return path.join(journalDir(staging), 'held', `${createHash('sha1').update(name).digest('hex')}.bin`);
}

export function readHeld(staging: string, name: string): Uint8Array {
  const b = fs.readFileSync(heldFile(staging, name));
  // A buffer of its own: pooled Buffers share an ArrayBuffer, and float views need the whole, aligned one.
  const out = new Uint8Array(new ArrayBuffer(b.length));
  out.set(b);
  return out;
}

/** Saves the journal; the waiting tensors' bytes first (those not saved before), then the journal that names them. */
export function writeJournal(staging: string, journal: Journal, heldBytes: (name: string) => Uint8Array): void {
  const dir = journalDir(staging);
  fs.mkdirSync(path.join(dir, 'held'), { recursive: true });
  const keep = new Set(journal.held.map((n) => path.basename(heldFile(staging, n))));
  for (const name of journal.held) {
    const file = heldFile(staging, name);
    if (fs.existsSync(file)) continue;
    const tmp = `${file}.tmp`;
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(fd, heldBytes(name));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  }
  const tmp = path.join(dir, `${JOURNAL_FILE}.tmp`);
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, JSON.stringify(journal));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, path.join(dir, JOURNAL_FILE));
  // Tensors used since the last journal are no longer needed by any journal on disk.
  for (const f of fs.readdirSync(path.join(dir, 'held'))) if (!keep.has(f)) fs.rmSync(path.join(dir, 'held', f), { force: true });
}
