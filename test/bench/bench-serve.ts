// `npm run bench:serve`: what `blip2 serve` and `blip2 fix` gain from decoding requests together.
//
// 1. The random-weight checkpoint of the real blip2-opt-2.7b and its int4 conversion, as `npm run bench` makes them
//    (shared with it, in $BLIP2_BENCH_DIR).
// 2. `blip2 serve` on loopback with that model (--max-batch 8, 2 threads); at 1, 4 and 8 concurrent clients, each
//    sending caption requests one after another, every request a distinct image (so the vision encoder runs for
//    each) and 20 new tokens (min = max, so random weights decode as long as real captions): captions per minute,
//    p50 and p99 latency, and the server's peak RSS (VmHWM) after each level.
// 3. `blip2 fix --dry-run` over a folder of 32 markdown images, all distinct, twice, each in a fresh process with
//    an empty cache: --max-batch 8 (the default) and --max-batch 1 (one image after another); wall time of each.
// 4. Writes bench/results/<date>-<cpu>-serve.json: {"machine", "serve": [{"precision", "clients",
//    "captions_per_minute", "p50_ms", "p99_ms", "peak_rss_mb", …}], "fix": {"images", "batched_ms", "sequential_ms"}}.
//
// A dry run of the script itself on the tiny fixture (seconds, nothing reported; its checkpoint, conversion and result
// go to the BLIP2_BENCH_DIR it needs, never to bench/results):
//   BLIP2_BENCH_CONFIG=test/fixtures/tiny-blip2 BLIP2_BENCH_DIR=/tmp/blip2-bench-dry npm run bench:serve
// Environment: BLIP2_BENCH_DIR, BLIP2_BENCH_CONFIG, BLIP2_BENCH_THREADS (2), BLIP2_BENCH_QUIET_WAIT_S (600),
// BLIP2_BENCH_SERVE_CLIENTS ("1 4 8"), BLIP2_BENCH_SERVE_REQUESTS (captions per level, at least 6 per client; 24),
// BLIP2_BENCH_FIX_IMAGES (32), BLIP2_BENCH_OUT (the JSON file).
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { CHECKPOINT, CONFIG, ensureCheckpoint, ensureConverted, featureSummary, loadavg, log, machine, resultFileName, ROOT, runChild, tsx, waitForQuiet as waitForQuietMachine, WORK } from './bench-lib';

const THREADS = Number(process.env.BLIP2_BENCH_THREADS ?? 2);
const QUIET_WAIT_S = Number(process.env.BLIP2_BENCH_QUIET_WAIT_S ?? 600);
const waitForQuiet = (what: string) => waitForQuietMachine(what, QUIET_WAIT_S);
/** Another configuration than the real model's: a dry run of the script itself, which reports nothing. */
const DRY_RUN = CONFIG !== path.join(ROOT, 'test/fixtures/blip2-opt-2.7b-config');

const CLIENTS = (process.env.BLIP2_BENCH_SERVE_CLIENTS ?? '1 4 8').split(/\s+/).filter(Boolean).map(Number);
const REQUESTS = Number(process.env.BLIP2_BENCH_SERVE_REQUESTS ?? 24);
const FIX_IMAGES = Number(process.env.BLIP2_BENCH_FIX_IMAGES ?? 32);
const TOKENS = 20;
const MAX_BATCH = 8;

/** A distinct image for each request: noise, so that no two encode alike and nothing is served from a cache. */
async function distinctImage(seed: number): Promise<Buffer> {
  const width = 320;
  const height = 240;
  const pixels = Buffer.alloc(width * height * 3);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < pixels.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    pixels[i] = x & 255;
  }
  return sharp(pixels, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

interface Serving {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

function startServe(model: string): Promise<Serving> {
  const [cmd, args] = tsx('server/src/cli/blip2.ts', 'serve', '--model', model, '--precision', 'int4', '--threads', String(THREADS), '--port', '0', '--max-batch', String(MAX_BATCH), '--max-completion-tokens', String(TOKENS), '--store', path.join(WORK, 'serve-store'));
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, BLIP2_API_KEY: '' } });
  let stderr = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /answers at (http:\/\/\S+?)\/v1/.exec(stderr);
      if (m) {
        child.stderr!.removeAllListeners('data');
        child.stderr!.resume();
        resolve({
          url: m[1],
          child,
          stop: () => new Promise((done) => {
            child.once('exit', () => done());
            child.kill('SIGTERM');
          }),
        });
      }
    });
    child.once('exit', (code) => reject(new Error(`blip2 serve exited with ${code}:\n${stderr}`)));
  });
}

