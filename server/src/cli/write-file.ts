import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type WriteOutcome = { written: true } | { written: false; reason: string };

/**
 * Replaces `file`'s content with `text` when it still holds `expected` (what was read before the model ran for
 * minutes), as an editor saving it would:
 *  - a symbolic link is written through: the file it points to changes and the link stays a link;
 *  - a file nobody may write (mode 0444), or this user may not, is refused, although renaming over it would work;
 *  - otherwise the text goes to a temporary file beside it, given the file's mode and, where the system allows, its
 *    owner and group, then renamed over it, so a reader never sees half a file and an interrupted run leaves the
 *    original;
 *  - except a file with other hard links, which is written in place so that every name keeps showing the same
 *    file (a rename would leave the other names with the old text): one write of the whole text, then its length,
 *    the one case where a crash at that moment could leave the file part old, part new.
 */
export function replaceIfUnchanged(file: string, expected: string, text: string): WriteOutcome {
  let target: string;
  let stat: fs.Stats;
  try {
    target = fs.realpathSync(file);
    if (fs.readFileSync(target, 'utf8') !== expected) return { written: false, reason: 'it changed since it was read; run fix again' };
    stat = fs.statSync(target);
  } catch (e) {
    return { written: false, reason: `it cannot be read any more (${codeOf(e)})` };
  }
  if (!mayWrite(target, stat)) {
    return { written: false, reason: `it is read-only (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}); make it writable to let fix write it` };
  }
  try {
    if (stat.nlink > 1) writeInPlace(target, text);
    else replaceByRename(target, text, stat);
    return { written: true };
  } catch (e) {
    return { written: false, reason: `it could not be written (${codeOf(e)})` };
  }
}

/** Write permission for this user, and some write bit at all: root may write anything, but 0444 says "leave me". */
function mayWrite(file: string, stat: fs.Stats): boolean {
  if ((stat.mode & 0o222) === 0) return false;
  try {
    fs.accessSync(file, fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function writeInPlace(file: string, text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, 0);
    fs.ftruncateSync(fd, bytes.length);
  } finally {
    fs.closeSync(fd);
  }
}

function replaceByRename(file: string, text: string, stat: fs.Stats): void {
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.blip2-${process.pid}-${crypto.randomBytes(4).toString('hex')}.tmp`);
  try {
    const fd = fs.openSync(temporary, 'wx', 0o600);
    try {
      fs.writeFileSync(fd, text);
      keepOwner(fd, stat);
      // After the owner: chown clears set-id bits. Explicitly, since the mode given to open is cut by the umask.
      fs.fchmodSync(fd, stat.mode & 0o7777);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temporary, file);
  } catch (e) {
    fs.rmSync(temporary, { force: true });
    throw e;
  }
}

/** The original's owner and group where this user may give them (root; or a group the user is in), else the user's. */
function keepOwner(fd: number, stat: fs.Stats): void {
  try {
    fs.fchownSync(fd, stat.uid, stat.gid);
  } catch {
    try {
      if (process.getuid) fs.fchownSync(fd, process.getuid(), stat.gid);
    } catch {
      // Not in that group either: the file becomes this user's, as any editor's save would make it.
    }
  }
}

function codeOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}
