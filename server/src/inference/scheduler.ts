import { CancelledError, UserError } from '../engine/errors';
import type { Priority } from './types';

/** A run that others may join: waiting runs of the same kind (`key`) start together, up to `limit` of them. */
export interface BatchKind<I> {
  key: string;
  limit: number;
  /** Runs the members; each member is settled by it (resolve or reject), whenever its part is done. */
  run(members: BatchMember<I>[]): Promise<void>;
}

export interface BatchMember<I> {
  item: I;
  signal: AbortSignal;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

interface Entry {
  priority: () => Priority;
  signal: AbortSignal;
  start: () => Promise<void>;
  reject: (e: unknown) => void;
  batch?: { kind: BatchKind<unknown>; member: BatchMember<unknown> };
}

/** A run refused because the queue is full; background work gives way to interactive work with it too. */
export class QueueFullError extends UserError {}

/**
 * One model run at a time: waiting runs are taken interactive-first, then in arrival order. A run whose signal
 * is aborted while it waits never starts. Priorities are read when a run is picked, so background work that a
 * hover starts waiting on moves ahead. At most `maxWaiting` runs wait: when full, an interactive run takes the
 * place of the latest background one, and anything else is refused with a sentence.
 * Batched runs (`batch`): when one is picked, the waiting runs of the same kind start with it, as one run.
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
      this.enqueue({ priority, signal, reject, start: () => work().then(resolve, reject) });
    });
  }

  /** A run of `kind` for `item`, started with the other waiting runs of its kind; resolves with what `run` gives it. */
  batch<I, T>(priority: () => Priority, signal: AbortSignal, kind: BatchKind<I>, item: I): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const member: BatchMember<I> = { item, signal, resolve: resolve as (v: unknown) => void, reject };
      this.enqueue({
        priority,
        signal,
        reject,
        start: () => kind.run([member]),
        batch: { kind: kind as BatchKind<unknown>, member: member as BatchMember<unknown> },
      });
    });
  }

  private enqueue(entry: Entry): void {
    if (this.waiting.length >= this.maxWaiting && !this.makeRoomFor(entry.priority())) {
      entry.reject(full(this.maxWaiting));
      return;
    }
    entry.signal.addEventListener('abort', () => {
      const i = this.waiting.indexOf(entry);
      if (i >= 0) {
        this.waiting.splice(i, 1);
        entry.reject(new CancelledError());
      }
    }, { once: true });
    this.waiting.push(entry);
    this.pump();
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
    const started = entry.batch ? this.startBatch(entry.batch.kind, entry.batch.member) : entry.start();
    started.catch(() => undefined).finally(() => {
      this.busy = false;
      this.pump();
    });
  }

  /** The picked run and the waiting runs of its kind (in arrival order, up to its limit), as one run. */
  private startBatch(kind: BatchKind<unknown>, first: BatchMember<unknown>): Promise<void> {
    const members = [first];
    for (let i = 0; i < this.waiting.length && members.length < kind.limit; ) {
      const other = this.waiting[i].batch;
      if (other && other.kind.key === kind.key && !other.member.signal.aborted) {
        this.waiting.splice(i, 1);
        members.push(other.member);
      } else {
        i++;
      }
    }
    return kind.run(members).catch((e: unknown) => {
      for (const m of members) m.reject(e);
    });
  }
}

function full(limit: number): QueueFullError {
  return new QueueFullError(`BLIP-2 is busy: ${limit} captions and answers are already waiting.`, 'Try again when some of them are done.');
}
