// The HTTP side of using a BLIP-2 server (blip2 serve, or vLLM serving BLIP-2): its model list and streamed chat
// completions, with every way it can fail made into one sentence that names the server and never the key.
import * as http from 'node:http';
import * as https from 'node:https';
import { CancelledError, UserError } from '../../engine/errors';
import type { ChatCompletionChunk, ChatCompletionRequest, FinishReason, ModelCard } from '../../protocol/openai-chat';

export type RemoteFailure = 'unreachable' | 'unauthorized' | 'busy' | 'server' | 'timeout' | 'notBlip2' | 'refused' | 'protocol';

/** A failure of the server or of the way to it: the sentence names the server; `failure` says which kind. */
export class RemoteServerError extends UserError {
  readonly kind = 'server';
  constructor(readonly failure: RemoteFailure, message: string) {
    super(message);
    this.name = 'RemoteServerError';
  }
}

export interface Completion {
  /** Per choice, in index order: the text and why it ended. */
  choices: { text: string; finishReason: FinishReason | null }[];
}

export interface ClientOptions {
  /** What serverUrl() made of the setting: origin and path, without /v1. */
  baseUrl: string;
  apiKey?: string;
  /** No answer (no header, or no event of a stream) for this long is a failure. */
  timeoutMs: number;
}

/** The most a response body may hold, so a server that streams forever cannot fill this process. */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

export class OpenAiChatClient {
  private readonly origin: string;

  constructor(private readonly options: ClientOptions) {
    this.origin = new URL(options.baseUrl).origin;
  }

  /** The BLIP-2 model the server serves: the one card whose id or root names BLIP-2. */
  async blip2Model(signal?: AbortSignal): Promise<ModelCard> {
    const { status, body } = await this.send('GET', '/v1/models', undefined, signal);
    if (status !== 200) throw this.statusError(status, body);
    let cards: ModelCard[];
    try {
      const list = JSON.parse(body) as { data?: unknown };
      if (!Array.isArray(list.data)) throw new Error('no data');
      cards = list.data.filter((c): c is ModelCard => typeof c === 'object' && c !== null && typeof (c as ModelCard).id === 'string');
    } catch {
      throw this.error('protocol', `does not answer GET /v1/models as an OpenAI-compatible server does`);
    }
    const card = cards.find((c) => isBlip2(c.id) || (typeof c.root === 'string' && isBlip2(c.root)));
    if (!card) {
      const names = cards.map((c) => c.id).join(', ') || 'no model';
      throw new RemoteServerError('notBlip2', `The server at ${this.origin} serves ${names}, not BLIP-2.`);
    }
    return card;
  }

  /** A chat completion, streamed: `onText` gets each choice's text so far as it grows. */
  async complete(request: ChatCompletionRequest, options: { signal?: AbortSignal; onText?: (index: number, textSoFar: string) => void } = {}): Promise<Completion> {
    const texts: string[] = [];
    const finish: (FinishReason | null)[] = [];
    let done = false;
    const { status, body } = await this.send('POST', '/v1/chat/completions', { ...request, stream: true }, options.signal, (data) => {
      if (done) return;
      if (data === '[DONE]') {
        done = true;
        return;
      }
      let event: Omit<Partial<ChatCompletionChunk>, 'object'> & { error?: unknown; object?: unknown; message?: unknown };
      try {
        event = JSON.parse(data);
      } catch {
        throw this.error('protocol', 'sent an event that is not JSON');
      }
      // An error after the stream began (vLLM's create_streaming_error_response).
      if (event.error !== undefined || event.object === 'error') throw this.failed(500, errorMessage(event));
      for (const choice of event.choices ?? []) {
        const i = choice.index ?? 0;
        const add = choice.delta?.content ?? '';
        texts[i] = (texts[i] ?? '') + add;
        if (choice.finish_reason) finish[i] = choice.finish_reason;
        if (add) options.onText?.(i, texts[i]);
      }
    });
    if (status !== 200) throw this.statusError(status, body);
    if (!done) throw this.error('protocol', 'ended the answer before data: [DONE]');
    if (texts.length === 0) throw this.error('protocol', 'sent no choices');
    return { choices: Array.from({ length: texts.length }, (_, i) => ({ text: texts[i] ?? '', finishReason: finish[i] ?? null })) };
  }

