/**
 * Reading a small file that a model folder or a repository provides (configs, a tokenizer, `.blip2.json`), which may
 * be anything: a named pipe, a device, a 200 MB file where 2 MB belong. Only a regular file is read, its size is
 * checked against a limit before a byte is read (and before a parser can run out of memory on it), and it is opened
 * non-blocking, so a pipe swapped in cannot stall the open.
 */
import * as fs from 'node:fs';
import { formatBytes } from './units';

// Not defined on Windows, where opening a pipe path does not block.
const NONBLOCK = fs.constants.O_NONBLOCK ?? 0;

/** The file is not read: `why` ends a sentence that names it ("is a named pipe, not a regular file"). */
export class FileRefused extends Error {
  constructor(readonly why: string) {
    super(why);
    this.name = 'FileRefused';
  }
}

/** The text of `file` when it is a regular file of at most `maxBytes`; FileRefused or the system's error otherwise. */
export function readSmallFile(file: string, maxBytes: number, what = 'this file'): string {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | NONBLOCK);
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new FileRefused(`is ${kindOfFile(stat)}, not a regular file`);
    if (stat.size > maxBytes) throw new FileRefused(`is ${formatBytes(stat.size)}, more than the ${formatBytes(maxBytes)} ${what} may be`);
    return fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/** What a file that is not a regular file is, for a message. */
export function kindOfFile(stat: fs.Stats): string {
  if (stat.isFile()) return 'a file';
  if (stat.isDirectory()) return 'a folder';
  if (stat.isFIFO()) return 'a named pipe';
  if (stat.isSocket()) return 'a socket';
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return 'a device';
  return 'not a regular file';
}
