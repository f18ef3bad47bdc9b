/**
 * Soak test of `blip2 serve` (not part of `npm test` or CI): minutes of requests from concurrent clients, each
 * sending one after another, on the tiny fixture model, with a key. Reports what was served, what failed, and the
 * server's resident memory over time; exits 1 on any error, or when the memory of the last minute is more than
 * 15% (and 30 MB) above that of the first minute after warm-up, or when the server does not stop with 0 on SIGTERM.
 *
 *   heavy node --import tsx test/soak/serve-soak.ts [--minutes 5] [--clients 8] [--images 100]
 *
 * Requests, in turn: captions (most, distinct images), questions with a growing chat history, streamed answers
 * (some read to the end, some abandoned mid-stream, which must end their row), beam searches, seeded samples, and
 * hostile ones that must get their status (bad JSON, bad base64, two images, no key); /health and /metrics
 * throughout. RSS is the whole server process (its worker thread included), read from /proc every five seconds.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { isolatedEnv } from '../helpers/cli';
import { httpRequest } from '../helpers/http';
import { startServe } from '../helpers/serve';

const args = parseArgs({ options: { minutes: { type: 'string', default: '5' }, clients: { type: 'string', default: '8' }, images: { type: 'string', default: '100' } } }).values;
const MINUTES = Number(args.minutes);
const CLIENTS = Number(args.clients);
const IMAGES = Number(args.images);
const KEY = 'soak-key-2a9f';

const mb = (bytes: number) => Math.round(bytes / (1024 * 1024));

function rss(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

async function main(): Promise<void> {
  const images: string[] = [];
  for (let i = 0; i < IMAGES; i++) {
    const pixels = Buffer.alloc(64 * 48 * 3);
    for (let p = 0; p < pixels.length; p++) pixels[p] = (p * (i + 11) * 2654435761) >>> 24;
    images.push(`data:image/png;base64,${(await sharp(pixels, { raw: { width: 64, height: 48, channels: 3 } }).png().toBuffer()).toString('base64')}`);
  }
  const iso = isolatedEnv();
  const serve = await startServe({ ...iso.env, BLIP2_API_KEY: KEY }, ['--max-queue', '256']);
  const pid = serve.process.pid!;
  const url = `${serve.url}/v1/chat/completions`;
  const auth = { Authorization: `Bearer ${KEY}` };
  const served: Record<string, number> = {};
  const errors: string[] = [];
  const memory: { atS: number; rssMB: number }[] = [];
  const latencies: number[] = [];
  const started = Date.now();
  const deadline = started + MINUTES * 60_000;
  const count = (kind: string) => (served[kind] = (served[kind] ?? 0) + 1);
  const fail = (kind: string, what: string) => errors.push(`${kind}: ${what.slice(0, 300)}`);
  const sampler = setInterval(() => {
    memory.push({ atS: Math.round((Date.now() - started) / 1000), rssMB: mb(rss(pid)) });
    process.stderr.write(`soak: ${Math.round((Date.now() - started) / 1000)} s, ${Object.values(served).reduce((a, b) => a + b, 0)} requests, ${errors.length} errors, RSS ${mb(rss(pid))} MB\n`);
  }, 5000);

  const image = (n: number) => ({ type: 'image_url', image_url: { url: images[n % images.length] } });
  const expect = async (kind: string, body: unknown, status: number, headers: Record<string, string> = auth) => {
    const t0 = performance.now();
    const r = await httpRequest(url, { body: typeof body === 'string' ? body : JSON.stringify(body), headers });
    if (r.status !== status) return fail(kind, `status ${r.status}, wanted ${status}: ${r.text}`);
    if (status === 200) latencies.push(performance.now() - t0);
    count(kind);
  };
  /** A streamed answer, read to the end (checking its shape) or dropped after its second chunk. */
  const stream = (n: number, abandon: boolean) =>
    new Promise<void>((resolve) => {
      const req = http.request(url, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' } }, (res) => {
        let text = '';
        let chunks = 0;
        res.on('data', (d) => {
          text += d;
          if (abandon && ++chunks === 2) {
            req.destroy();
            count('stream abandoned');
            resolve();
          }
        });
        res.on('end', () => {
          if (abandon) return;
          if (res.statusCode !== 200 || !text.endsWith('data: [DONE]\n\n') || !text.includes('"role":"assistant"')) fail('stream', `${res.statusCode}: ${text.slice(-200)}`);
          else count('stream');
          resolve();
        });
      });
      req.on('error', () => resolve());
      req.end(JSON.stringify({ messages: [{ role: 'user', content: [image(n), { type: 'text', text: 'what is this?' }] }], stream: true, stream_options: { include_usage: true }, max_tokens: 16 }));
    });

  let next = 0;
  const client = async (c: number) => {
    const turns: { question: string; answer: string }[] = [];
    while (Date.now() < deadline) {
      const n = next++;
      try {
        switch (n % 10) {
          case 0:
          case 1:
          case 2:
          case 3:
            await expect('caption', { messages: [{ role: 'user', content: [image(n)] }], max_tokens: 12, no_repeat_ngram_size: 3 }, 200);
            break;
          case 4: {
            // A chat about one image: each question with the turns before it (the server drops the oldest that
            // no longer fit the model's context).
            const question = `question ${turns.length}?`;
            const messages = [
              ...turns.flatMap((t, i) => [{ role: 'user', content: i === 0 ? [image(c), { type: 'text', text: t.question }] : t.question }, { role: 'assistant', content: t.answer }]),
              { role: 'user', content: turns.length === 0 ? [image(c), { type: 'text', text: question }] : question },
            ];
            const r = await httpRequest(url, { body: JSON.stringify({ messages, max_tokens: 8 }), headers: auth });
            if (r.status !== 200) fail('chat', `${r.status}: ${r.text}`);
            else {
              count('chat');
              turns.push({ question, answer: JSON.parse(r.text).choices[0].message.content || '.' });
              if (turns.length > 20) turns.length = 0;
            }
            break;
          }
          case 5:
            await stream(n, n % 20 === 5);
            break;
          case 6:
            await expect('beams', { messages: [{ role: 'user', content: [image(n)] }], use_beam_search: true, n: 3, max_tokens: 8 }, 200);
            break;
          case 7:
            await expect('sample', { messages: [{ role: 'user', content: [image(n)] }], temperature: 0.8, seed: n, max_tokens: 8 }, 200);
            break;
          case 8: {
            const hostile = n % 40;
            if (hostile === 8) await expect('bad JSON', '{"messages": [', 400);
            else if (hostile === 18) await expect('bad base64', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,@@' } }] }] }, 400);
            else if (hostile === 28) await expect('two images', { messages: [{ role: 'user', content: [image(1), image(2)] }] }, 400);
            else await expect('no key', { messages: [{ role: 'user', content: [image(n)] }] }, 401, {});
            break;
          }
          case 9: {
            const h = await httpRequest(`${serve.url}/health`);
            if (h.status !== 200) fail('health', String(h.status));
            else count('health');
            break;
          }
        }
      } catch (e) {
        fail('client', e instanceof Error ? e.message : String(e));
      }
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  clearInterval(sampler);
  const metrics = (await httpRequest(`${serve.url}/metrics`)).text;
  const exitCode = await serve.stop();
  iso.cleanup();

  // Flat memory: the last minute's mean against the first minute's after a minute of warm-up.
  const window = (from: number, to: number) => memory.filter((m) => m.atS >= from && m.atS < to).map((m) => m.rssMB);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const totalS = MINUTES * 60;
  const early = mean(window(60, 120));
  const late = mean(window(totalS - 60, totalS + 60));
  const grew = late - early;
  const flat = memory.length < 4 || grew <= Math.max(30, early * 0.15);
  const sorted = [...latencies].sort((a, b) => a - b);
  const report = {
    minutes: MINUTES,
    clients: CLIENTS,
    served,
    errors: errors.length,
    first_errors: errors.slice(0, 5),
    latency_ms: { p50: Math.round(sorted[Math.floor(sorted.length / 2)] ?? 0), p99: Math.round(sorted[Math.floor(sorted.length * 0.99)] ?? 0) },
    rss_mb: { first_minute_after_warmup: Math.round(early), last_minute: Math.round(late), peak: Math.max(...memory.map((m) => m.rssMB)), every_5s: memory },
    metrics: Object.fromEntries(metrics.split('\n').filter((l) => /^blip2_/.test(l)).map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)])),
    exit_code: exitCode,
  };
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  if (errors.length > 0 || !flat || exitCode !== 0) {
    process.stderr.write(`soak: FAILED (${errors.length} errors, memory ${Math.round(early)} -> ${Math.round(late)} MB, exit ${exitCode})\n`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`soak: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});
