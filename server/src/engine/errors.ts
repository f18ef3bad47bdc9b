/**
 * A problem the user caused and can fix (a missing file, a bad option, a model we do not support).
 * Front ends print `message` as one line and never a stack trace; `hint` says what to do next.
 */
export class UserError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = 'UserError';
  }

  /** The message and the way out, as the single line a CLI or notification shows. */
  get line(): string {
    return this.hint ? `${this.message} ${this.hint}` : this.message;
  }
}

/**
 * The model the user named is not on this machine (not cached, only partly downloaded, not found) and nothing may be
 * downloaded now: front ends offer set-up rather than report a failure.
 */
export class ModelUnavailableError extends UserError {}

/**
 * The converted model's files are not what the conversion wrote (changed on disk, truncated, or computing NaN):
 * front ends offer to set the model up again, which converts (or downloads) it again.
 */
export class DamagedModelError extends UserError {}

/** Loading the model ran out of memory: the message says how much it needs, the hint offers a smaller precision. */
export class OutOfMemoryError extends UserError {}

/** Thrown when an AbortSignal or cancellation token stops work between steps. */
export class CancelledError extends Error {
  constructor(message = 'Cancelled.') {
    super(message);
    this.name = 'CancelledError';
  }
}

export function isCancelled(e: unknown): e is CancelledError {
  return e instanceof CancelledError || (e instanceof Error && e.name === 'AbortError');
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new CancelledError();
}

/** An error as it crosses to another thread: structured cloning keeps only a plain Error's message and stack. */
export interface ThreadError {
  kind: 'outOfMemory' | 'damaged' | 'unavailable' | 'user' | 'cancelled' | 'internal';
  message: string;
  hint?: string;
  stack?: string;
}

export function toThreadError(e: unknown): ThreadError {
  if (e instanceof UserError) {
    const kind = e instanceof OutOfMemoryError ? 'outOfMemory' : e instanceof DamagedModelError ? 'damaged' : e instanceof ModelUnavailableError ? 'unavailable' : 'user';
    return { kind, message: e.message, hint: e.hint };
  }
  if (isCancelled(e)) return { kind: 'cancelled', message: e.message };
  return { kind: 'internal', message: e instanceof Error ? e.message : String(e), stack: e instanceof Error ? e.stack : undefined };
}

/** The error toThreadError described, as its own class again, so callers on this thread handle it as they would here. */
export function fromThreadError(e: ThreadError): Error {
  switch (e.kind) {
    case 'outOfMemory': return new OutOfMemoryError(e.message, e.hint);
    case 'damaged': return new DamagedModelError(e.message, e.hint);
    case 'unavailable': return new ModelUnavailableError(e.message, e.hint);
    case 'user': return new UserError(e.message, e.hint);
    case 'cancelled': return new CancelledError(e.message);
    case 'internal': {
      const error = new Error(e.message);
      if (e.stack) error.stack = e.stack;
      return error;
    }
  }
}
