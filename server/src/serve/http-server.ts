// blip2 serve's HTTP side: the routes vLLM's OpenAI-compatible server has for BLIP-2 (POST /v1/chat/completions,
// GET /v1/models, GET /health), its error bodies and its Bearer check, on Node's http module.
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { isCancelled, UserError } from '../engine/errors';
import type { Answer } from '../engine/pipeline';
import { QueueFullError } from '../inference/scheduler';
import { BLIP2_SERVE_OWNER, type ChatCompletion, type ChatCompletionChunk, type FinishReason, type ModelList, type Usage } from '../protocol/openai-chat';
import { ApiError, badRequest } from './api-error';
import { parseChatRequest, type ChatRequest, type RequestLimits } from './chat-request';
import type { ServeEngine } from './serve-engine';

export interface HttpServerOptions {
  host: string;
  port: number;
  /** Requests to /v1 need `Authorization: Bearer <key>` when set. */
  apiKey?: string;
  /** The model id clients see and may name (vLLM's --served-model-name). */
  servedModelName: string;
  limits: RequestLimits;
  /** The most a request body may hold, in bytes. */
  maxBodyBytes: number;
  /** A request still unanswered after this long is ended (its row leaves the batch). */
  requestTimeoutMs: number;
  /** The time a client has to send its whole request. */
  bodyTimeoutMs: number;
  log: (line: string) => void;
}

interface Counts {
  requests: Map<number, number>;
  cancelled: number;
  timedOut: number;
  inFlight: number;
}

/** The HTTP server; `listen` starts it, `close` ends it and every response in flight. */
export class Blip2HttpServer {
  private readonly server: http.Server;
  private readonly keyHash?: Buffer;
  private readonly counts: Counts = { requests: new Map(), cancelled: 0, timedOut: 0, inFlight: 0 };
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(
    private readonly engine: ServeEngine,
    private readonly options: HttpServerOptions,
  ) {
    this.keyHash = options.apiKey ? sha256(options.apiKey) : undefined;
    this.server = http.createServer(
      // A client that sends its request too slowly gets 408 (Node checks the timeouts every connectionsCheckingInterval).
      { requestTimeout: options.bodyTimeoutMs, headersTimeout: Math.min(options.bodyTimeoutMs, 60_000), connectionsCheckingInterval: Math.min(1000, options.bodyTimeoutMs) },
      (req, res) => void this.handle(req, res),
    );
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    const path = (req.url ?? '/').split('?')[0];
    res.on('close', () => {
      const ms = Math.round(performance.now() - started);
      // Method, path, status and time: never a header (the key) nor a body (the user's images and questions).
      if (!res.writableFinished) {
        this.options.log(`${req.method} ${path} closed by the client after ${ms} ms`);
        return;
      }
      this.counts.requests.set(res.statusCode, (this.counts.requests.get(res.statusCode) ?? 0) + 1);
      this.options.log(`${req.method} ${path} ${res.statusCode} ${ms} ms`);
    });
    try {
      // As vLLM's AuthenticationMiddleware: every /v1 path needs the key; /health and /metrics do not.
      if (path.startsWith('/v1') && this.keyHash && !this.authorized(req.headers.authorization)) {
        req.resume();
        sendJson(res, 401, { error: 'Unauthorized' });
        return;
      }
      const route = `${req.method} ${path}`;
      switch (route) {
        case 'GET /health':
          res.writeHead(this.engine.healthy ? 200 : 503).end();
          return;
        case 'GET /metrics':
          res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(this.metrics());
          return;
        case 'GET /v1/models':
          sendJson(res, 200, this.models());
          return;
        case 'POST /v1/chat/completions':
          await this.chat(req, res);
          return;
      }
      req.resume();
      const known = ['/health', '/metrics', '/v1/models', '/v1/chat/completions'].includes(path);
      throw known ? new ApiError(405, 'Method Not Allowed', 'Method Not Allowed') : new ApiError(404, 'Not Found', 'Not Found');
    } catch (e) {
      this.fail(res, e);
    }
  }

  private authorized(header: string | undefined): boolean {
    if (!header) return false;
    const space = header.indexOf(' ');
    if (space < 0 || header.slice(0, space).toLowerCase() !== 'bearer') return false;
    // Compared as hashes, in constant time, as vLLM does: the key's length leaks nothing either.
    return crypto.timingSafeEqual(sha256(header.slice(space + 1)), this.keyHash!);
  }

