// The client of a BLIP-2 server against a loopback replay of what vLLM answers, shape for shape as its source
// writes them (vllm/entrypoints/openai/chat_completion/serving.py: chat_completion_stream_generator;
// engine/serving.py: create_error_response, create_streaming_error_response; server_utils.py:
// AuthenticationMiddleware; engine/protocol.py: ErrorResponse, ModelList; the pre-v0.10.1 {"object": "error"}):
// what it sends, what it makes of each answer, and one sentence for each way it fails.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CancellationTokenSource } from 'vscode-languageserver';
import { answerText, beforeRepeatedNgram, chatRequestFor, OPT_NEWLINE_TOKEN } from '../../server/src/inference/remote/chat-request';
import { OpenAiChatClient, RemoteServerError } from '../../server/src/inference/remote/openai-client';
import { createInferenceService } from '../../server/src/inference/service';
import { chatPrompt } from '../../server/src/engine/preprocess/prompts';
import { DEFAULT_SETTINGS, type Blip2Settings } from '../../server/src/protocol/settings';
import { referenceDir } from '../helpers/paths';

const KEY = 'replay-key-51e0';
const never = new CancellationTokenSource().token;
const catFile = path.join(referenceDir, 'images', 'cat.png');

type Handler = (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void;

/** A loopback server whose answer each test sets; it records every request. */
class Replay {
  handler: Handler = (_req, _body, res) => res.writeHead(500).end();
  readonly requests: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[] = [];
  private readonly server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      this.requests.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      this.handler(req, body, res);
    });
  });
  url = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const MODELS = { object: 'list', data: [{ id: 'Salesforce/blip2-opt-2.7b', object: 'model', created: 1, owned_by: 'vllm', root: 'Salesforce/blip2-opt-2.7b', parent: null, max_model_len: 2048, permission: [] }] };

/** A stream as vLLM sends it: the role chunk, the text in pieces, the finish chunk, the usage chunk, [DONE]. */
function vllmStream(pieces: string[], finish = 'stop', tail = 'data: [DONE]\n\n'): string {
  const base = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'Salesforce/blip2-opt-2.7b' };
  const events = [
    { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] },
    ...pieces.map((content) => ({ ...base, choices: [{ index: 0, delta: { content }, logprobs: null, finish_reason: null }] })),
    { ...base, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finish, stop_reason: null }] },
    { ...base, choices: [], usage: { prompt_tokens: 33, total_tokens: 40, completion_tokens: 7 } },
  ];
  return events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('') + tail;
}

const sse = (res: http.ServerResponse, text: string) => res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8' }).end(text);
const json = (res: http.ServerResponse, status: number, body: unknown) => res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));