function post(url: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function captionRequest(image: Buffer): string {
  return JSON.stringify({
    messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: `data:image/png;base64,${image.toString('base64')}` } }] }],
    max_completion_tokens: TOKENS,
    min_tokens: TOKENS,
  });
}

/** The server process's peak resident memory so far (its worker threads included), in MB. */
function peakRssMB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) / 1024;
}

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

interface ServeLevel {
  precision: 'int4';
  clients: number;
  captions_per_minute: number;
  p50_ms: number;
  p99_ms: number;
  peak_rss_mb: number;
  requests: number;
  wall_ms: number;
  batches: number;
  quiet: { busy: number; loadavg: number[] };
}

async function metric(url: string, name: string): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => http.get(`${url}/metrics`, (res) => {
    let t = '';
    res.on('data', (d) => (t += d));
    res.on('end', () => resolve(t));
  }).on('error', reject));
  return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
}

async function measureServe(model: string): Promise<ServeLevel[]> {
  const serving = await startServe(model);
  const levels: ServeLevel[] = [];
  let seed = 1;
  try {
    // A warm-up caption: the first one after a load pays for mapping the weights in.
    const warm = await post(serving.url, captionRequest(await distinctImage(seed++)));
    if (warm.status !== 200) throw new Error(`warm-up caption: ${warm.status} ${warm.text}`);
    for (const clients of CLIENTS) {
      const total = Math.max(REQUESTS, clients * 6);
      const bodies: string[] = [];
      for (let i = 0; i < total; i++) bodies.push(captionRequest(await distinctImage(seed++)));
      const quiet = await waitForQuiet(`${clients} client${clients === 1 ? '' : 's'}`);
      const batchesBefore = await metric(serving.url, 'blip2_batches_total');
      const latencies: number[] = [];
      let next = 0;
      const started = performance.now();
      await Promise.all(Array.from({ length: clients }, async () => {
        for (let i = next++; i < total; i = next++) {
          const t0 = performance.now();
          const r = await post(serving.url, bodies[i]);
          if (r.status !== 200) throw new Error(`caption ${i}: ${r.status} ${r.text}`);
          latencies.push(performance.now() - t0);
        }
      }));
      const wallMs = performance.now() - started;
      const level: ServeLevel = {
        precision: 'int4',
        clients,
        captions_per_minute: (total / wallMs) * 60_000,
        p50_ms: percentile(latencies, 50),
        p99_ms: percentile(latencies, 99),
        peak_rss_mb: peakRssMB(serving.child.pid!),
        requests: total,
        wall_ms: wallMs,
        batches: (await metric(serving.url, 'blip2_batches_total')) - batchesBefore,
        quiet: { busy: quiet.busy, loadavg: quiet.loadavg },
      };
      log(`  ${clients} client${clients === 1 ? ' ' : 's'}: ${level.captions_per_minute.toFixed(1)} captions/min, p50 ${level.p50_ms.toFixed(0)} ms, p99 ${level.p99_ms.toFixed(0)} ms, ${level.batches} batches for ${total} captions, peak RSS ${level.peak_rss_mb.toFixed(0)} MB`);
      levels.push(level);
    }
  } finally {
    await serving.stop();
  }
  return levels;
}

/** A docs folder with `count` distinct images, each without alt text. */
async function fixSite(count: number): Promise<string> {
  const site = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-bench-fix-'));
  fs.mkdirSync(path.join(site, '.git'));
  fs.mkdirSync(path.join(site, 'images'));
  const lines = ['# Gallery', ''];
  for (let i = 0; i < count; i++) {
    fs.writeFileSync(path.join(site, 'images', `photo-${i}.png`), await distinctImage(10_000 + i));
    lines.push(`![](images/photo-${i}.png)`, '');
  }
  fs.writeFileSync(path.join(site, 'README.md'), lines.join('\n'));
  return site;
}

