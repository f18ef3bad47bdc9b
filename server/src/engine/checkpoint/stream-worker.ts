// The thread of a TensorStream (tensor-stream.ts): reads the groups of a stream request from disk or the Hub,
// hashes every byte of each file, and posts each tensor's bytes as soon as they are complete.
import { createReadStream } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { createSHA256, type IHasher } from 'hash-wasm';
import { CancelledError, toThreadError, UserError } from '../errors';
import { abortableDelay, errorCode, isNetworkError } from '../store/hub-download';
import { HubFileRanges, TransientHttpError, type RangeCounters } from '../store/hub-ranges';
import type { FromStreamWorker, StreamFile, StreamRequest, ToStreamWorker } from './tensor-stream';

const PROGRESS_BYTES = 4 << 20;

const counters: RangeCounters = { resolves: 0, ranges: 0, bytes: 0 };
let inFlight = 0;
let released: (() => void) | undefined;

function post(m: FromStreamWorker, transfer: ArrayBuffer[] = []): void {
  parentPort!.postMessage(m, transfer);
}

/** Waits until the caller has acknowledged enough tensors for `bytes` more to fit the budget. */
async function room(bytes: number, budget: number): Promise<void> {
  while (inFlight > 0 && inFlight + bytes > budget) await new Promise<void>((resolve) => (released = resolve));
}

interface RangeReader {
  read(start: number, end: number): AsyncIterable<Uint8Array>;
}

function readerFor(file: StreamFile): RangeReader {
  const loc = file.location;
  if (loc.kind === 'local') {
    return {
      async *read(start, end) {
        if (end <= start) return;
        for await (const chunk of createReadStream(loc.path, { start, end: end - 1, highWaterMark: 4 << 20 })) {
          counters.bytes += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
      },
    };
  }
  const ranges = new HubFileRanges(loc, counters);
  return { read: (start, end) => ranges.read(start, end, undefined) };
}

async function run(request: StreamRequest): Promise<void> {
  const readers = new Map<number, RangeReader>();
  let hasher: IHasher | undefined;
  let hashedFile = -1;
  let sinceProgress = 0;

  for (let index = request.from; index < request.groups.length; index++) {
    const group = request.groups[index];
    const file = request.files[group.file];
    if (hashedFile !== group.file) {
      hasher = await createSHA256();
      hasher.init();
      if (group.start !== 0) {
        // Resuming inside a file: its hash continues from the state saved after the bytes before this group.
        if (index !== request.from || !request.hashState) throw new Error(`group ${index} starts ${file.name} at ${group.start} without a hash state`);
        hasher.load(Buffer.from(request.hashState, 'base64'));
      }
      hashedFile = group.file;
    }
    let reader = readers.get(group.file);
    if (!reader) readers.set(group.file, (reader = readerFor(file)));

    let pos = group.start;
    let t = 0;
    let current: Uint8Array | undefined;
    let failures = 0;
    while (pos < group.end) {
      try {
        for await (const chunk of reader.read(pos, group.end)) {
          failures = 0;
          hasher!.update(chunk);
          let at = 0;
          while (at < chunk.length) {
            const tensor = group.tensors[t];
            const here = pos + at;
            if (!tensor || here < tensor.begin) {
              // Bytes before the next tensor: the header, hashed and nothing else.
              const skip = tensor ? Math.min(chunk.length - at, tensor.begin - here) : chunk.length - at;
              at += skip;
              continue;
            }
            current ??= new Uint8Array(new ArrayBuffer(tensor.end - tensor.begin));
            const n = Math.min(chunk.length - at, tensor.end - here);
            current.set(chunk.subarray(at, at + n), here - tensor.begin);
            at += n;
            if (here + n === tensor.end) {
              await room(current.length, request.budgetBytes);
              inFlight += current.length;
              post({ type: 'tensor', name: tensor.name, bytes: current.buffer as ArrayBuffer }, [current.buffer as ArrayBuffer]);
              current = undefined;
              t++;
            }
          }
          pos += chunk.length;
          sinceProgress += chunk.length;
          if (sinceProgress >= PROGRESS_BYTES) {
            sinceProgress = 0;
            post({ type: 'progress', counters: { ...counters } });
          }
        }
        if (pos < group.end) throw new TransientHttpError(`${file.name} ended at ${pos} of ${group.end} bytes`);
      } catch (e) {
        if (e instanceof UserError || e instanceof CancelledError) throw e;
        const transient = e instanceof TransientHttpError || isNetworkError(e);
        if (!transient) throw e;
        if (++failures > request.retries) {
          throw new UserError(
            `The download of ${file.name} kept failing (${errorCode(e) ?? (e as Error).message}).`,
            'Check the connection and set up again; it resumes where it stopped.',
          );
        }
        await abortableDelay(500 * failures, undefined);
      }
    }
    // A file's checksum comes before its last group's end, so the checkpoint after that group includes it.
    const state = Buffer.from(hasher!.save()).toString('base64');
    if (group.end === file.size) {
      post({ type: 'file', file: group.file, sha256: hasher!.digest('hex') });
      hashedFile = -1;
    }
    post({ type: 'group', index, hashState: state });
  }
  post({ type: 'end', counters: { ...counters } });
}

parentPort!.on('message', (m: ToStreamWorker) => {
  if (m.type === 'ack') {
    inFlight -= m.bytes;
    const r = released;
    released = undefined;
    r?.();
    return;
  }
  run(m.request).catch((e) => post({ type: 'failed', error: toThreadError(e) }));
});
