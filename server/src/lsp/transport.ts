/**
 * The connection the server speaks on: `--node-ipc` (the VS Code client), `--socket`, `--pipe` as
 * vscode-languageserver sets them up, and `--stdio` with readers of our own, because a byte stream can break: a
 * frame whose Content-Length lies leaves the library's reader unable to find the next message, answering nothing
 * and never exiting. Here a broken stream ends the process with a line on stderr, so the client starts a new one.
 */
import { format } from 'node:util';
import { createConnection, ProposedFeatures, StreamMessageReader, StreamMessageWriter, type Connection } from 'vscode-languageserver/node';
import type { ProtocolGuard } from './protocol-guard';

/** A message that has not arrived whole after this long will never arrive: the stream lost its framing. */
const PARTIAL_MESSAGE_TIMEOUT_MS = 30_000;

export function serverConnection(guard: ProtocolGuard): Connection {
  const options = { messageStrategy: guard.strategy };
  if (!process.argv.includes('--stdio')) return createConnection(ProposedFeatures.all, options);

  // stdout carries the protocol: anything a dependency prints must go to stderr instead.
  for (const level of ['log', 'info', 'warn', 'error', 'debug'] as const) {
    console[level] = (...args: unknown[]) => void process.stderr.write(`${format(...args)}\n`);
  }
  const reader = new StreamMessageReader(process.stdin);
  reader.partialMessageTimeout = PARTIAL_MESSAGE_TIMEOUT_MS;
  const broken = (why: string): void => {
    process.stderr.write(`blip2-language-server: the message stream from the client is broken (${why}); exiting so that the client can start a new server.\n`);
    process.exit(1);
  };
  reader.onError((e) => broken(String(e?.message ?? e).split('\n')[0]));
  reader.onPartialMessage(() => broken(`a message announced by its Content-Length has not arrived in ${PARTIAL_MESSAGE_TIMEOUT_MS / 1000} seconds`));
  // The client closed its end: after `shutdown` that is a clean end, before it the client went away.
  reader.onClose(() => process.exit(guard.shutDown ? 0 : 1));
  return createConnection(ProposedFeatures.all, reader, new StreamMessageWriter(process.stdout), options);
}
