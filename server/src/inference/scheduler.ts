import { CancelledError, UserError } from '../engine/errors';
import type { Priority } from './types';

interface Entry {
  priority: () => Priority;
  signal: AbortSignal;
  start: () => Promise<void>;
  reject: (e: unknown) => void;
}

/** A run refused because the queue is full; background work gives way to interactive work with it too. */
export class QueueFullError extends UserError {}

/**
 * One model run at a time: waiting runs are taken interactive-first, then in arrival order. A run whose signal
 * is aborted while it waits never starts. Priorities are read when a run is picked, so background work that a
 * hover starts waiting on moves ahead. At most `maxWaiting` runs wait: when full, an interactive run takes the
 * place of the latest background one, and anything else is refused with a sentence.
 */
export class Scheduler {
  private readonly waiting: Entry[] = [];
  private busy = false;

  constructor(private readonly maxWaiting = Infinity) {}

  get queued(): number {
    return this.waiting.length + (this.busy ? 1 : 0);
  }

  run<T>(priority: () => Priority, signal: AbortSignal, work: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Entry = {
        priority,
        signal,
        reject,
        start: () => work().then(resolve, reject),
      };
      if (this.waiting.length >= this.maxWaiting && !this.makeRoomFor(priority())) {
        reject(full(this.maxWaiting));
        return;
      }
      signal.addEventListener('abort', () => {
        const i = this.waiting.indexOf(entry);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          reject(new CancelledError());
        }
      }, { once: true });
      this.waiting.push(entry);
      this.pump();
    });
  }

  /** Drops the latest waiting background run for an interactive one; false when there is none to drop. */
  private makeRoomFor(priority: Priority): boolean {
    if (priority !== 'interactive') return false;
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      if (this.waiting[i].priority() === 'background') {
        const [dropped] = this.waiting.splice(i, 1);
        dropped.reject(full(this.maxWaiting));
        return true;
      }
    }
    return false;
  }

  private pump(): void {
    if (this.busy || this.waiting.length === 0) return;
    let pick = this.waiting.findIndex((e) => e.priority() === 'interactive');
    if (pick < 0) pick = 0;
    const [entry] = this.waiting.splice(pick, 1);
    if (entry.signal.aborted) {
      entry.reject(new CancelledError());
      this.pump();
      return;
    }
    this.busy = true;
    entry.start().finally(() => {
      this.busy = false;
      this.pump();
    });
  }
}

function full(limit: number): QueueFullError {
  return new QueueFullError(`BLIP-2 is busy: ${limit} captions and answers are already waiting.`, 'Try again when some of them are done.');
}