async function measureFix(model: string): Promise<{ images: number; batched_ms: number; sequential_ms: number; batched_peak_rss_mb?: number; sequential_peak_rss_mb?: number }> {
  const site = await fixSite(FIX_IMAGES);
  try {
    const run = async (maxBatch: number) => {
      // A store of its own each time: its caption cache starts empty, so every image is captioned.
      const store = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-bench-fix-store-'));
      try {
        await waitForQuiet(`blip2 fix --max-batch ${maxBatch}`);
        const [cmd, args] = tsx('server/src/cli/blip2.ts', 'fix', site, '--dry-run', '--model', model, '--precision', 'int4', '--threads', String(THREADS), '--store', store, '--max-new-tokens', String(TOKENS), '--min-new-tokens', String(TOKENS), '--num-beams', '1', '--max-batch', String(maxBatch));
        // runChild parses the last stdout line as JSON; the diff is not, so a failure is told by the exit code.
        const r = await runChild<never>(cmd, args);
        if (!r.ok && !r.error?.startsWith('exit 0:')) throw new Error(`blip2 fix --max-batch ${maxBatch}: ${r.error}`);
        log(`  fix, ${FIX_IMAGES} images, --max-batch ${maxBatch}: ${(r.wallMs / 1000).toFixed(1)} s, peak RSS ${r.peakRssMB?.toFixed(0) ?? '?'} MB`);
        return r;
      } finally {
        fs.rmSync(store, { recursive: true, force: true });
      }
    };
    const batched = await run(MAX_BATCH);
    const sequential = await run(1);
    return { images: FIX_IMAGES, batched_ms: batched.wallMs, sequential_ms: sequential.wallMs, batched_peak_rss_mb: batched.peakRssMB, sequential_peak_rss_mb: sequential.peakRssMB };
  } finally {
    fs.rmSync(site, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const started = new Date();
  if (DRY_RUN && !process.env.BLIP2_BENCH_DIR) {
    throw new Error('A dry run needs a BLIP2_BENCH_DIR of its own, so that the full-size checkpoint and its conversions are left as they are.');
  }
  const m = machine(THREADS);
  log(`bench:serve on ${m.cpu} (${featureSummary(m)}), ${m.cores} cores, ${THREADS} threads${DRY_RUN ? `; dry run with ${path.relative(ROOT, CONFIG)}` : ''}`);
  await ensureCheckpoint();
  const conversion = await ensureConverted('int4', QUIET_WAIT_S);
  if (!conversion) throw new Error('the int4 conversion failed');
  log(`serve: ${path.relative(ROOT, CHECKPOINT) || CHECKPOINT} as int4, --max-batch ${MAX_BATCH}, ${TOKENS} tokens per caption`);
  const serve = await measureServe(conversion.dir);
  log(`fix: ${FIX_IMAGES} distinct images`);
  const fix = await measureFix(conversion.dir);
  const one = serve.find((l) => l.clients === 1);
  const eight = serve.find((l) => l.clients === 8);
  const summary = {
    eight_over_one_captions_per_minute: one && eight ? eight.captions_per_minute / one.captions_per_minute : undefined,
    fix_sequential_over_batched: fix.sequential_ms / fix.batched_ms,
  };
  log(`\n8 clients over 1: ${summary.eight_over_one_captions_per_minute?.toFixed(2) ?? '-'}x captions per minute; fix batched ${summary.fix_sequential_over_batched.toFixed(2)}x faster than one image after another`);
  const out = process.env.BLIP2_BENCH_OUT ?? (DRY_RUN ? path.join(WORK, resultFileName(m, started, 'serve')) : path.join(ROOT, 'bench/results', resultFileName(m, started, 'serve')));
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({
    machine: { ...m, loadavg_at_start: loadavg() },
    dry_run: DRY_RUN,
    settings: { max_batch: MAX_BATCH, tokens: TOKENS, threads: THREADS, image: '320x240 PNG, distinct per request' },
    serve,
    fix,
    summary,
  }, null, 2) + '\n');
  log(`written: ${path.relative(ROOT, out)}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:serve: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});