describe('the BLIP-2 server client against vLLM\'s answers', () => {
  const replay = new Replay();
  let client: OpenAiChatClient;
  const request = () => chatRequestFor('data:image/png;base64,AAAA', { caption: '' }, { maxNewTokens: 20 }, 'Salesforce/blip2-opt-2.7b');
  const failure = async (work: Promise<unknown>): Promise<RemoteServerError> => {
    try {
      await work;
    } catch (e) {
      assert.ok(e instanceof RemoteServerError, String(e));
      return e;
    }
    assert.fail('no failure');
  };

  before(async () => {
    await replay.start();
    client = new OpenAiChatClient({ baseUrl: replay.url, apiKey: KEY, timeoutMs: 1000 });
  });
  after(() => replay.close());

  it('reads a stream: the role chunk, the pieces, the finish reason; the usage chunk and [DONE] end it', async () => {
    replay.handler = (_req, _body, res) => sse(res, vllmStream(['a cat', ' sitting', ' on a', ' sofa']));
    const seen: string[] = [];
    const completion = await client.complete(request(), { onText: (i, text) => seen.push(`${i}:${text}`) });
    assert.deepEqual(completion.choices, [{ text: 'a cat sitting on a sofa', finishReason: 'stop' }]);
    assert.deepEqual(seen, ['0:a cat', '0:a cat sitting', '0:a cat sitting on a', '0:a cat sitting on a sofa']);
    const sent = replay.requests.at(-1)!;
    assert.equal(sent.url, '/v1/chat/completions');
    assert.equal(sent.headers.authorization, `Bearer ${KEY}`);
  });

  it('reads n choices of a beam search, as vLLM indexes them', async () => {
    const base = { id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm' };
    const events = [0, 1, 2].flatMap((index) => [
      { ...base, choices: [{ index, delta: { role: 'assistant', content: '' }, finish_reason: null }] },
      { ...base, choices: [{ index, delta: { content: `beam ${index}` }, finish_reason: 'length' }] },
    ]);
    replay.handler = (_req, _body, res) => sse(res, events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('') + 'data: [DONE]\n\n');
    const completion = await client.complete(request());
    assert.deepEqual(completion.choices.map((c) => c.text), ['beam 0', 'beam 1', 'beam 2']);
  });

  it('makes each error shape one sentence that names the server and says what it said', async () => {
    const cases: [number, unknown, RegExp, string][] = [
      [400, { error: { message: "'max_tokens' is too large: 3000.", type: 'BadRequestError', param: 'max_tokens', code: 400 } }, /refused the request \(400\): 'max_tokens' is too large: 3000\.$/, 'refused'],
      [400, { object: 'error', message: 'At most 1 image(s) may be provided in one request.', type: 'BadRequestError', param: null, code: 400 }, /refused the request \(400\): At most 1 image\(s\) may be provided in one request\.$/, 'refused'],
      [401, { error: 'Unauthorized' }, /refused the API key \(401, Unauthorized\)\.$/, 'unauthorized'],
      [404, { error: { message: 'The model `x` does not exist.', type: 'NotFoundError', param: 'model', code: 404 } }, /refused the request \(404\): The model `x` does not exist\.$/, 'refused'],
      [429, { error: { message: 'Too many requests', type: 'TooManyRequests', param: null, code: 429 } }, /is busy \(429\): Too many requests\.$/, 'busy'],
      [500, { error: { message: 'Internal server error', type: 'InternalServerError', param: null, code: 500 } }, /failed \(500\): Internal server error\.$/, 'server'],
      [503, '<html>Service Unavailable</html>', /failed \(503\): <html>Service Unavailable<\/html>\.$/, 'server'],
    ];
    for (const [status, body, message, kind] of cases) {
      replay.handler = (_req, _body, res) => (typeof body === 'string' ? res.writeHead(status, { 'Content-Type': 'text/html' }).end(body) : json(res, status, body));
      const e = await failure(client.complete(request()));
      assert.match(e.message, new RegExp(`^The BLIP-2 server at ${replay.url.replace(/\./g, '\\.')} `));
      assert.match(e.message, message, JSON.stringify(body));
      assert.equal(e.failure, kind);
    }
  });

  it('makes an error in the middle of a stream a failure, not half an answer', async () => {
    const streamError = { error: { message: 'Internal server error', type: 'InternalServerError', param: null, code: 500 } };
    replay.handler = (_req, _body, res) => sse(res, vllmStream(['a cat']).split('data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"Salesforce/blip2-opt-2.7b","choices":[{"index":0,"delta":{},')[0] + `data: ${JSON.stringify(streamError)}\n\ndata: [DONE]\n\n`);
    const e = await failure(client.complete(request()));
    assert.match(e.message, /failed \(500\): Internal server error\.$/);
  });

  it('a stream that ends without [DONE], a page that is not an event stream: the server does not speak the protocol', async () => {
    replay.handler = (_req, _body, res) => sse(res, vllmStream(['a cat'], 'stop', ''));
    assert.match((await failure(client.complete(request()))).message, /ended the answer before data: \[DONE\]\.$/);
    replay.handler = (_req, _body, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end('<html>hello</html>');
    assert.match((await failure(client.complete(request()))).message, /not an event stream\.$/);
  });

  it('never puts the key in a sentence, even when the server echoes it', async () => {
    replay.handler = (req, _body, res) => json(res, 400, { error: { message: `bad header ${req.headers.authorization}`, type: 'BadRequestError', param: null, code: 400 } });
    const e = await failure(client.complete(request()));
    assert.ok(!e.message.includes(KEY), e.message);
    assert.match(e.message, /bad header Bearer \[the API key\]/);
  });

  it('follows no redirect: the image goes to the address set and nowhere else', async () => {
    const elsewhere = new Replay();
    await elsewhere.start();
    try {
      replay.handler = (_req, _body, res) => res.writeHead(307, { Location: `${elsewhere.url}/v1/chat/completions` }).end();
      const e = await failure(client.complete(request()));
      assert.match(e.message, /redirects elsewhere \(307\)/);
      assert.deepEqual(elsewhere.requests, []);
    } finally {
      await elsewhere.close();
    }
  });

  it('a server that does not answer in time, one that is not there', async () => {
    replay.handler = () => undefined;
    assert.equal((await failure(client.complete(request()))).failure, 'timeout');
    const gone = new OpenAiChatClient({ baseUrl: 'http://127.0.0.1:9', timeoutMs: 5000 });
    const e = await failure(gone.blip2Model());
    assert.equal(e.message, 'The BLIP-2 server at http://127.0.0.1:9 cannot be reached (nothing listens there).');
  });

  it('finds the BLIP-2 model among the served ones, by its id or its root, and says when there is none', async () => {
    replay.handler = (_req, _body, res) => json(res, 200, { object: 'list', data: [{ id: 'llava', object: 'model', owned_by: 'vllm' }, { id: 'captioner', object: 'model', owned_by: 'vllm', root: '/models/blip2-opt-2.7b' }] });
    assert.equal((await client.blip2Model()).id, 'captioner');
    replay.handler = (_req, _body, res) => json(res, 200, { object: 'list', data: [{ id: 'meta-llama/Llama-3-8B', object: 'model', owned_by: 'vllm' }] });
    const e = await failure(client.blip2Model());
    assert.equal(e.message, `The server at ${replay.url} serves meta-llama/Llama-3-8B, not BLIP-2.`);
    assert.equal(e.failure, 'notBlip2');
  });
});

describe('what the client sends a server, and makes of its text', () => {
  it("asks for a caption as vLLM's chat template (deploy/vllm) and transformers want it", () => {
    const r = chatRequestFor('data:image/png;base64,AAAA', { caption: '' }, { maxNewTokens: 20, noRepeatNgramSize: 3 }, 'Salesforce/blip2-opt-2.7b');
    assert.deepEqual(r.messages, [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] }]);
    // BOS first, as transformers' processor puts it; greedy, as transformers' default; "\n" ends it.
    assert.equal(r.add_special_tokens, true);
    assert.equal(r.temperature, 0);
    assert.deepEqual(r.stop_token_ids, [OPT_NEWLINE_TOKEN]);
    assert.equal(r.max_completion_tokens, 20);
    assert.equal(r.no_repeat_ngram_size, 3);
    assert.equal(r.stream, true);
    assert.equal(r.model, 'Salesforce/blip2-opt-2.7b');
  });

  it('a caption prompt is an assistant message to continue; a chat is its turns, answers as the engine prompts them', () => {
    const c = chatRequestFor('data:x', { caption: 'a photo of' }, { maxNewTokens: 5 }, 'm');
    assert.deepEqual(c.messages[1], { role: 'assistant', content: 'a photo of' });
    assert.equal(c.add_generation_prompt, false);
    assert.equal(c.continue_final_message, true);
    const q = chatRequestFor('data:x', { question: ' what colour? ', history: [{ question: 'what is it?', answer: 'a cat' }] }, { maxNewTokens: 5, numBeams: 3 }, 'm');
    assert.deepEqual(q.messages.slice(1), [{ role: 'assistant', content: 'a cat.' }, { role: 'user', content: 'what colour?' }]);
    assert.deepEqual(q.messages[0].content, [{ type: 'image_url', image_url: { url: 'data:x' } }, { type: 'text', text: 'what is it?' }]);
    assert.equal(q.use_beam_search, true);
    assert.equal(q.n, 3);
    assert.equal(q.temperature, undefined, 'beam search is not sampled');
    // What vLLM's template renders from these turns is what the engine prompts with.
    assert.equal(`Question: what is it? Answer: a cat. Question: what colour? Answer:`, chatPrompt([{ question: 'what is it?', answer: 'a cat' }], 'what colour?'));
  });

  it('keeps the text up to the first newline, and cuts a repeated n-gram where the server could not block it', () => {
    assert.equal(answerText(' a cat on a sofa\nQuestion: what', 3, true), 'a cat on a sofa');
    assert.equal(answerText('a cat and a dog and a cat and a dog', 3, false), 'a cat and a dog and a cat');
    assert.equal(answerText('a cat and a dog and a cat and a dog', 3, true), 'a cat and a dog and a cat and a dog');
    assert.equal(beforeRepeatedNgram('one two three', 2), 'one two three');
  });
});