  /**
   * One request. A 200 event stream is handed to `onEvent` as it comes (each `data:` payload); any other answer is
   * read whole. Redirects are not followed: the images go to the server named, and nowhere else.
   */
  private send(method: string, path: string, body: unknown, signal?: AbortSignal, onEvent?: (data: string) => void): Promise<{ status: number; body: string }> {
    const url = new URL(`${this.options.baseUrl}${path}`);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { Accept: onEvent ? 'text/event-stream' : 'application/json' };
    if (payload) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(payload.length);
    }
    if (this.options.apiKey) headers.Authorization = `Bearer ${this.options.apiKey}`;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new CancelledError());
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', abort);
        fn();
      };
      const fail = (e: unknown) => settle(() => {
        req.destroy();
        reject(e);
      });
      let timer = setTimeout(() => fail(this.timeout()), this.options.timeoutMs);
      const alive = () => {
        clearTimeout(timer);
        timer = setTimeout(() => fail(this.timeout()), this.options.timeoutMs);
      };
      const abort = () => fail(new CancelledError());
      signal?.addEventListener('abort', abort, { once: true });
      const request = url.protocol === 'https:' ? https.request : http.request;
      const req = request(url, { method, headers }, (res) => {
        alive();
        const status = res.statusCode ?? 0;
        const streaming = status === 200 && onEvent !== undefined && /^text\/event-stream/i.test(String(res.headers['content-type'] ?? ''));
        let text = '';
        let size = 0;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          alive();
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) return fail(this.error('protocol', 'sent an answer larger than 16 MB'));
          text += chunk;
          if (!streaming) return;
          // Events end with a blank line; a partial one waits for the next chunk.
          const events = text.split(/\r?\n\r?\n/);
          text = events.pop()!;
          try {
            for (const event of events) {
              const data = event.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
              if (data) onEvent(data);
            }
          } catch (e) {
            fail(e);
          }
        });
        res.on('end', () => {
          if (streaming && text.trim()) {
            try {
              const data = text.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
              if (data) onEvent(data);
            } catch (e) {
              return fail(e);
            }
          }
          if (status === 200 && onEvent && !streaming) {
            return fail(this.error('protocol', `answered ${method} ${path} with ${res.headers['content-type'] ?? 'no content type'}, not an event stream`));
          }
          settle(() => resolve({ status, body: streaming ? '' : text }));
        });
        res.on('error', (e) => fail(this.unreachable(e)));
        res.on('aborted', () => fail(this.error('protocol', 'closed the connection in the middle of its answer')));
      });
      req.on('error', (e) => fail(this.unreachable(e)));
      req.end(payload);
    });
  }

  private statusError(status: number, body: string): RemoteServerError {
    if (status >= 300 && status < 400) {
      return new RemoteServerError('refused', `The server at ${this.origin} redirects elsewhere (${status}); images are sent only to the address set, so set it to where the server is.`);
    }
    let parsed: unknown = body;
    try {
      parsed = JSON.parse(body);
    } catch {
      // Not JSON: a proxy's page, say; the status speaks for it.
    }
    return this.failed(status, errorMessage(parsed));
  }

  /** The sentence for an HTTP status and the server's own message (vLLM's error shapes, old and new). */
  private failed(status: number, detail: string | undefined): RemoteServerError {
    const said = detail ? `: ${this.redact(detail)}` : '';
    const server = `The BLIP-2 server at ${this.origin}`;
    if (status === 401 || status === 403) {
      return new RemoteServerError('unauthorized', this.options.apiKey ? `${server} refused the API key (${status}${said ? said.replace(/^: /, ', ') : ''}).` : `${server} needs an API key (${status}); set BLIP2_API_KEY (in VS Code: "BLIP-2: Set Server API Key…").`);
    }
    if (status === 429) return new RemoteServerError('busy', `${server} is busy (429)${said}`.replace(/\.?$/, '.'));
    if (status >= 500) return new RemoteServerError('server', `${server} failed (${status})${said}`.replace(/\.?$/, '.'));
    return new RemoteServerError('refused', `${server} refused the request (${status})${said}`.replace(/\.?$/, '.'));
  }

  private timeout(): RemoteServerError {
    return new RemoteServerError('timeout', `The BLIP-2 server at ${this.origin} did not answer within ${Math.round(this.options.timeoutMs / 1000)} s.`);
  }

  private unreachable(e: Error): RemoteServerError {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ECONNREFUSED' ? 'nothing listens there' : code === 'ENOTFOUND' ? 'the name does not resolve' : (code ?? e.message);
    return new RemoteServerError('unreachable', `The BLIP-2 server at ${this.origin} cannot be reached (${why}).`);
  }

  private error(failure: RemoteFailure, what: string): RemoteServerError {
    return new RemoteServerError(failure, `The server at ${this.origin} ${what}.`);
  }

  /** A server could echo what it was sent; the key never goes on into a message or a log. */
  private redact(text: string): string {
    const key = this.options.apiKey;
    const short = text.length > 300 ? `${text.slice(0, 300)}…` : text;
    return key ? short.split(key).join('[the API key]') : short;
  }
}

/** The message of any of vLLM's error bodies: `{"error": {"message"}}`, `{"object": "error", "message"}` (before v0.10.1) or `{"error": "Unauthorized"}`. */
function errorMessage(body: unknown): string | undefined {
  if (typeof body === 'string') return body.trim() ? body.trim().split('\n')[0] : undefined;
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as { error?: unknown; message?: unknown; detail?: unknown };
  if (typeof b.error === 'string') return b.error;
  if (typeof b.error === 'object' && b.error !== null && typeof (b.error as { message?: unknown }).message === 'string') return (b.error as { message: string }).message;
  if (typeof b.message === 'string') return b.message;
  if (typeof b.detail === 'string') return b.detail;
  return undefined;
}

function isBlip2(name: string): boolean {
  return /blip-?2/i.test(name);
}
