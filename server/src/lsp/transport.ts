/**
 * The connection the server speaks on: `--node-ipc` (the VS Code client), `--socket`, `--pipe` as
 * vscode-languageserver sets them up, and `--stdio` with a reader of our own (framed-reader.ts), because a byte
 * stream can break: a frame whose Content-Length lies, or a header without its blank line, leaves the library's
 * reader unable to find the next message, answering nothing and never exiting. Here a broken stream ends the
 * process with a line on stderr, so the client starts a new one; a frame that arrived whole but holds no JSON
 * object is answered with a JSON-RPC error, and the server goes on.
 */
import { format } from 'node:util';
import { createConnection, ProposedFeatures, StreamMessageWriter, type Connection, type ResponseMessage } from 'vscode-languageserver/node';
import { FramedMessageReader, PARTIAL_MESSAGE_TIMEOUT_MS } from './framed-reader';
import type { ProtocolGuard } from './protocol-guard';

export function serverConnection(guard: ProtocolGuard): Connection {
  const options = { messageStrategy: guard.strategy };
  if (!process.argv.includes('--stdio')) return createConnection(ProposedFeatures.all, options);

  // stdout carries the protocol: anything a dependency prints must go to stderr instead.
  for (const level of ['log', 'info', 'warn', 'error', 'debug'] as const) {
    console[level] = (...args: unknown[]) => void process.stderr.write(`${format(...args)}\n`);
  }
  const writer = new StreamMessageWriter(process.stdout);
  const reader = new FramedMessageReader(
    process.stdin,
    // Nobody can tell which request it was, so the answer has id null (JSON-RPC 2.0, section 5).
    (problem) => {
      const answer: ResponseMessage = { jsonrpc: '2.0', id: null, error: problem };
      void writer.write(answer);
    },
    Number(process.env.BLIP2_DEBUG_PARTIAL_MESSAGE_MS) || PARTIAL_MESSAGE_TIMEOUT_MS,
  );
  reader.onError((e) => {
    process.stderr.write(`blip2-language-server: the message stream from the client is broken (${String(e?.message ?? e).split('\n')[0]}); exiting so that the client can start a new server.\n`);
    process.exit(1);
  });
  // The client closed its end: after `shutdown` that is a clean end, before it the client went away.
  reader.onClose(() => process.exit(guard.shutDown ? 0 : 1));
  return createConnection(ProposedFeatures.all, reader, writer, options);
}
