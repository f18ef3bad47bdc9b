import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type WriteOutcome = { written: true } | { written: false; reason: string };

/**
 * Replaces `file`'s content with `text` when it still holds `expected` (what was read before the model ran for
 * minutes): written to a temporary file beside it, then renamed over it, so a reader never sees half a file
 * and an interrupted run leaves the original. The file's mode is kept.
 */
export function replaceIfUnchanged(file: string, expected: string, text: string): WriteOutcome {
  let mode: number;
  try {
    if (fs.readFileSync(file, 'utf8') !== expected) return { written: false, reason: 'it changed since it was read; run fix again' };
    mode = fs.statSync(file).mode;
  } catch (e) {
    return { written: false, reason: `it cannot be read any more (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.blip2-${process.pid}-${crypto.randomBytes(4).toString('hex')}.tmp`);
  try {
    fs.writeFileSync(temporary, text, { mode, flag: 'wx' });
    fs.renameSync(temporary, file);
    return { written: true };
  } catch (e) {
    fs.rmSync(temporary, { force: true });
    return { written: false, reason: `it could not be written (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
}
