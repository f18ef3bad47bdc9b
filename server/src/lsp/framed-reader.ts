/**
 * The server's reader of LSP frames on a byte stream (stdio): `Content-Length` headers, a blank line, a JSON body.
 * vscode-jsonrpc's own reader treats a body that is not JSON as the end of the stream, and waits for ever on a
 * header that never ends; here the two kinds of trouble are kept apart:
 *  - a frame that arrived whole but whose body is not a JSON object is answered (-32700 Parse error, -32600 Invalid
 *    Request, with id null as JSON-RPC says) and reading goes on: the next frame starts where this one said it ends;
 *  - a stream whose framing is lost (a header line that is no header, no Content-Length, more than 8 KB of header,
 *    a message begun and not finished for 30 s) cannot be read on, and is reported as an error.
 */
import { AbstractMessageReader, ErrorCodes, type DataCallback, type Disposable, type Message, type MessageReader } from 'vscode-languageserver/node';

/** Headers are a line or two; more than this without the blank line that ends them is not a header. */
export const MAX_HEADER_BYTES = 8 * 1024;
/** A message begun and not continued for this long will never arrive: the stream lost its framing. */
export const PARTIAL_MESSAGE_TIMEOUT_MS = 30_000;

/** A frame that arrived whole but cannot be a message: answered with this code and message, id null. */
export interface Malformed {
  code: number;
  message: string;
}

const HEADER_END = Buffer.from('\r\n\r\n');
/** RFC 7230's token characters, which a header's name is made of. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export class FramedMessageReader extends AbstractMessageReader implements MessageReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** The body's length once its header is read; undefined while reading a header. */
  private bodyLength: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private broken = false;
  private callback: DataCallback = () => undefined;

  constructor(
    private readonly readable: NodeJS.ReadableStream,
    private readonly onMalformed: (problem: Malformed) => void,
    private readonly partialTimeoutMs = PARTIAL_MESSAGE_TIMEOUT_MS,
  ) {
    super();
  }

  listen(callback: DataCallback): Disposable {
    this.callback = callback;
    const onData = (chunk: Buffer): void => this.onData(chunk);
    const onError = (e: Error): void => this.fireError(e);
    const onClose = (): void => {
      clearTimeout(this.timer);
      this.fireClose();
    };
    this.readable.on('data', onData);
    this.readable.on('error', onError);
    this.readable.on('close', onClose);
    return {
      dispose: () => {
        clearTimeout(this.timer);
        this.readable.off('data', onData);
        this.readable.off('error', onError);
        this.readable.off('close', onClose);
      },
    };
  }

  private onData(chunk: Buffer): void {
    if (this.broken) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered > 0) {
      if (this.bodyLength === undefined) {
        const head = this.peek(Math.min(this.buffered, MAX_HEADER_BYTES + HEADER_END.length));
        const end = head.indexOf(HEADER_END);
        const header = head.subarray(0, end < 0 ? head.length : end).toString('latin1');
        const problem = headerProblem(header, end >= 0);
        if (problem) return this.fail(problem);
        if (end < 0) {
          if (this.buffered > MAX_HEADER_BYTES) return this.fail(`more than ${MAX_HEADER_BYTES / 1024} KB of header without the blank line that ends it`);
          return this.waitForMore();
        }
        this.take(end + HEADER_END.length);
        this.bodyLength = Number(/^content-length:\s*(\d+)\s*$/im.exec(header)![1]);
      }
      if (this.buffered < this.bodyLength) return this.waitForMore();
      const body = this.take(this.bodyLength);
      this.bodyLength = undefined;
      clearTimeout(this.timer);
      this.deliver(body);
    }
  }

  private deliver(body: Buffer): void {
    let message: unknown;
    try {
      message = JSON.parse(body.toString('utf8'));
    } catch (e) {
      return this.onMalformed({ code: ErrorCodes.ParseError, message: `Parse error: the message is not JSON (${(e as Error).message.slice(0, 120)}).` });
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      const what = Array.isArray(message) ? 'an array (batches are not part of LSP)' : String(JSON.stringify(message)).slice(0, 40);
      return this.onMalformed({ code: ErrorCodes.InvalidRequest, message: `Invalid request: a message is a JSON object, not ${what}.` });
    }
    this.callback(message as Message);
  }

  private waitForMore(): void {
    clearTimeout(this.timer);
    const seconds = Math.round(this.partialTimeoutMs / 1000);
    this.timer = setTimeout(() => this.fail(`a message begun has not continued in ${seconds} second${seconds === 1 ? '' : 's'}`), this.partialTimeoutMs);
  }

  private fail(why: string): void {
    this.broken = true;
    clearTimeout(this.timer);
    this.chunks = [];
    this.buffered = 0;
    this.fireError(new Error(why));
  }

  /** The first `n` buffered bytes, left in place. */
  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    const parts: Buffer[] = [];
    let have = 0;
    for (const chunk of this.chunks) {
      if (have >= n) break;
      parts.push(chunk.subarray(0, n - have));
      have += Math.min(chunk.length, n - have);
    }
    return Buffer.concat(parts, have);
  }

  /** Removes and returns the first `n` buffered bytes. */
  private take(n: number): Buffer {
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const chunk = this.chunks[0];
      if (chunk.length <= need) {
        parts.push(chunk);
        this.chunks.shift();
        need -= chunk.length;
      } else {
        parts.push(chunk.subarray(0, need));
        this.chunks[0] = chunk.subarray(need);
        need = 0;
      }
    }
    this.buffered -= n;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
  }
}

/**
 * Why `header` cannot be the start of an LSP header, or undefined. A header still arriving is judged on what
 * there is: a line that does not begin with a header name (a body sent without the blank line before it) is found
 * as soon as its first character arrives, not after waiting for an end that will not come.
 */
function headerProblem(header: string, complete: boolean): string | undefined {
  const lines = header.split('\r\n');
  for (const [i, line] of lines.entries()) {
    const last = i === lines.length - 1 && !complete;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    if ((colon < 0 && !last) || (name.length > 0 && !HEADER_NAME.test(name)) || (name.length === 0 && !last)) {
      return `a header line is not "Name: value" (it begins ${JSON.stringify(line.slice(0, 20))})`;
    }
  }
  if (!complete) return undefined;
  const length = /^content-length:(.*)$/im.exec(header);
  if (!length) return 'a header has no Content-Length';
  if (!/^\s*\d+\s*$/.test(length[1])) return `the Content-Length ${JSON.stringify(length[1].trim().slice(0, 20))} is not a number of bytes`;
  return undefined;
}
