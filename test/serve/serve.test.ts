// blip2 serve in this process (its HTTP server and its model in a worker thread, the tiny fixture at fp32): the
// answers are the engine's, the wire format is vLLM's, and hostile requests get an error, not a crash.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Template } from '@huggingface/jinja';
import { openModel, type OpenedModel } from '../../server/src/engine/open-model';
import type { GenerationSettings } from '../../server/src/engine/pipeline';
import { chatPrompt } from '../../server/src/engine/preprocess/prompts';
import { promptOf } from '../../server/src/serve/chat-request';
import { Blip2HttpServer, type HttpServerOptions } from '../../server/src/serve/http-server';
import { ServeEngine } from '../../server/src/serve/serve-engine';
import { httpRequest, postJson, sseData } from '../helpers/http';
import { referenceDir, repoRoot, tinyCheckpointDir } from '../helpers/paths';

const imageFile = (name: string) => path.join(referenceDir, 'images', name);
const dataUrl = (name: string) => `data:image/${name.endsWith('.jpg') ? 'jpeg' : 'png'};base64,${fs.readFileSync(imageFile(name)).toString('base64')}`;
const imagePart = (name: string) => ({ type: 'image_url', image_url: { url: dataUrl(name) } });
const KEY = 'test-key-5f2b91';

interface Served {
  url: string;
  server: Blip2HttpServer;
  engine: ServeEngine;
  logs: string[];
}

async function serve(store: string, options: Partial<HttpServerOptions> = {}, engineOptions: { maxQueued?: number } = {}): Promise<Served> {
  const logs: string[] = [];
  const log = (line: string) => logs.push(line);
  const engine = await ServeEngine.open({
    settings: { model: tinyCheckpointDir, precision: 'fp32', device: 'cpu', threads: 1, store, offline: true, keepSource: false, repair: false },
    maxBatch: 8,
    maxQueued: engineOptions.maxQueued ?? 64,
    log,
  });
  const server = new Blip2HttpServer(engine, {
    host: '127.0.0.1',
    port: 0,
    servedModelName: 'Salesforce/blip2-opt-2.7b',
    limits: { maxImageBytes: 8 * 1024 * 1024, maxNewTokens: 64, defaultMaxTokens: 20 },
    maxBodyBytes: 12 * 1024 * 1024,
    requestTimeoutMs: 60_000,
    bodyTimeoutMs: 60_000,
    log,
    ...options,
  });
  const address = await server.listen();
  return { url: `http://127.0.0.1:${address.port}`, server, engine, logs };
}

async function stop(s: Served | undefined): Promise<void> {
  await s?.server.close();
  await s?.engine.dispose();
}

