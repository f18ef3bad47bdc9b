// Driver for test/bench/precision-cost.sh (see there for the whole benchmark). Three commands:
//
//   node --import tsx test/bench/precision-cost.ts roofline [--threads 2]
//       fp32 GEMM GFLOP/s and GEMV GB/s on onnxruntime-node now (environment.md's roofline); JSON on the last line.
//   node --import tsx test/bench/precision-cost.ts caption --model CONVERTED_DIR --image IMG [--threads 2] [--tokens 20] [--repeat 2]
//       Loads the converted model the way the CLI does (openModel), records resident memory after loading, then
//       captions IMG `--repeat` times with exactly `--tokens` new tokens (min = max, so random weights decode as
//       long as real ones). JSON on the last line. Meant to run under /usr/bin/time -v, which gives the true peak.
//   node --import tsx test/bench/precision-cost.ts report RESULTS_DIR PRECISION...
//       The table from the files precision-cost.sh leaves in RESULTS_DIR.
//
// The CLI (`blip2 caption IMG --model DIR --json --threads 2 --max-new-tokens 20 --min-new-tokens 20`) reports the
// same timings; this driver exists because it also needs the memory after loading, the step count and a warm
// second caption from one process.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readJson } from '../../server/src/engine/checkpoint/checkpoint';
import { parseBlip2Config, type Blip2Config } from '../../server/src/engine/checkpoint/config';
import { hasCrossAttention } from '../../server/src/engine/checkpoint/layout';
import { readManifest } from '../../server/src/engine/convert/manifest';
import { parsePrecision } from '../../server/src/engine/convert/precision';
import { openModel } from '../../server/src/engine/open-model';
import { measureRoofline, type RooflineRates } from './int8-matmul';

function arg(args: string[], name: string, fallback?: string): string {
  const i = args.indexOf(name);
  const v = i >= 0 ? args[i + 1] : fallback;
  if (v === undefined) throw new Error(`${name} is required`);
  return v;
}

/** Resident memory from the kernel: VmHWM is the peak so far, RssFile the mapped-file part (weights ORT maps from disk). */
function memory(): { rssMB: number; hwmMB: number; anonMB: number; fileMB: number } {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
  return { rssMB: kb('VmRSS'), hwmMB: kb('VmHWM'), anonMB: kb('RssAnon'), fileMB: kb('RssFile') };
}

// ---------------------------------------------------------------------------------------------------------------
// Work counts for the roofline

/** Multiply-adds x2 of one image through the vision session: ViT-g, Q-Former (query side) and the projection. */
export function visionFlops(cfg: Blip2Config): number {
  const v = cfg.vision;
  const patches = (v.imageSize / v.patchSize) ** 2;
  const s = patches + 1;
  const d = v.hiddenSize;
  let f = 2 * patches * d * 3 * v.patchSize ** 2;
  f += v.numLayers * (2 * s * d * (3 * d + d + 2 * v.intermediateSize) + 2 * 2 * s * s * d);
  const q = cfg.qformer;
  const nq = cfg.numQueryTokens;
  const h = q.hiddenSize;
  for (let i = 0; i < q.numLayers; i++) {
    f += 2 * nq * h * 4 * h + 2 * 2 * nq * nq * h;
    if (hasCrossAttention(cfg, i)) f += 2 * nq * h * 2 * h + 2 * s * q.encoderHiddenSize * 2 * h + 2 * 2 * nq * s * h;
    f += 2 * nq * h * 2 * q.intermediateSize;
  }
  return f + 2 * nq * h * cfg.text.hiddenSize;
}

/** FLOPs of the decoder's first pass over `tokens` positions (logits for the last one only). */
export function prefillFlops(cfg: Blip2Config, vocab: number, tokens: number): number {
  const t = cfg.text;
  const h = t.hiddenSize;
  const perToken = t.numLayers * 2 * (4 * h * h + 2 * h * t.ffnDim);
  const attention = t.numLayers * 2 * 2 * tokens * tokens * h;
  return tokens * perToken + attention + 2 * vocab * h;
}

