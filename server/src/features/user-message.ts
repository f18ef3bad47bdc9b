import { isCancelled } from '../engine/errors';

/**
 * One sentence for the user about why captioning or answering failed: never a stack trace, never an object.
 * Errors come from three places: our own UserError (already a sentence, with a hint), the inference worker
 * (plain `{ kind, message }` objects, since errors lose their class crossing the thread), and Node or sharp.
 */
export function describeError(error: unknown): string {
  if (isCancelled(error) || kindOf(error) === 'cancelled') return 'Cancelled.';
  if (error instanceof Error && error.name === 'UserError') {
    const hint = (error as Error & { hint?: string }).hint;
    return sentence(hint ? `${error.message} ${hint}` : error.message);
  }
  const code = (error as { code?: unknown } | undefined)?.code;
  const path = (error as { path?: unknown } | undefined)?.path;
  if (code === 'ENOENT') return sentence(typeof path === 'string' ? `The image file does not exist: ${path}` : 'The image file does not exist');
  if (code === 'EACCES' || code === 'EPERM') return sentence(typeof path === 'string' ? `The image file cannot be read (permission denied): ${path}` : 'The image file cannot be read (permission denied)');
  if (code === 'EISDIR') return 'The image path names a folder, not a file.';
  const message = messageOf(error);
  // sharp's decoding failures: the file is there but is not an image it can read.
  if (/unsupported image format|corrupt|premature end|VipsJpeg|vipspng|bad seek|Input buffer|Input file/i.test(message)) {
    return sentence(`The file is not an image BLIP-2 can read (${firstLine(message)})`);
  }
  return sentence(firstLine(message) || 'BLIP-2 failed for an unknown reason');
}

/** The worker's error kind, when the error came from it. */
export function kindOf(error: unknown): string | undefined {
  const kind = (error as { kind?: unknown } | undefined)?.kind;
  return typeof kind === 'string' ? kind : undefined;
}

function messageOf(error: unknown): string {
  if (typeof error === 'string') return error;
  const message = (error as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' ? message : String(error);
}

function firstLine(text: string): string {
  return text.split(/\r?\n/, 1)[0].trim();
}

function sentence(text: string): string {
  const trimmed = text.trim();
  return /[.!?…]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}