describe('blip2 serve', () => {
  let root: string;
  let local: OpenedModel;
  let s: Served;
  const chat = (body: Record<string, unknown>, headers: Record<string, string> = {}) => postJson(`${s.url}/v1/chat/completions`, body, { Authorization: `Bearer ${KEY}`, ...headers });

  /** What the engine answers itself for an image, a prompt and settings. */
  async function engineTexts(image: string, prompt: string, settings: GenerationSettings): Promise<string[]> {
    const [encoded] = await local.pipeline.encodeImages([imageFile(image)]);
    const { answers } = await local.pipeline.generate([{ image: encoded, prompt }], settings);
    return [answers[0].text, ...answers[0].alternatives.map((a) => a.text)];
  }

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-serve-'));
    local = await openModel({ model: tinyCheckpointDir, precision: 'fp32', device: 'cpu', threads: 1, store: path.join(root, 'local'), offline: true });
    s = await serve(path.join(root, 'store'), { apiKey: KEY });
  });
  after(async () => {
    await stop(s);
    await local?.pipeline.dispose();
    fs.rmSync(root, { recursive: true, force: true });
  });

  describe('answers as the engine does', () => {
    it('captions an image alone: the engine with its generation config (greedy, 20 tokens, no n-gram blocking)', async () => {
      const res = await chat({ model: 'Salesforce/blip2-opt-2.7b', messages: [{ role: 'user', content: [imagePart('cat.png')] }] });
      assert.equal(res.status, 200, res.text);
      const body = JSON.parse(res.text);
      assert.equal(body.object, 'chat.completion');
      assert.match(body.id, /^chatcmpl-/);
      assert.equal(body.model, 'Salesforce/blip2-opt-2.7b');
      assert.deepEqual(body.choices.map((c: { message: { content: string } }) => c.message.content), await engineTexts('cat.png', '', { maxNewTokens: 20 }));
      assert.equal(body.choices[0].message.role, 'assistant');
      assert.equal(body.choices[0].finish_reason, 'length');
      // The prompt is the image's 8 query tokens and BOS; 20 new tokens.
      assert.deepEqual(body.usage, { prompt_tokens: 9, completion_tokens: 20, total_tokens: 29 });
    });

    it('continues a caption prompt given as a final assistant message, as the shipped chat template renders it', async () => {
      const res = await chat({
        messages: [{ role: 'user', content: [imagePart('rocket.jpg')] }, { role: 'assistant', content: 'a photo of' }],
        add_generation_prompt: false,
        continue_final_message: true,
        max_completion_tokens: 12,
      });
      assert.equal(JSON.parse(res.text).choices[0].message.content, (await engineTexts('rocket.jpg', 'a photo of', { maxNewTokens: 12 }))[0]);
    });

    it('answers a question with the earlier turns of a chat, and ignores fields it does not know', async () => {
      const res = await chat({
        messages: [
          { role: 'system', content: 'You are helpful.' },
          { role: 'user', content: [imagePart('astronaut.png'), { type: 'text', text: 'what is in the picture?' }] },
          { role: 'assistant', content: 'a man in a suit.' },
          { role: 'user', content: 'what color is it?' },
        ],
        max_tokens: 10,
        frequency_penalty: 0,
        logprobs: false,
        user: 'someone',
      });
      assert.equal(res.status, 200, res.text);
      const prompt = chatPrompt([{ question: 'what is in the picture?', answer: 'a man in a suit.' }], 'what color is it?');
      assert.equal(JSON.parse(res.text).choices[0].message.content, (await engineTexts('astronaut.png', prompt, { maxNewTokens: 10 }))[0]);
    });

    it('beam search (use_beam_search, n beams kept), penalties, min_tokens and n-gram blocking', async () => {
      const res = await chat({
        messages: [{ role: 'user', content: [imagePart('coffee.png')] }],
        use_beam_search: true,
        n: 3,
        length_penalty: 1.5,
        max_completion_tokens: 10,
        min_tokens: 4,
        repetition_penalty: 1.3,
        no_repeat_ngram_size: 2,
      });
      const texts = JSON.parse(res.text).choices.map((c: { message: { content: string } }) => c.message.content);
      assert.deepEqual(texts, await engineTexts('coffee.png', '', { maxNewTokens: 10, minNewTokens: 4, numBeams: 3, numReturnSequences: 3, lengthPenalty: 1.5, repetitionPenalty: 1.3, noRepeatNgramSize: 2 }));
    });

    it('samples reproducibly with a seed, n samples per request', async () => {
      const body = { messages: [{ role: 'user', content: [imagePart('horse-rgba.png')] }], temperature: 0.9, top_p: 0.95, top_k: 20, seed: 11, n: 2, max_tokens: 8 };
      const [a, b] = await Promise.all([chat(body), chat(body)]);
      const texts = (r: { text: string }) => (assert.equal((r as { status?: number }).status, 200, r.text), JSON.parse(r.text)).choices.map((c: { message: { content: string } }) => c.message.content);
      assert.deepEqual(texts(a), texts(b));
      assert.deepEqual(texts(a), await engineTexts('horse-rgba.png', '', { maxNewTokens: 8, temperature: 0.9, topP: 0.95, topK: 20, seed: 11, numReturnSequences: 2 }));
    });

    it('stops at a stop string and leaves it out, finish_reason "stop"', async () => {
      const [full] = await engineTexts('cat.png', '', { maxNewTokens: 20 });
      const stop = full.slice(4, 6);
      const res = await chat({ messages: [{ role: 'user', content: [imagePart('cat.png')] }], stop });
      const choice = JSON.parse(res.text).choices[0];
      assert.equal(choice.message.content, full.slice(0, full.indexOf(stop)).trim());
      assert.equal(choice.finish_reason, 'stop');
    });

    it('streams as vLLM does: a role chunk, the text in pieces, the finish reason, the usage, then [DONE]', async () => {
      const res = await chat({ messages: [{ role: 'user', content: [imagePart('camera-gray.png'), { type: 'text', text: 'what is this?' }] }], stream: true, stream_options: { include_usage: true }, max_tokens: 12 });
      assert.equal(res.status, 200);
      assert.match(String(res.headers['content-type']), /^text\/event-stream/);
      const events = sseData(res.text) as { object: string; id: string; choices: { index: number; delta: { role?: string; content?: string }; finish_reason: string | null }[]; usage?: { prompt_tokens: number; completion_tokens: number } }[];
      assert.equal(events.at(-1), '[DONE]');
      const chunks = events.slice(0, -1);
      assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
      assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
      const usage = chunks.at(-1)!;
      assert.deepEqual(usage.choices, []);
      const content = chunks.slice(1, -1).map((c) => c.choices[0].delta.content ?? '').join('');
      const [expected] = await engineTexts('camera-gray.png', 'Question: what is this? Answer:', { maxNewTokens: 12 });
      assert.equal(content, expected);
      assert.ok(chunks.length - 3 > 1, 'the text came in more than one piece');
      assert.equal(chunks.at(-2)!.choices[0].finish_reason, 'length');
      assert.equal(usage.usage!.completion_tokens, 12);
      assert.equal(usage.usage!.prompt_tokens, 8 + 1 + local.pipeline.model.tokenizer.encode('Question: what is this? Answer:').length);
    });

    it('decodes concurrent requests for distinct images together, each answered as alone', async () => {
      const images = ['astronaut.png', 'cat.png', 'coffee.png', 'rocket.jpg', 'wide-alpha.png', 'noise-palette.gif'];
      const before = (await metrics(s.url)).blip2_batches_total;
      const results = await Promise.all(images.map((image) => chat({ messages: [{ role: 'user', content: [imagePart(image)] }], max_tokens: 15, no_repeat_ngram_size: 3 })));
      for (let i = 0; i < images.length; i++) {
        assert.equal(JSON.parse(results[i].text).choices[0].message.content, (await engineTexts(images[i], '', { maxNewTokens: 15, noRepeatNgramSize: 3 }))[0], images[i]);
      }
      const batches = (await metrics(s.url)).blip2_batches_total - before;
      assert.ok(batches < images.length, `${batches} batches for ${images.length} requests`);
    });

    it("renders every message as the chat template shipped for vLLM does (deploy/vllm), so both servers see one prompt", () => {
      const template = new Template(fs.readFileSync(path.join(repoRoot, 'deploy', 'vllm', 'blip2-chat-template.jinja'), 'utf8'));
      // vLLM hands the template each message's text parts joined (images leave no text): strings here.
      const cases: { messages: { role: string; content: string }[]; add_generation_prompt: boolean; expected: string }[] = [
        { messages: [{ role: 'user', content: '' }], add_generation_prompt: true, expected: '' },
        { messages: [{ role: 'user', content: '' }, { role: 'assistant', content: 'a photo of' }], add_generation_prompt: false, expected: 'a photo of' },
        { messages: [{ role: 'user', content: 'what is it?' }], add_generation_prompt: true, expected: chatPrompt([], 'what is it?') },
        {
          messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'what is it?' }, { role: 'assistant', content: 'a cat.' }, { role: 'user', content: 'what colour?' }],
          add_generation_prompt: true,
          expected: chatPrompt([{ question: 'what is it?', answer: 'a cat.' }], 'what colour?'),
        },
      ];
      for (const c of cases) {
        const rendered = template.render({ messages: c.messages, add_generation_prompt: c.add_generation_prompt });
        assert.equal(rendered, c.expected, JSON.stringify(c.messages));
        const spec = promptOf(c.messages.filter((m) => m.role !== 'system').map((m) => ({ role: m.role as 'user' | 'assistant', text: m.content })), c.add_generation_prompt);
        const ours = 'text' in spec ? spec.text : chatPrompt(spec.history, spec.question);
        assert.equal(ours, rendered, JSON.stringify(c.messages));
      }
    });
  });

  describe('the rest of the API', () => {
    it('lists the model as vLLM does, owned by blip2', async () => {
      const res = await httpRequest(`${s.url}/v1/models`, { headers: { Authorization: `Bearer ${KEY}` } });
      const list = JSON.parse(res.text);
      assert.equal(list.object, 'list');
      assert.deepEqual(
        { id: list.data[0].id, object: list.data[0].object, owned_by: list.data[0].owned_by, root: list.data[0].root, max_model_len: list.data[0].max_model_len },
        { id: 'Salesforce/blip2-opt-2.7b', object: 'model', owned_by: 'blip2', root: tinyCheckpointDir, max_model_len: 128 },
      );
    });

    it('answers /health without the key (as vLLM, only /v1 needs it)', async () => {
      const res = await httpRequest(`${s.url}/health`);
      assert.equal(res.status, 200);
    });

    it('refuses a missing or wrong key with 401 and vLLM\'s {"error": "Unauthorized"}, and logs no key', async () => {
      const body = { messages: [{ role: 'user', content: [imagePart('cat.png')] }] };
      for (const headers of [{} as Record<string, string>, { Authorization: 'Bearer wrong-key' }, { Authorization: `Basic ${KEY}` }, { Authorization: KEY }]) {
        const res = await postJson(`${s.url}/v1/chat/completions`, body, headers);
        assert.equal(res.status, 401, JSON.stringify(headers));
        assert.deepEqual(JSON.parse(res.text), { error: 'Unauthorized' });
      }
      assert.equal((await httpRequest(`${s.url}/v1/models`)).status, 401);
      assert.ok(s.logs.length > 0 && s.logs.every((l) => !l.includes(KEY) && !l.includes('wrong-key')), s.logs.join('\n'));
    });

    it('names the model it does not serve with 404 NotFoundError, as vLLM does', async () => {
      const res = await chat({ model: 'gpt-4o', messages: [{ role: 'user', content: [imagePart('cat.png')] }] });
      assert.equal(res.status, 404);
      assert.deepEqual(JSON.parse(res.text), { error: { message: 'The model `gpt-4o` does not exist.', type: 'NotFoundError', param: 'model', code: 404 } });
    });
  });

  describe('hostile requests', () => {
    const expectError = (res: { status: number; text: string }, status: number, message: RegExp, param?: string) => {
      assert.equal(res.status, status, res.text);
      const body = JSON.parse(res.text);
      assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
      assert.equal(body.error.code, status);
      assert.match(body.error.message, message);
      if (param) assert.equal(body.error.param, param);
    };

    it('bad JSON: 400', async () => {
      const res = await httpRequest(`${s.url}/v1/chat/completions`, { body: '{"messages": [', headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' } });
      expectError(res, 400, /^The request body is not valid JSON/);
    });

    it('a field of the wrong type or out of range: 400 naming it', async () => {
      expectError(await chat({ messages: 'hello' }), 400, /^messages: /, 'messages');
      expectError(await chat({ messages: [{ role: 'user', content: [imagePart('cat.png')] }], max_tokens: 0 }), 400, /^max_tokens: /, 'max_tokens');
      expectError(await chat({ messages: [{ role: 'user', content: [imagePart('cat.png')] }], max_completion_tokens: 1000 }), 400, /more than this server's limit of 64/, 'max_completion_tokens');
      expectError(await chat({ messages: [{ role: 'user', content: [imagePart('cat.png')] }], n: 2 }), 400, /^n > 1 needs sampling/, 'n');
    });

    it('a 100 MB body: 413 before it is read', async () => {
      const res = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json', 'Content-Length': String(100 * 1024 * 1024) } }, (r) => {
          let text = '';
          r.on('data', (d) => (text += d));
          r.on('end', () => resolve({ status: r.statusCode!, text }));
        });
        req.on('error', reject);
        req.write(Buffer.alloc(64 * 1024, 32));
      });
      expectError(res, 413, /larger than this server's limit of 12 MB/);
      // And one that does not say its length up front (chunked), cut off once past the limit.
      const chunked = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { Authorization: `Bearer ${KEY}`, 'Content-Type': 'application/json' } }, (r) => {
          let text = '';
          r.on('data', (d) => (text += d));
          r.on('end', () => resolve({ status: r.statusCode!, text }));
        });
        req.on('error', () => undefined);
        const piece = Buffer.alloc(1024 * 1024, 32);
        let sent = 0;
        const write = () => {
          while (sent < 100 && req.write(piece)) sent++;
          if (sent < 100) req.once('drain', write);
          else req.end();
        };
        write();
      }).catch((e) => ({ status: 0, text: String(e) }));
      expectError(chunked, 413, /larger than this server's limit/);
      assert.equal((await httpRequest(`${s.url}/health`)).status, 200, 'the server is still up');
    });

    it('bad base64, two images, a non-base64 data URL, no image: 400', async () => {
      expectError(await chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,@@not*base64!!' } }] }] }), 400, /not valid base64/);
      expectError(await chat({ messages: [{ role: 'user', content: [imagePart('cat.png'), imagePart('rocket.jpg')] }] }), 400, /^At most 1 image may be provided in one prompt \(got 2\)\.$/);
      expectError(await chat({ messages: [{ role: 'user', content: [imagePart('cat.png')] }, { role: 'assistant', content: 'a cat' }, { role: 'user', content: [imagePart('cat.png'), { type: 'text', text: 'and?' }] }] }), 400, /At most 1 image/);
      expectError(await chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png,plain' } }] }] }), 400, /must be base64/);
      expectError(await chat({ messages: [{ role: 'user', content: 'no image here' }] }), 400, /needs an image/);
      // Valid base64 that is no image: the decoder's sentence, not a crash.
      expectError(await chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: `data:image/png;base64,${Buffer.from('not an image at all').toString('base64')}` } }] }] }), 400, /.+/);
      assert.equal((await httpRequest(`${s.url}/health`)).status, 200);
    });

    it('an http image URL: 400, and nothing is fetched', async () => {
      let fetched = 0;
      const imageHost = http.createServer((_req, res) => {
        fetched++;
        res.writeHead(200, { 'Content-Type': 'image/png' }).end(fs.readFileSync(imageFile('cat.png')));
      });
      await new Promise<void>((resolve) => imageHost.listen(0, '127.0.0.1', resolve));
      try {
        const url = `http://127.0.0.1:${(imageHost.address() as net.AddressInfo).port}/cat.png`;
        expectError(await chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url } }] }] }), 400, /does not fetch images from http URLs/);
        expectError(await chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: url }] }] }), 400, /does not fetch images/);
        assert.equal(fetched, 0);
      } finally {
        imageHost.close();
      }
    });

    it('unknown paths and methods: 404 and 405 in the same error shape', async () => {
      expectError(await httpRequest(`${s.url}/v1/completions`, { headers: { Authorization: `Bearer ${KEY}` } }), 404, /Not Found/);
      expectError(await httpRequest(`${s.url}/v1/chat/completions`, { headers: { Authorization: `Bearer ${KEY}` } }), 405, /Method Not Allowed/);
    });
  });

  describe('slow and vanishing clients, a full queue, the time limit', () => {
    let slow: Served;
    before(async () => {
      // A pause after every decoding step, so a request is still running when the test acts.
      process.env.BLIP2_DEBUG_STEP_DELAY_MS = '60';
      try {
        slow = await serve(path.join(root, 'store'), { bodyTimeoutMs: 1000, requestTimeoutMs: 1500 }, { maxQueued: 2 });
      } finally {
        delete process.env.BLIP2_DEBUG_STEP_DELAY_MS;
      }
    });
    after(() => stop(slow));

    it('a client that sends its request too slowly gets 408 and the connection is closed', async () => {
      const socket = net.connect((new URL(slow.url)).port as unknown as number, '127.0.0.1');
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"messages":');
      let answer = '';
      socket.on('data', (d) => (answer += d));
      await new Promise((resolve) => socket.once('close', resolve));
      assert.match(answer, /^HTTP\/1\.1 408/);
      assert.equal((await httpRequest(`${slow.url}/health`)).status, 200);
    });

    it('a client that disconnects mid-stream frees its row at the next step', async () => {
      const before = await metrics(slow.url);
      const pieces = await new Promise<number>((resolve, reject) => {
        const req = http.request(`${slow.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' } }, (res) => {
          let n = 0;
          res.on('data', () => {
            if (++n === 3) {
              req.destroy();
              resolve(n);
            }
          });
        });
        req.on('error', () => undefined);
        req.on('close', () => resolve(-1));
        req.end(JSON.stringify({ messages: [{ role: 'user', content: [imagePart('cat.png')] }], stream: true, max_tokens: 60 }));
        setTimeout(() => reject(new Error('no stream')), 30_000);
      });
      assert.equal(pieces, 3);
      let after = await metrics(slow.url);
      for (let i = 0; i < 100 && after.blip2_generations_cancelled_total === before.blip2_generations_cancelled_total; i++) {
        await new Promise((r) => setTimeout(r, 50));
        after = await metrics(slow.url);
      }
      assert.equal(after.blip2_requests_cancelled_total - before.blip2_requests_cancelled_total, 1, JSON.stringify({ before, after }) + slow.logs.join("\n"));
      assert.equal(after.blip2_generations_cancelled_total - before.blip2_generations_cancelled_total, 1);
      // Ended long before its 60 tokens: a few steps after the third piece.
      assert.ok(after.blip2_tokens_generated_total - before.blip2_tokens_generated_total < 20, `${after.blip2_tokens_generated_total - before.blip2_tokens_generated_total} tokens`);
      assert.equal(after.blip2_requests_in_flight, 0);
    });

    it('past the queue\'s bound: 429, and the requests it took are answered', async () => {
      const body = { messages: [{ role: 'user', content: [imagePart('rocket.jpg')] }], max_tokens: 4 };
      const results = await Promise.all(Array.from({ length: 6 }, () => postJson(`${slow.url}/v1/chat/completions`, body)));
      const statuses = results.map((r) => r.status);
      assert.ok(statuses.includes(429), statuses.join(','));
      assert.ok(statuses.includes(200), statuses.join(','));
      const refused = JSON.parse(results[statuses.indexOf(429)].text);
      assert.equal(refused.error.type, 'TooManyRequests');
      assert.match(refused.error.message, /^BLIP-2 is busy/);
    });

    it('a request past the time limit gets 503 and its row ends', async () => {
      const res = await postJson(`${slow.url}/v1/chat/completions`, { messages: [{ role: 'user', content: [imagePart('coffee.png')] }], max_tokens: 60 });
      assert.equal(res.status, 503, res.text);
      assert.equal(JSON.parse(res.text).error.type, 'TimeoutError');
      const m = await metrics(slow.url);
      assert.ok(m.blip2_requests_timed_out_total >= 1);
      assert.equal(m.blip2_requests_in_flight, 0);
    });
  });
});

/** The server's /metrics as numbers by name (labels folded in). */
async function metrics(url: string): Promise<Record<string, number>> {
  const text = (await httpRequest(`${url}/metrics`)).text;
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z0-9_]+)(\{[^}]*\})? (\d+(?:\.\d+)?)$/.exec(line);
    if (m) out[m[1] + (m[2] ?? '')] = Number(m[3]);
  }
  return new Proxy(out, { get: (t, k: string) => t[k] ?? 0 });
}