// ---------------------------------------------------------------------------------------------------------------
// caption

interface CaptionRun {
  preprocessMs: number;
  visionMs: number;
  prefillMs: number;
  decodeMs: number;
  /** Decoder calls after the first pass: new tokens - 1, since the first token comes from the prefill. */
  steps: number;
  msPerToken: number;
  /** Median of the per-step intervals between streamed tokens: robust to another process taking the cores for a moment. */
  medianStepMs: number;
  tokens: number;
  /** Process CPU time / (wall time x threads): near 1 when onnxruntime had the cores to itself. */
  cpuShare: number;
}

async function caption(args: string[]): Promise<void> {
  const dir = path.resolve(arg(args, '--model'));
  const image = arg(args, '--image');
  const threads = Number(arg(args, '--threads', '2'));
  const tokens = Number(arg(args, '--tokens', '20'));
  const repeat = Number(arg(args, '--repeat', '3'));
  const manifest = readManifest(dir);
  const before = memory();
  const start = performance.now();
  const opened = await openModel({ model: dir, precision: parsePrecision(manifest.precision), device: 'cpu', threads, offline: true });
  const loadMs = performance.now() - start;
  const afterLoad = memory();
  process.stderr.write(`loaded ${manifest.precision} in ${(loadMs / 1000).toFixed(1)} s, rss ${afterLoad.rssMB.toFixed(0)} MiB\n`);
  const runs: CaptionRun[] = [];
  try {
    for (let i = 0; i < repeat; i++) {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const [encoded] = await opened.pipeline.encodeImages([image]);
      const stamps: number[] = [];
      const { answers, timings } = await opened.pipeline.generate(
        [{ image: encoded, prompt: '' }],
        { maxNewTokens: tokens, minNewTokens: tokens },
        { onToken: () => stamps.push(performance.now()) },
      );
      const cpu = process.cpuUsage(cpu0);
      const wall = performance.now() - t0;
      const steps = stamps.slice(1).map((t, j) => t - stamps[j]).sort((a, b) => a - b);
      runs.push({
        medianStepMs: steps.length ? steps[steps.length >> 1] : NaN,
        cpuShare: (cpu.user + cpu.system) / 1000 / (wall * threads),
        preprocessMs: encoded.preprocessMs,
        visionMs: encoded.visionMs,
        prefillMs: timings.prefillMs,
        decodeMs: timings.decodeMs,
        steps: timings.steps,
        msPerToken: timings.decodeMs / timings.steps,
        tokens: answers[0].tokenIds.length,
      });
      const r = runs[runs.length - 1];
      process.stderr.write(
        `caption ${i + 1}: vision ${encoded.visionMs.toFixed(0)} ms, prefill ${timings.prefillMs.toFixed(0)} ms, decode ${timings.decodeMs.toFixed(0)} ms / ${timings.steps} steps ` +
          `(median step ${r.medianStepMs.toFixed(1)} ms), cpu share ${r.cpuShare.toFixed(2)}, load ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}\n`,
      );
    }
  } finally {
    await opened.pipeline.dispose();
  }
  const cfg = parseBlip2Config(readJson(path.join(dir, 'config.json')));
  const decoderBytes = manifest.sizes[manifest.graphs.decoder];
  // The position table is gathered one row per token, not streamed; every other decoder weight is read each step.
  const positionsBytes = (cfg.text.maxPositionEmbeddings + 2) * cfg.text.hiddenSize * (manifest.precision === 'fp16' ? 2 : 4);
  const result = {
    precision: manifest.precision,
    threads,
    loadMs,
    memoryBeforeLoad: before,
    memoryAfterLoad: afterLoad,
    memoryAtEnd: memory(),
    runs,
    sizes: manifest.sizes,
    visionFlops: visionFlops(cfg),
    prefillTokens: cfg.numQueryTokens + 1,
    prefillFlops: prefillFlops(cfg, manifest.vocabSize, cfg.numQueryTokens + 1),
    decoderStreamBytes: decoderBytes - positionsBytes,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

type CaptionResult = {
  precision: string;
  loadMs: number;
  memoryAfterLoad: ReturnType<typeof memory>;
  memoryAtEnd: ReturnType<typeof memory>;
  runs: CaptionRun[];
  visionFlops: number;
  prefillTokens: number;
  prefillFlops: number;
  decoderStreamBytes: number;
};

// ---------------------------------------------------------------------------------------------------------------
// report

function lastJson<T>(file: string): T | undefined {
  if (!fs.existsSync(file)) return undefined;
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      return JSON.parse(lines[i]) as T;
    } catch {
      // progress lines before the JSON
    }
  }
  return undefined;
}