describe('the service with a server (replayed)', () => {
  const replay = new Replay();
  const other = new Replay();
  let root: string;
  const settings = (url: string): Blip2Settings => ({ ...DEFAULT_SETTINGS, server: { url }, generation: { ...DEFAULT_SETTINGS.generation, numBeams: 1, alternatives: 0 } });

  before(async () => {
    await replay.start();
    await other.start();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-remote-svc-'));
    for (const r of [replay, other]) {
      r.handler = (req, _body, res) => (req.url === '/v1/models' ? json(res, 200, MODELS) : sse(res, vllmStream([r === replay ? 'a cat on a sofa' : 'a dog'])));
    }
  });
  after(async () => {
    await replay.close();
    await other.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('sends the image itself, once per request, and caches the answer under the server', async () => {
    const cacheDir = path.join(root, 'cache');
    const svc = createInferenceService({ settings: settings(replay.url), cacheDir });
    try {
      const result = await svc.caption({ kind: 'file', path: catFile }, { priority: 'interactive' }, never);
      assert.equal(result.text, 'a cat on a sofa');
      assert.equal(result.model, 'Salesforce/blip2-opt-2.7b');
      const posts = replay.requests.filter((r) => r.method === 'POST');
      assert.equal(posts.length, 1);
      const sent = JSON.parse(posts[0].body);
      const url: string = sent.messages[0].content[0].image_url.url;
      assert.ok(url.startsWith('data:image/png;base64,'));
      assert.deepEqual(Buffer.from(url.slice(url.indexOf(',') + 1), 'base64'), fs.readFileSync(catFile));
      // vLLM has no no_repeat_ngram_size: sent all the same (blip2 serve reads it), and applied here to vLLM's text.
      assert.equal(sent.no_repeat_ngram_size, 3);
      assert.equal((await svc.caption({ kind: 'file', path: catFile }, { priority: 'interactive' }, never)).cached, true);
      assert.equal(replay.requests.filter((r) => r.method === 'POST').length, 1);
      assert.equal(svc.status().server, replay.url);
      assert.equal(svc.status().state, 'ready');
    } finally {
      await svc.dispose();
    }
    // Another server's answer for the same image is its own: the cache keeps them apart.
    const second = createInferenceService({ settings: settings(other.url), cacheDir });
    try {
      assert.equal((await second.caption({ kind: 'file', path: catFile }, { priority: 'interactive' }, never)).text, 'a dog');
    } finally {
      await second.dispose();
    }
  });

  it('switches between the model here and a server when the setting changes', async () => {
    const svc = createInferenceService({ settings: { ...DEFAULT_SETTINGS, model: '/nonexistent/model', offline: true } });
    try {
      assert.equal(svc.status().server, undefined);
      svc.updateSettings(settings(replay.url));
      assert.equal(svc.status().server, replay.url);
      assert.equal((await svc.caption({ kind: 'file', path: catFile }, { priority: 'interactive' }, never)).text, 'a cat on a sofa');
      svc.updateSettings({ ...DEFAULT_SETTINGS, model: '/nonexistent/model', offline: true });
      assert.equal(svc.status().server, undefined);
    } finally {
      await svc.dispose();
    }
  });
});