  private models(): ModelList {
    const m = this.engine.model;
    return {
      object: 'list',
      data: [{ id: this.options.servedModelName, object: 'model', created: this.created, owned_by: BLIP2_SERVE_OWNER, root: m.source, parent: null, max_model_len: m.maxModelLen, permission: [] }],
    };
  }

  private async chat(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readBody(req, this.options.maxBodyBytes);
    let json: unknown;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch (e) {
      throw badRequest(`The request body is not valid JSON: ${(e as Error).message}.`);
    }
    const request = parseChatRequest(json, this.options.limits);
    if (request.model !== undefined && request.model !== this.options.servedModelName) {
      throw new ApiError(404, `The model \`${request.model}\` does not exist.`, 'NotFoundError', 'model');
    }
    const controller = new AbortController();
    const timer = setTimeout(() => {
      if (res.writableFinished) return;
      this.counts.timedOut++;
      const seconds = Math.round(this.options.requestTimeoutMs / 1000);
      controller.abort(new ApiError(503, `The request took longer than this server's limit of ${seconds} s; try again when it is less busy.`, 'TimeoutError'));
    }, this.options.requestTimeoutMs);
    // A client that goes away frees its place: its row ends at the next step, or it leaves the queue.
    const gone = () => {
      if (!res.writableFinished) controller.abort(CLIENT_GONE);
    };
    res.on('close', gone);
    this.counts.inFlight++;
    try {
      if (request.stream) await this.stream(request, res, controller.signal);
      else sendJson(res, 200, await this.complete(request, controller.signal));
    } catch (e) {
      const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
      if (reason === CLIENT_GONE) {
        this.counts.cancelled++;
        return;
      }
      throw reason instanceof ApiError ? reason : e;
    } finally {
      this.counts.inFlight--;
      clearTimeout(timer);
      res.off('close', gone);
    }
  }

  private async complete(request: ChatRequest, signal: AbortSignal): Promise<ChatCompletion> {
    const answer = await this.engine.answer(request.image, request.prompt, request.settings, { signal });
    const sequences = [answer, ...answer.alternatives].slice(0, request.n);
    return {
      id: completionId(),
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: this.options.servedModelName,
      choices: sequences.map((s, index) => ({ index, message: { role: 'assistant', content: s.text }, logprobs: null, finish_reason: finishReason(s.finishReason), stop_reason: null })),
      usage: usage(answer, sequences),
    };
  }

