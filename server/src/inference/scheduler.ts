import { CancelledError } from '../engine/errors';
import type { Priority } from './types';

interface Entry {
  priority: () => Priority;
  signal: AbortSignal;
  start: () => Promise<void>;
  reject: (e: unknown) => void;
}

/**
 * One model run at a time: waiting runs are taken interactive-first, then in arrival order. A run whose signal
 * is aborted while it waits never starts. Priorities are read when a run is picked, so background work that a
 * hover starts waiting on moves ahead.
 */
export class Scheduler {
  private readonly waiting: Entry[] = [];
  private busy = false;

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
