/**
 * Finding the image elements of a document off the main thread. Two worker threads, one for documents up to
 * QUICK_LANE_CHARS and one for larger ones, so that a typical README is never queued behind a one-megabyte
 * changelog (3 to 4 s, and 200 MB of heap: micromark keeps every event). Each worker has a heap limit and ends
 * after a while idle, giving its memory back; a parse that runs out of heap or past its time-out ends its worker
 * (the next parse starts a fresh one) and the document counts as having no images, as does one larger than
 * MAX_PARSE_CHARS; the result then says why, for the user to be told.
 */
import type { Worker } from 'node:worker_threads';
import { startWorkerThread } from '../../worker-thread';
import type { ImageElement } from './image-reference';

/** What a search for images found: the elements, or none and why the document was not searched to the end. */
export interface FoundImages {
  elements: ImageElement[];
  /** Why the document counts as having no images ("it is 5,242,880 characters, more than …"). */
  skipped?: string;
}

/**
 * The image elements of a text in a language, found asynchronously. `wanted` is asked when the parse is about to
 * start: a parse nobody wants any more (the document changed again meanwhile) is skipped and resolves undefined.
 */
export type FindImageElements = (text: string, languageId: string, wanted?: () => boolean) => Promise<FoundImages | undefined>;

export interface ParseRequest {
  id: number;
  text: string;
  languageId: string;
}

export type ParseReply = { id: number; elements: ImageElement[] } | { id: number; error: string };

export const QUICK_LANE_CHARS = 256 * 1024;
/** Beyond this a document is not searched for images at all (a log opened by mistake): about 8 s and 500 MB. */
export const MAX_PARSE_CHARS = 2 * 1024 * 1024;
const TIMEOUT_MS = 60_000;
/** Heap per lane: what its largest document needs (measured: 200 MB for 1 MB of markdown), with room. */
const HEAP_MB = { quick: 192, large: 768 };
/** An idle worker ends after this long, so an editor session left open all day holds no parser memory. */
const IDLE_MS = 30_000;

export interface ImageParserOptions {
  log?: (line: string) => void;
}

export class WorkerImageParser {
  private readonly lanes: Lane[];

  constructor(options: ImageParserOptions = {}) {
    const log = options.log ?? (() => undefined);
    const start = (heapMb: number) => () =>
      startWorkerThread(__dirname, 'parse-worker.js', 'parse-worker.ts', { resourceLimits: { maxOldGenerationSizeMb: heapMb } });
    this.lanes = [new Lane('quick', start(HEAP_MB.quick), HEAP_MB.quick, log), new Lane('large', start(HEAP_MB.large), HEAP_MB.large, log)];
  }

  readonly find: FindImageElements = async (text, languageId, wanted) => {
    if (text.length > MAX_PARSE_CHARS) {
      return { elements: [], skipped: `it is ${text.length.toLocaleString('en-US')} characters long, more than the ${MAX_PARSE_CHARS.toLocaleString('en-US')} searched for images` };
    }
    return this.lanes[text.length <= QUICK_LANE_CHARS ? 0 : 1].parse({ text, languageId, wanted });
  };

  async dispose(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.dispose()));
  }
}

interface Job {
  text: string;
  languageId: string;
  wanted?: () => boolean;
}

/** One worker, the parse it runs and the parses waiting for it, in order; one at a time, so stale ones can be skipped. */
class Lane {
  private worker?: Worker;
  private nextId = 1;
  private readonly queue: { job: Job; resolve: (found: FoundImages | undefined) => void }[] = [];
  private running?: { id: number; resolve: (found: FoundImages | undefined) => void; timer: NodeJS.Timeout };
  private idle?: NodeJS.Timeout;

  constructor(
    private readonly name: string,
    private readonly start: () => Worker,
    private readonly heapMb: number,
    private readonly log: (line: string) => void,
  ) {}

  parse(job: Job): Promise<FoundImages | undefined> {
    return new Promise((resolve) => {
      this.queue.push({ job, resolve });
      this.next();
    });
  }

  async dispose(): Promise<void> {
    clearTimeout(this.idle);
    const worker = this.worker;
    this.worker = undefined;
    this.finishRunning({ elements: [] });
    for (const waiting of this.queue.splice(0)) waiting.resolve({ elements: [] });
    await worker?.terminate();
  }

  private next(): void {
    clearTimeout(this.idle);
    while (!this.running && this.queue.length > 0) {
      const { job, resolve } = this.queue.shift()!;
      if (job.wanted && !job.wanted()) {
        resolve(undefined);
        continue;
      }
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.log(`Finding the images of a ${job.text.length}-character ${job.languageId} document took over ${TIMEOUT_MS / 1000} s; it is treated as having none.`);
        this.restart(`finding its images took more than ${TIMEOUT_MS / 1000} seconds`);
      }, TIMEOUT_MS);
      this.running = { id, resolve, timer };
      this.ensureWorker().postMessage({ id, text: job.text, languageId: job.languageId } satisfies ParseRequest);
    }
    if (!this.running && this.worker) {
      this.idle = setTimeout(() => this.restart(), IDLE_MS);
      this.idle.unref();
    }
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const worker = this.start();
    // Never keeps the server alive by itself.
    worker.unref();
    worker.on('message', (reply: ParseReply) => {
      if (reply.id !== this.running?.id) return;
      if ('error' in reply) this.log(`Finding images failed: ${reply.error}`);
      this.finishRunning('error' in reply ? { elements: [], skipped: `finding its images failed (${reply.error.split('\n')[0].slice(0, 120)})` } : { elements: reply.elements });
    });
    // Out of heap (ERR_WORKER_OUT_OF_MEMORY) ends only the worker: its document counts as having no images.
    let outOfMemory = false;
    worker.on('error', (e: NodeJS.ErrnoException) => {
      outOfMemory ||= e.code === 'ERR_WORKER_OUT_OF_MEMORY';
      this.log(`The ${this.name} image-finding worker failed: ${e.message}`);
    });
    worker.on('exit', () => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      // A parser that died must not leave a request waiting: its document counts as having no images.
      this.finishRunning({ elements: [], skipped: outOfMemory ? `finding its images needed more than the ${this.heapMb} MB of memory it may use` : 'finding its images stopped unexpectedly' });
    });
    this.worker = worker;
    return worker;
  }

  /** Ends the worker (idle, or stuck on a parse that is then answered as skipped for `why`). */
  private restart(why?: string): void {
    const worker = this.worker;
    this.worker = undefined;
    void worker?.terminate();
    this.finishRunning({ elements: [], skipped: why });
  }

  private finishRunning(found: FoundImages): void {
    const running = this.running;
    if (!running) return;
    this.running = undefined;
    clearTimeout(running.timer);
    running.resolve(found);
    this.next();
  }
}