  /**
   * Server-sent events as vLLM's chat_completion_stream_generator sends them: a first chunk per choice with the
   * role (sent with the first token, so that a request that fails before it gets its status code), the text as it
   * grows, a last chunk per choice with its finish reason, the usage when asked for, and `data: [DONE]`; an error
   * after the first chunk is a `data: {"error": …}` event before `[DONE]`.
   */
  private async stream(request: ChatRequest, res: http.ServerResponse, signal: AbortSignal): Promise<void> {
    const id = completionId();
    const created = Math.floor(Date.now() / 1000);
    const model = this.options.servedModelName;
    const chunk = (choices: ChatCompletionChunk['choices'], extra: Partial<ChatCompletionChunk> = {}) =>
      res.write(`data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, choices, ...extra } satisfies ChatCompletionChunk)}\n\n`);
    const sent = new Array<string>(request.n).fill('');
    const beams = (request.settings.numBeams ?? 1) > 1;
    const holdBack = Math.max(0, ...(request.settings.stop ?? []).map((s) => s.length - 1));
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
      for (let index = 0; index < request.n; index++) chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
    };
    // What is new in the text, less a possible start of a stop string and an unfinished UTF-8 character.
    const delta = (index: number, text: string, final: boolean): string => {
      let upTo = final ? text.length : Math.max(0, text.length - holdBack);
      if (!final && text.endsWith('\uFFFD')) upTo = Math.min(upTo, text.length - 1);
      const visible = text.slice(0, upTo);
      if (!visible.startsWith(sent[index]) || visible.length <= sent[index].length) return '';
      const add = visible.slice(sent[index].length);
      sent[index] = visible;
      return add;
    };
    try {
      const answer = await this.engine.answer(request.image, request.prompt, request.settings, {
        signal,
        // Beam search's best beam changes until it ends: its text is sent once, when it is final.
        onToken: beams
          ? undefined
          : (text, sequence) => {
              start();
              const add = sequence < request.n ? delta(sequence, text, false) : '';
              if (add) chunk([{ index: sequence, delta: { content: add }, logprobs: null, finish_reason: null }]);
            },
      });
      start();
      const sequences = [answer, ...answer.alternatives].slice(0, request.n);
      sequences.forEach((s, index) => {
        const add = delta(index, s.text, true);
        chunk([{ index, delta: add ? { content: add } : {}, logprobs: null, finish_reason: finishReason(s.finishReason) }]);
      });
      if (request.includeUsage) chunk([], { usage: usage(answer, sequences) });
      res.end('data: [DONE]\n\n');
    } catch (e) {
      // Before the first chunk the error is the response's status and body; after it, an event in the stream.
      const reason: unknown = signal.aborted ? signal.reason : undefined;
      if (!started || reason === CLIENT_GONE) throw e;
      const error = reason instanceof ApiError ? reason : toApiError(e, this.options.log);
      res.end(`data: ${JSON.stringify(error.body())}\n\ndata: [DONE]\n\n`);
    }
  }

  private fail(res: http.ServerResponse, e: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const error = toApiError(e, this.options.log);
    sendJson(res, error.status, error.body());
  }

  private metrics(): string {
    const c = this.engine.counters;
    const lines = [
      '# HELP blip2_requests_total HTTP requests answered, by status.',
      '# TYPE blip2_requests_total counter',
      ...[...this.counts.requests].map(([status, n]) => `blip2_requests_total{status="${status}"} ${n}`),
      `blip2_requests_in_flight ${this.counts.inFlight}`,
      `blip2_requests_cancelled_total ${this.counts.cancelled}`,
      `blip2_requests_timed_out_total ${this.counts.timedOut}`,
      `blip2_queue_runs ${this.engine.queued}`,
      `blip2_vision_runs_total ${c.visionRuns}`,
      `blip2_vision_cache_hits_total ${this.engine.visionCacheHits}`,
      `blip2_generations_total ${c.generations}`,
      `blip2_batches_total ${c.batches}`,
      `blip2_tokens_generated_total ${c.tokensGenerated}`,
      `blip2_generations_cancelled_total ${c.cancelledGenerations}`,
      `process_resident_memory_bytes ${process.memoryUsage().rss}`,
    ];
    return lines.join('\n') + '\n';
  }
}

/** The abort reason of a request whose client closed the connection. */
const CLIENT_GONE = 'client gone';

/** The body, refused with 413 past `max` bytes (at once when Content-Length says so). */
function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  const tooLarge = () => new ApiError(413, `The request body is larger than this server's limit of ${Math.floor(max / (1024 * 1024))} MB.`, 'RequestEntityTooLarge');
  if (Number.isFinite(declared) && declared > max) {
    // Not read: the connection closes after the answer instead of receiving what is left.
    req.socket.setTimeout(5000, () => req.socket.destroy());
    return Promise.reject(tooLarge());
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
    req.on('aborted', () => reject(new ApiError(400, 'The client closed the connection before sending the whole request.')));
  });
}

function toApiError(e: unknown, log: (line: string) => void): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof QueueFullError) return new ApiError(429, e.line, 'TooManyRequests');
  if (e instanceof UserError) return badRequest(e.line);
  if (isCancelled(e)) return new ApiError(503, 'The request was cancelled: the server is shutting down.', 'ServiceUnavailableError');
  log(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  const crashed = typeof e === 'object' && e !== null && (e as { crashed?: boolean }).crashed === true;
  return new ApiError(crashed ? 503 : 500, crashed ? 'The model stopped while answering; it is loading again. Try again shortly.' : 'Internal server error.', crashed ? 'ServiceUnavailableError' : 'InternalServerError');
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) }).end(text);
}

function finishReason(reason: Answer['finishReason']): FinishReason {
  return reason === 'length' ? 'length' : 'stop';
}

function usage(answer: Answer, sequences: readonly { tokenIds: number[]; finishReason: Answer['finishReason'] }[]): Usage {
  // The end token is the model's, not the answer's text; vLLM counts it (its stop reason is a token it generated).
  const completion = sequences.reduce((sum, s) => sum + s.tokenIds.length, 0);
  return { prompt_tokens: answer.promptTokens, completion_tokens: completion, total_tokens: answer.promptTokens + completion };
}

function completionId(): string {
  return `chatcmpl-${crypto.randomUUID().replace(/-/g, '')}`;
}

function sha256(text: string): Buffer {
  return crypto.createHash('sha256').update(text, 'utf8').digest();
}
