import type { Worker } from 'node:worker_threads';
import { startWorkerThread } from '../../worker-thread';
import { fromThreadError, type ThreadError } from '../errors';
import type { OpenedSession, SessionSettings } from './ort';

/** What openSession said about the session, which itself stays in its thread. */
export type OpenedInfo = Omit<OpenedSession, 'session'>;

/** Settings that can be posted to a thread (the test hook for free disk space is a function). */
export type ThreadSessionSettings = Omit<SessionSettings, 'freeBytes'>;

export interface FloatFeed {
  data: Float32Array;
  dims: number[];
}

export type ToSessionThread =
  | { type: 'open'; id: number; file: string; settings: ThreadSessionSettings }
  | { type: 'run'; id: number; feeds: Record<string, FloatFeed>; fetches: string[] }
  | { type: 'release'; id: number };

export type FromSessionThread =
  | { type: 'opened'; id: number; info: OpenedInfo }
  | { type: 'ran'; id: number; outputs: Record<string, Float32Array> }
  | { type: 'released'; id: number }
  | { type: 'failed'; id: number; error: ThreadError };

type Request = ToSessionThread extends infer T ? (T extends { id: number } ? Omit<T, 'id'> : never) : never;

type Pending = { resolve: (m: FromSessionThread) => void; reject: (e: Error) => void };

/**
 * An onnxruntime session opened and run in a worker thread of its own. onnxruntime-node creates a session on the
 * calling thread and blocks it until done, and at int4 that is 1-2 s of single-threaded repacking per large graph:
 * a graph opened here loads on the other core while the caller opens the rest (blip2-model.ts).
 */
export class SessionThread {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private ended?: Error;
  private opened?: OpenedInfo;

  private constructor(private readonly worker: Worker) {
    // Idle, the thread must not keep the process alive (a CLI exits when its work is done); request() refs it
    // while a reply is due.
    worker.unref();
    worker.on('message', (m: FromSessionThread) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      if (m.type === 'failed') p.reject(fromThreadError(m.error));
      else p.resolve(m);
    });
    const end = (e: Error) => {
      this.ended ??= e;
      for (const p of this.pending.values()) p.reject(this.ended);
      this.pending.clear();
    };
    worker.on('error', end);
    worker.on('exit', () => end(new Error('The onnxruntime session thread ended.')));
  }

  static async open(file: string, settings: ThreadSessionSettings): Promise<SessionThread> {
    const thread = new SessionThread(startWorkerThread(__dirname, 'session-worker.js', 'session-worker.ts'));
    try {
      const reply = await thread.request({ type: 'open', file, settings });
      thread.opened = (reply as Extract<FromSessionThread, { type: 'opened' }>).info;
      return thread;
    } catch (e) {
      await thread.worker.terminate();
      throw e;
    }
  }

  get info(): OpenedInfo {
    return this.opened!;
  }

  async run(feeds: Record<string, FloatFeed>, fetches: string[]): Promise<Record<string, Float32Array>> {
    const reply = await this.request({ type: 'run', feeds, fetches });
    return (reply as Extract<FromSessionThread, { type: 'ran' }>).outputs;
  }

  /** Releases the session and ends its thread. */
  async release(): Promise<void> {
    if (!this.ended) await this.request({ type: 'release' }).catch(() => undefined);
    await this.worker.terminate();
  }

  private request(message: Request): Promise<FromSessionThread> {
    if (this.ended) return Promise.reject(this.ended);
    const id = this.nextId++;
    const reply = new Promise<FromSessionThread>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.worker.ref();
    this.worker.postMessage({ ...message, id } as ToSessionThread);
    return reply;
  }
}