function timeField(file: string, key: string): string | undefined {
  if (!fs.existsSync(file)) return undefined;
  return new RegExp(`^\\s*${key.replace(/[()]/g, '\\$&')}: (.*)$`, 'm').exec(fs.readFileSync(file, 'utf8'))?.[1];
}

function report(args: string[]): void {
  const [dir, ...precisions] = args;
  const gib = (bytes: number) => (bytes / 2 ** 30).toFixed(2);
  const f0 = (x: number) => x.toFixed(0);
  const lines: string[] = [];
  const details: string[] = [];
  lines.push('| precision | disk GiB | load s | RSS after load GiB (anon + file) | peak RSS GiB | vision ms (roofline) | prefill ms (roofline) | ms/token mean / median step | roofline ms/token | GEMM GFLOP/s best/median | GEMV GB/s best/median | cpu share (warm runs) | load avg before → after |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const p of precisions) {
    const base = path.join(dir, p);
    const cap = lastJson<CaptionResult>(`${base}.caption.json`);
    const roof = lastJson<RooflineRates>(`${base}.roofline.json`);
    const disk = fs.existsSync(`${base}.disk`) ? Number(fs.readFileSync(`${base}.disk`, 'utf8').trim()) : NaN;
    // Before the roofline and after the caption: a rise in between means someone else's work overlapped the run.
    const upt = fs.existsSync(`${base}.uptime`)
      ? fs.readFileSync(`${base}.uptime`, 'utf8').trim().split('\n').map((l) => /load average: (.*)$/.exec(l)?.[1] ?? '?').join(' → ')
      : '';
    const peakKb = Number(timeField(`${base}.time.txt`, 'Maximum resident set size (kbytes)') ?? NaN);
    if (!cap || !roof) {
      const exit = timeField(`${base}.time.txt`, 'Exit status') ?? '?';
      const err = fs.existsSync(`${base}.caption.err`) ? fs.readFileSync(`${base}.caption.err`, 'utf8').trim().split('\n').slice(-3).join(' / ') : '';
      const convErr = fs.existsSync(`${base}.convert.err`) ? fs.readFileSync(`${base}.convert.err`, 'utf8').trim().split('\n').slice(-1)[0] : '';
      lines.push(`| ${p} | ${Number.isNaN(disk) ? '-' : gib(disk)} | FAILED (exit ${exit}, peak RSS ${Number.isNaN(peakKb) ? '?' : gib(peakKb * 1024)} GiB): ${err || convErr} |`);
      continue;
    }
    // Warm captions (all but the first, which pays one-time costs: page faults on mapped weights, arena growth),
    // best of them: other people's jobs share these 2 cores, and a contended run only ever reads slower.
    const warm = cap.runs.length > 1 ? cap.runs.slice(1) : cap.runs;
    const best = (f: (r: CaptionRun) => number) => Math.min(...warm.map(f));
    const first = cap.runs[0];
    // A roofline is a bound, so it takes the best rate seen; the median beside it shows how noisy the moment was.
    const gemm = roof.gemm.bestGflops;
    const gemv = roof.gemv.bestGBs;
    const visionRoof = cap.visionFlops / gemm / 1e6;
    const prefillRoof = Math.max(cap.prefillFlops / gemm / 1e6, cap.decoderStreamBytes / gemv / 1e6);
    const tokenRoof = cap.decoderStreamBytes / gemv / 1e6;
    const m = cap.memoryAfterLoad;
    lines.push(
      `| ${p} | ${gib(disk)} | ${(cap.loadMs / 1000).toFixed(1)} | ${gib(m.rssMB * 2 ** 20)} (${gib(m.anonMB * 2 ** 20)} + ${gib(m.fileMB * 2 ** 20)}) | ${gib(peakKb * 1024)} | ${f0(best((r) => r.visionMs))} (${f0(visionRoof)}) | ${f0(best((r) => r.prefillMs))} (${f0(prefillRoof)}) | ${best((r) => r.msPerToken).toFixed(1)} / ${best((r) => r.medianStepMs).toFixed(1)} | ${tokenRoof.toFixed(1)} | ${f0(gemm)}/${f0(roof.gemm.medianGflops)} | ${gemv.toFixed(1)}/${roof.gemv.medianGBs.toFixed(1)} | ${warm.map((r) => (r.cpuShare ?? NaN).toFixed(2)).join(', ')} | ${upt} |`,
    );
    details.push(
      `${p}: first caption vision ${f0(first.visionMs)} ms, prefill ${f0(first.prefillMs)} ms, ${first.msPerToken.toFixed(1)} ms/token; ` +
        `warm: ${warm.map((r) => `vision ${f0(r.visionMs)} prefill ${f0(r.prefillMs)} decode ${f0(r.decodeMs)} ms / ${r.steps} steps for ${r.tokens} tokens`).join('; ')}; ` +
        `decoder weights streamed per token ${(cap.decoderStreamBytes / 1e9).toFixed(2)} GB; vision ${(cap.visionFlops / 1e9).toFixed(0)} GFLOP; ` +
        `prefill ${cap.prefillTokens} positions ${(cap.prefillFlops / 1e9).toFixed(0)} GFLOP; ` +
        `VmHWM ${gib(cap.memoryAtEnd.hwmMB * 2 ** 20)} GiB; conversion ${timeField(`${base}.convert-time.txt`, 'Elapsed (wall clock) time (h:mm:ss or m:ss)') ?? '?'} wall, ` +
        `peak ${gib(Number(timeField(`${base}.convert-time.txt`, 'Maximum resident set size (kbytes)') ?? NaN) * 1024)} GiB`,
    );
  }
  process.stdout.write(
    [
      ...lines,
      '',
      'Times are the best of the warm captions (every caption after the first in the process). ms/token: decode time / decoder steps',
      '(20 new tokens = 1 from the prefill + 19 steps), and the median interval between streamed tokens.',
      'cpu share: process CPU time / (wall x threads) over a caption; well under 1 means other processes had the cores.',
      'Rooflines use the best rates measured just before each precision: vision = vision FLOPs / fp32 GEMM rate;',
      'per token = decoder weight bytes as stored (file) / fp32 GEMV streaming rate; prefill = the larger of its FLOPs / GEMM rate and that.',
      '',
      ...details,
    ].join('\n') + '\n',
  );
}

async function main(argv: string[]): Promise<void> {
  const [command, ...args] = argv;
  switch (command) {
    case 'roofline': {
      const threads = Number(arg(args, '--threads', '2'));
      const rates = await measureRoofline(threads);
      process.stderr.write(
        `roofline (${threads} threads): fp32 GEMM ${rates.gemm.bestGflops.toFixed(0)} best / ${rates.gemm.medianGflops.toFixed(0)} median GFLOP/s, ` +
          `fp32 GEMV ${rates.gemv.bestGBs.toFixed(1)} best / ${rates.gemv.medianGBs.toFixed(1)} median GB/s\n`,
      );
      process.stdout.write(JSON.stringify(rates) + '\n');
      return;
    }
    case 'caption':
      return caption(args);
    case 'report':
      return report(args);
    default:
      throw new Error('usage: precision-cost.ts roofline|caption|report ...');
  }
}

if (path.resolve(process.argv[1] ?? '') === __filename) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`precision-cost: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  });
}
