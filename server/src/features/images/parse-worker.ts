// The image finder's worker: markdown parsing costs about 4 s per megabyte (micromark), which on the server's main
// thread would hold every other request for that long.
import { parentPort } from 'node:worker_threads';
import { findImageElements } from './find-images';
import type { ParseReply, ParseRequest } from './image-parser';

const port = parentPort!;
port.on('message', (request: ParseRequest) => {
  let reply: ParseReply;
  try {
    reply = { id: request.id, elements: findImageElements(request.text, request.languageId) };
  } catch (e) {
    reply = { id: request.id, error: e instanceof Error ? e.message : String(e) };
  }
  port.postMessage(reply);
});
