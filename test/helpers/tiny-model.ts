import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { convertCheckpoint } from '../../server/src/engine/convert/convert';
import type { Precision } from '../../server/src/engine/convert/precision';
import { tinyCheckpointDir } from './paths';

const converted = new Map<Precision, Promise<string>>();
let root: string | undefined;

/** The tiny fixture converted once per test process at each precision asked for. */
export function convertedTiny(precision: Precision): Promise<string> {
  let p = converted.get(precision);
  if (!p) {
    root ??= fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-tiny-'));
    const out = path.join(root, precision);
    p = convertCheckpoint({ checkpointDir: tinyCheckpointDir, outDir: out, precision }).then(() => out);
    converted.set(precision, p);
  }
  return p;
}

process.on('exit', () => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}
