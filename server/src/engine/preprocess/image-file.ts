/**
 * Reading an image file that a document, a request or a command line names, which may be anything: `/dev/zero`, a
 * FIFO nobody writes to, a folder, a 40 GB disk image. Only regular files are read, their size is checked against
 * the limit before a byte is read, never more than that many bytes are read, and no read can hold one of libuv's
 * four pool threads for long: the file is opened non-blocking (a FIFO swapped in after the check cannot stall the
 * open) and the whole read gives up after a time-out.
 */
import * as fs from 'node:fs';
import { UserError } from '../errors';
import { kindOfFile } from '../small-file';
import { formatBytes } from '../units';

/** The largest image file read unless a setting or flag says otherwise: far above any photo a camera writes. */
export const DEFAULT_MAX_IMAGE_FILE_BYTES = 64 * 1024 * 1024;
/** A local read that has not finished by then is stuck (a hung network share); the request is answered anyway. */
export const DEFAULT_IMAGE_READ_TIMEOUT_MS = 15_000;

export interface ImageFileLimits {
  maxBytes: number;
  timeoutMs?: number;
  /** How the user raises the limit here (a setting, a flag), said when a file is over it. */
  raiseHint?: string;
}

// Not defined on Windows, where opening a pipe path does not block.
const NONBLOCK = fs.constants.O_NONBLOCK ?? 0;

/**
 * The size of `file` when it is a regular file within the limit; otherwise a UserError that says what it is. Only
 * stat is called, which never blocks on special files, so this is cheap enough for every hover.
 */
export async function checkImageFile(file: string, limits: ImageFileLimits): Promise<number> {
  let stat: fs.Stats;
  try {
    stat = await fs.promises.stat(file);
  } catch (e) {
    throw readError(file, e);
  }
  refuseUnreadable(file, stat, limits);
  return stat.size;
}

/** The bytes of `file`, read once, after the checks of `checkImageFile` (repeated on the open file). */
export async function readImageFile(file: string, limits: ImageFileLimits): Promise<Buffer> {
  await checkImageFile(file, limits);
  const timeoutMs = limits.timeoutMs ?? DEFAULT_IMAGE_READ_TIMEOUT_MS;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new UserError(`Reading ${file} did not finish within ${Math.round(timeoutMs / 1000)} seconds.`, 'Check that the disk or network share holding it responds.')),
      timeoutMs,
    );
  });
  const read = readChecked(file, limits);
  // A read that loses the race still finishes (or fails) in the pool; nobody waits for it, and it must not go unhandled.
  read.catch(() => undefined);
  try {
    return await Promise.race([read, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function readChecked(file: string, limits: ImageFileLimits): Promise<Buffer> {
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file, fs.constants.O_RDONLY | NONBLOCK);
  } catch (e) {
    throw readError(file, e);
  }
  try {
    // The path may name something else now than when it was checked; the open file is what gets read.
    const stat = await handle.stat();
    refuseUnreadable(file, stat, limits);
    const buffer = Buffer.allocUnsafe(stat.size);
    let done = 0;
    while (done < stat.size) {
      const { bytesRead } = await handle.read(buffer, done, stat.size - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done === stat.size ? buffer : buffer.subarray(0, done);
  } catch (e) {
    throw e instanceof UserError ? e : readError(file, e);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

function refuseUnreadable(file: string, stat: fs.Stats, limits: ImageFileLimits): void {
  if (!stat.isFile()) {
    throw new UserError(`${file} is ${kindOfFile(stat)}, not an image file.`, 'Only regular files are read as images.');
  }
  if (stat.size > limits.maxBytes) {
    throw new UserError(
      `${file} is ${formatBytes(stat.size)}, more than the limit of ${formatBytes(limits.maxBytes)} for image files.`,
      limits.raiseHint ?? 'Scale it down or save it in a smaller format first.',
    );
  }
}

function readError(file: string, e: unknown): UserError {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new UserError(`The image file does not exist: ${file}.`, 'Check the path.');
    case 'EACCES':
    case 'EPERM':
      return new UserError(`The image file cannot be read (permission denied): ${file}.`, 'Check the file permissions.');
    case 'ELOOP':
      return new UserError(`The image path loops through symbolic links: ${file}.`);
    case 'EISDIR':
      return new UserError(`${file} is a folder, not an image file.`, 'Only regular files are read as images.');
    default:
      return new UserError(`The image file cannot be read: ${file} (${code ?? (e as Error).message}).`);
  }
}
