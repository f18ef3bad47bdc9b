// The worker thread of a SessionThread (session-thread.ts): opens one graph with openSession and runs it.
import { parentPort } from 'node:worker_threads';
import { toThreadError } from '../errors';
import { openSession, Tensor, type OpenedSession } from './ort';
import type { FromSessionThread, ToSessionThread } from './session-thread';

let opened: OpenedSession | undefined;

async function handle(m: ToSessionThread): Promise<FromSessionThread> {
  switch (m.type) {
    case 'open': {
      opened = await openSession(m.file, m.settings);
      const { session: _session, ...info } = opened;
      return { type: 'opened', id: m.id, info };
    }
    case 'run': {
      if (!opened) throw new Error('run before open');
      const feeds = Object.fromEntries(Object.entries(m.feeds).map(([name, f]) => [name, new Tensor('float32', f.data, f.dims)]));
      const out = await opened.session.run(feeds, m.fetches);
      return { type: 'ran', id: m.id, outputs: Object.fromEntries(Object.entries(out).map(([name, t]) => [name, t.data as Float32Array])) };
    }
    case 'release':
      await opened?.session.release();
      opened = undefined;
      return { type: 'released', id: m.id };
  }
}

// One request at a time, in order: the caller awaits each, and onnxruntime's run blocks this thread anyway.
let queue = Promise.resolve();
parentPort!.on('message', (m: ToSessionThread) => {
  queue = queue.then(async () => {
    let reply: FromSessionThread;
    try {
      reply = await handle(m);
    } catch (e) {
      reply = { type: 'failed', id: m.id, error: toThreadError(e) };
    }
    parentPort!.postMessage(reply);
  });
});
