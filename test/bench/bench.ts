// `npm run bench`: what a caption costs at each precision on this CPU, beside what the machine allows and what
// Hugging Face transformers does with the same checkpoint and image.
//
// 1. Writes (once, cached in $BLIP2_BENCH_DIR, default ~/.cache/blip2-bench) a seeded random-weight checkpoint of the
//    real blip2-opt-2.7b configuration (test/fixtures/blip2-opt-2.7b-config, 3.74 B parameters, 15 GB) with the
//    project's random-checkpoint tool, and converts it at each precision (cached per converter version), recording
//    the conversion's time and peak RSS.
// 2. Measures the machine in the same run: fp32 and int8 GEMM rates at the vision encoder's shape and the rate at
//    which a GEMV streams weights from RAM (test/bench/int8-matmul.ts), and records the CPU and its features.
// 3. Per precision, each in a fresh process (test/bench/bench-engine.ts), waiting for a quiet machine before each:
//    a cold load (no optimized copy of the graphs yet) and warm loads; 20-token greedy captions (min = max, so
//    random weights decode as long as real ones) timed stage by stage; captions with the extension's default
//    settings, each followed by a second question about the same image; the peak RSS of each process.
// 4. Where Python with torch and transformers is installed: transformers at float32, bfloat16 and torch's dynamic
//    int8 on the same checkpoint and image (test/bench/transformers_peer.py), one process each, the large ones last.
// 5. Prints every figure beside its bound and the ratio, and writes all of it to bench/results/<date>-<cpu>.json.
//
// Environment: BLIP2_BENCH_DIR, BLIP2_BENCH_CONFIG, BLIP2_BENCH_PRECISIONS ("int4 int8 fp16 fp32"), BLIP2_BENCH_PEERS ("float32 bfloat16
// torch-int8", "none" to skip), BLIP2_BENCH_PYTHON (python3), BLIP2_BENCH_THREADS (2), BLIP2_BENCH_REPEAT (3),
// BLIP2_BENCH_QUIET_WAIT_S (600), BLIP2_BENCH_OUT (the JSON file).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { readJson } from '../../server/src/engine/checkpoint/checkpoint';
import { parseBlip2Config } from '../../server/src/engine/checkpoint/config';
import { CONVERTER_VERSION, readManifest } from '../../server/src/engine/convert/manifest';
import { PRECISIONS, type Precision } from '../../server/src/engine/convert/precision';
import { OPTIMIZED_DIR } from '../../server/src/engine/runtime/blip2-model';
import { BENCH_QUESTION, defaultCaptionSettings, defaultQuestionSettings, type StageTimes } from './bench-engine';
import { cosine } from '../helpers/tiny-model';
import { decoderFlops, decoderMatmulParams, visionFlops } from './work-counts';
import {
  CHECKPOINT,
  ensureCheckpoint,
  ensureConverted as ensureConvertedIn,
  featureSummary,
  log,
  loadavg,
  machine as benchMachine,
  resultFileName,
  ROOT,
  runChild,
  tsx,
  waitForQuiet as waitForQuietMachine,
  WORK,
  type ChildResult,
  type Conversion,
  type Machine,
} from './bench-lib';

const THREADS = Number(process.env.BLIP2_BENCH_THREADS ?? 2);
const REPEAT = Number(process.env.BLIP2_BENCH_REPEAT ?? 3);
const CAPTION_TOKENS = 20;
/** A typical short answer ("a white cat" and the end token); the bench holds answers to this length. */
const QUESTION_TOKENS = 5;
const QUIET_WAIT_S = Number(process.env.BLIP2_BENCH_QUIET_WAIT_S ?? 600);
const IMAGES_DIR = path.join(ROOT, 'test/fixtures/tiny-blip2/reference/images');
const PEER_MODES = ['float32', 'bfloat16', 'torch-int8'] as const;

const machine = () => benchMachine(THREADS);
const waitForQuiet = (what: string) => waitForQuietMachine(what, QUIET_WAIT_S);
const ensureConverted = (p: Precision) => ensureConvertedIn(p, QUIET_WAIT_S);

// ---------------------------------------------------------------------------------------------------------------
// Measurements

interface LimitRates {
  gemmGflops: number;
  int8Gops: number;
  streamGBs: number;
}

async function measureLimits(): Promise<LimitRates> {
  await waitForQuiet('the machine limits');
  const r = await runChild<{ gemm: { bestGflops: number }; int8: { bestGops: number }; gemv: { bestGBs: number } }>(...tsx('test/bench/int8-matmul.ts', '--roofline', '--threads', String(THREADS)));
  if (!r.ok) throw new Error(`measuring the machine failed: ${r.error}`);
  return { gemmGflops: r.value!.gemm.bestGflops, int8Gops: r.value!.int8.bestGops, streamGBs: r.value!.gemv.bestGBs };
}

interface EngineRun {
  loadMs: number;
  runs: StageTimes[];
  questions?: StageTimes[];
  warmup: StageTimes;
  memoryAfterLoad: { rss: number };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function images(count: number): string[] {
  const all = fs.readdirSync(IMAGES_DIR).filter((f) => /\.(png|jpe?g|gif)$/i.test(f)).sort().map((f) => path.join(IMAGES_DIR, f));
  return Array.from({ length: count }, (_, i) => all[i % all.length]);
}

interface PrecisionResult {
  precision: Precision;
  conversion: Conversion;
  coldLoadMs?: number;
  warmLoadMs?: number;
  warmLoadRunsMs: number[];
  greedy?: ChildResult<EngineRun>;
  defaults?: ChildResult<EngineRun>;
  quiet: Record<string, { busy: number; loadavg: number[] }>;
}

const logitsFile = (p: Precision) => path.join(WORK, `first-step-logits-${p}.f32`);

/** Cosine similarity of a precision's first-step logits to fp32's, on the same image: what the precision costs in fidelity. */
function cosineToFp32(p: Precision): number | undefined {
  const read = (q: Precision) => (fs.existsSync(logitsFile(q)) ? new Float32Array(new Uint8Array(fs.readFileSync(logitsFile(q))).buffer) : undefined);
  const a = read(p);
  const b = read('fp32');
  if (!a || !b || a.length !== b.length) return undefined;
  return cosine(a, b);
}

async function measurePrecision(p: Precision, conversion: Conversion): Promise<PrecisionResult> {
  const dir = conversion.dir;
  const result: PrecisionResult = { precision: p, conversion, warmLoadRunsMs: [], quiet: {} };
  const engine = (mode: string, ...extra: string[]) => tsx('test/bench/bench-engine.ts', mode, '--model', dir, '--threads', String(THREADS), ...extra);

  fs.rmSync(path.join(dir, OPTIMIZED_DIR), { recursive: true, force: true });
  result.quiet.coldLoad = await waitForQuiet(`${p} cold load`);
  log(`${p}: cold load (no optimized copy yet)`);
  const cold = await runChild<{ loadMs: number }>(...engine('load'));
  result.coldLoadMs = cold.value?.loadMs;
  for (let i = 0; i < REPEAT; i++) {
    result.quiet[`warmLoad${i}`] = await waitForQuiet(`${p} warm load`);
    log(`${p}: warm load ${i + 1}/${REPEAT}`);
    const warm = await runChild<{ loadMs: number }>(...engine('load'));
    if (warm.ok) result.warmLoadRunsMs.push(warm.value!.loadMs);
  }
  result.warmLoadMs = median(result.warmLoadRunsMs);

  const pics = images(REPEAT + 1).join(',');
  result.quiet.greedy = await waitForQuiet(`${p} captions`);
  log(`${p}: ${CAPTION_TOKENS}-token greedy captions`);
  result.greedy = await runChild<EngineRun>(...engine('greedy', '--images', pics, '--tokens', String(CAPTION_TOKENS), '--logits-out', logitsFile(p)));
  result.quiet.defaults = await waitForQuiet(`${p} default-settings captions`);
  log(`${p}: captions with the extension's default settings, then a question about each image`);
  result.defaults = await runChild<EngineRun>(...engine('default', '--images', pics, '--question-tokens', String(QUESTION_TOKENS)));
  return result;
}

interface PeerResult {
  engine: 'transformers';
  precision: string;
  load_ms: number;
  caption_ms: number;
  default_settings_caption_ms: number;
  second_question_ms: number;
  peak_rss_mb: number;
}

function pythonHasTransformers(python: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = spawn(python, ['-c', 'import torch, transformers'], { stdio: 'ignore' });
    c.on('error', () => resolve(false));
    c.on('close', (code) => resolve(code === 0));
  });
}

/** transformers' generate() keyword arguments for our settings. */
function hfKwargs(s: ReturnType<typeof defaultCaptionSettings>): Record<string, unknown> {
  return {
    max_new_tokens: s.maxNewTokens,
    ...(s.minNewTokens ? { min_new_tokens: s.minNewTokens } : {}),
    num_beams: s.numBeams ?? 1,
    num_return_sequences: s.numReturnSequences ?? 1,
    repetition_penalty: s.repetitionPenalty ?? 1,
    no_repeat_ngram_size: s.noRepeatNgramSize ?? 0,
    do_sample: false,
  };
}

async function measurePeers(modes: string[]): Promise<{ results: (PeerResult | { precision: string; skipped: string })[]; note?: string }> {
  const python = process.env.BLIP2_BENCH_PYTHON ?? 'python3';
  if (!(await pythonHasTransformers(python))) {
    const note = `${python} cannot import torch and transformers: reporting our engine alone. To compare, install them (e.g. \`${python} -m pip install torch transformers pillow\`, or with --index-url pointing at a local mirror) or set BLIP2_BENCH_PYTHON.`;
    log(note);
    return { results: [], note };
  }
  const settings = JSON.stringify({
    caption_tokens: CAPTION_TOKENS,
    question_tokens: QUESTION_TOKENS,
    default: hfKwargs(defaultCaptionSettings()),
    question: hfKwargs(defaultQuestionSettings(QUESTION_TOKENS)),
    question_text: BENCH_QUESTION,
  });
  const image = images(2)[1];
  const results: (PeerResult | { precision: string; skipped: string })[] = [];
  for (const mode of modes) {
    // bfloat16 and torch int8 hold the float32 weights and their converted copy at once while loading.
    const needGiB = mode === 'float32' ? 16 : 22;
    const availGiB = Number(/MemAvailable:\s+(\d+)/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) / 2 ** 20;
    if (availGiB < needGiB) {
      const skipped = `needs about ${needGiB} GiB free while loading, ${availGiB.toFixed(1)} GiB available`;
      log(`transformers ${mode}: skipped (${skipped})`);
      results.push({ precision: mode, skipped });
      continue;
    }
    await waitForQuiet(`transformers ${mode}`);
    log(`transformers ${mode}: loading and captioning`);
    const r = await runChild<PeerResult>(python, [path.join(ROOT, 'test/bench/transformers_peer.py'), '--checkpoint', CHECKPOINT, '--image', image, '--mode', mode, '--threads', String(THREADS), '--settings', settings, '--repeat', String(REPEAT)]);
    if (r.ok) results.push({ ...r.value!, peak_rss_mb: r.peakRssMB ?? r.value!.peak_rss_mb });
    else results.push({ precision: mode, skipped: `failed: ${r.error}` });
  }
  return { results };
}

// ---------------------------------------------------------------------------------------------------------------
// Bounds and the report

interface Bounds {
  visionMs: number;
  prefillMs: number;
  stepMs: (rows: number) => number;
  captionMs: number;
  defaultSettingsMs: number;
  questionMs: number;
}

/**
 * The least time this machine could take for a precision's work: compute-bound stages at the best rate for their
 * arithmetic (int8 for the quantized precisions, whose kernels compute in int8; fp32 otherwise), and a decoding
 * step at the larger of streaming the decoder's weights from RAM and its FLOPs for all beams.
 */
function boundsFor(p: Precision, conversion: Conversion, rates: LimitRates): Bounds {
  const cfg = parseBlip2Config(readJson(path.join(conversion.dir, 'config.json')));
  const manifest = readManifest(conversion.dir);
  const vocab = manifest.vocabSize;
  const rate = (p === 'int4' || p === 'int8' ? rates.int8Gops : rates.gemmGflops) * 1e9;
  const positionsBytes = (cfg.text.maxPositionEmbeddings + 2) * cfg.text.hiddenSize * (p === 'fp16' ? 2 : 4);
  const streamBytes = manifest.sizes[manifest.graphs.decoder] - positionsBytes;
  const stream = rates.streamGBs * 1e9;
  const prompt = cfg.numQueryTokens + 1;
  const visionMs = (visionFlops(cfg) / rate) * 1000;
  const prefillMs = Math.max(decoderFlops(cfg, vocab, prompt) / rate, streamBytes / stream) * 1000;
  const stepMs = (rows: number) => Math.max((rows * 2 * decoderMatmulParams(cfg, vocab)) / rate, streamBytes / stream) * 1000;
  const d = defaultCaptionSettings();
  const questionPrompt = 12; // "Question: what is in the picture? Answer:" after the cached image positions
  return {
    visionMs,
    prefillMs,
    stepMs,
    captionMs: visionMs + prefillMs + (CAPTION_TOKENS - 1) * stepMs(1),
    defaultSettingsMs: visionMs + prefillMs + (d.maxNewTokens - 1) * stepMs(d.numBeams ?? 1),
    questionMs: Math.max(decoderFlops(cfg, vocab, questionPrompt, cfg.numQueryTokens) / rate, streamBytes / stream) * 1000 + (QUESTION_TOKENS - 1) * stepMs(1),
  };
}

function fmt(ms: number | undefined): string {
  return ms === undefined || Number.isNaN(ms) ? '-' : ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : `${ms.toFixed(0)} ms`;
}

const withRatio = (ms: number | undefined, bound: number) => (ms === undefined || Number.isNaN(ms) ? '-' : `${fmt(ms)} (${fmt(bound)}, ${(ms / bound).toFixed(2)}x)`);

async function main(): Promise<void> {
  const precisions = (process.env.BLIP2_BENCH_PRECISIONS ?? 'int4 int8 fp16 fp32').split(/\s+/).filter(Boolean) as Precision[];
  for (const p of precisions) if (!(PRECISIONS as readonly string[]).includes(p)) throw new Error(`Unknown precision ${p}; use ${PRECISIONS.join(', ')}.`);
  const peerEnv = process.env.BLIP2_BENCH_PEERS ?? PEER_MODES.join(' ');
  const peers = peerEnv === 'none' ? [] : peerEnv.split(/\s+/).filter(Boolean);
  fs.mkdirSync(WORK, { recursive: true });
  const m = machine();
  log(`machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB.toFixed(1)} GiB, ${featureSummary(m)}; load ${loadavg().join(' ')}`);
  const started = new Date();

  await ensureCheckpoint();
  const conversions = new Map<Precision, Conversion>();
  for (const p of precisions) {
    const c = await ensureConverted(p);
    if (c) conversions.set(p, c);
  }

  log('machine limits ...');
  const rates = await measureLimits();
  log(`  fp32 GEMM ${rates.gemmGflops.toFixed(0)} GFLOP/s, int8 GEMM ${rates.int8Gops.toFixed(0)} GOP/s, streaming ${rates.streamGBs.toFixed(1)} GB/s`);

  const ours: PrecisionResult[] = [];
  // Logits from an earlier run would compare this run's precisions with another conversion's.
  for (const p of PRECISIONS) fs.rmSync(logitsFile(p), { force: true });
  for (const p of precisions) {
    const c = conversions.get(p);
    if (c) ours.push(await measurePrecision(p, c));
  }
  const peerResults = peers.length ? await measurePeers(peers) : { results: [], note: 'transformers peers not asked for (BLIP2_BENCH_PEERS=none)' };

  // Limits again at the end: a bound takes the best rate seen in the run.
  const after = await measureLimits();
  const best: LimitRates = {
    gemmGflops: Math.max(rates.gemmGflops, after.gemmGflops),
    int8Gops: Math.max(rates.int8Gops, after.int8Gops),
    streamGBs: Math.max(rates.streamGBs, after.streamGBs),
  };

  const bounds = new Map(ours.map((r) => [r.precision, boundsFor(r.precision, r.conversion, best)]));
  const runs: Record<string, unknown>[] = [];
  const lines: string[] = [];
  lines.push(`# BLIP-2 OPT-2.7b on ${m.cpu} (${m.cores} cores; ${featureSummary(m)}), ${THREADS} threads, ${started.toISOString()}`);
  lines.push(`machine limits: fp32 GEMM ${best.gemmGflops.toFixed(0)} GFLOP/s, int8 GEMM ${best.int8Gops.toFixed(0)} GOP/s, weight streaming ${best.streamGBs.toFixed(1)} GB/s`);
  lines.push(`default settings: ${JSON.stringify(defaultCaptionSettings())}; second question: "${BENCH_QUESTION}" with a ${QUESTION_TOKENS}-token answer`);
  lines.push('');
  lines.push('Each time: median, then (bound, ratio). Captions: 20 new tokens, greedy.');
  lines.push('| engine | precision | load cold / warm (first caption after it) | vision | prefill | per token | 20-token caption | default settings | second question | peak RSS (greedy / defaults) | conversion | cpu share | logits cosine to fp32 |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of ours) {
    const b = bounds.get(r.precision)!;
    const g = r.greedy?.value;
    const d = r.defaults?.value;
    const gr = g?.runs ?? [];
    const perToken = median(gr.map((x) => x.decodeMs / Math.max(1, x.steps)));
    const caption = median(gr.map((x) => x.totalMs));
    const def = median((d?.runs ?? []).map((x) => x.totalMs));
    const question = median((d?.questions ?? []).map((x) => x.totalMs));
    const peakDefault = r.defaults?.peakRssMB;
    const row = {
      engine: 'blip2',
      precision: r.precision,
      caption_ms: caption,
      default_settings_caption_ms: def,
      second_question_ms: question,
      load_ms: r.warmLoadMs,
      cold_load_ms: r.coldLoadMs,
      // The first caption after a load reads the memory-mapped weights in (from the page cache, or the disk).
      first_caption_after_load_ms: g?.warmup.totalMs,
      peak_rss_mb: peakDefault,
      peak_rss_greedy_mb: r.greedy?.peakRssMB,
      preprocess_ms: median(gr.map((x) => x.preprocessMs)),
      vision_ms: median(gr.map((x) => x.visionMs)),
      prefill_ms: median(gr.map((x) => x.prefillMs)),
      decode_ms_per_token: perToken,
      caption_runs_ms: gr.map((x) => x.totalMs),
      default_settings_runs_ms: (d?.runs ?? []).map((x) => x.totalMs),
      second_question_runs_ms: (d?.questions ?? []).map((x) => x.totalMs),
      warm_load_runs_ms: r.warmLoadRunsMs,
      cpu_share: median(gr.map((x) => x.cpuShare)),
      first_step_logits_cosine_to_fp32: cosineToFp32(r.precision),
      conversion: { seconds: r.conversion.seconds, peak_rss_mb: r.conversion.peakRssMB, bytes_on_disk: r.conversion.bytesOnDisk, measured_in_this_run: !r.conversion.cached },
      quiet: r.quiet,
      errors: [r.greedy, r.defaults].filter((x) => x && !x.ok).map((x) => x!.error),
    };
    runs.push(row);
    const gib = (mb: number | undefined) => (mb === undefined ? '-' : `${(mb / 1024).toFixed(2)} GiB`);
    lines.push(
      `| blip2 | ${r.precision} | ${fmt(r.coldLoadMs)} / ${fmt(r.warmLoadMs)} (${fmt(row.first_caption_after_load_ms)}) | ${withRatio(row.vision_ms, b.visionMs)} | ${withRatio(row.prefill_ms, b.prefillMs)} | ${withRatio(perToken, b.stepMs(1))} | ${withRatio(caption, b.captionMs)} | ${withRatio(def, b.defaultSettingsMs)} | ${withRatio(question, b.questionMs)} (${(question / caption).toFixed(2)} of the caption) | ${gib(r.greedy?.peakRssMB)} / ${gib(peakDefault)} | ${r.conversion.seconds.toFixed(0)} s, ${gib(r.conversion.peakRssMB)}, ${gib(r.conversion.bytesOnDisk / 2 ** 20)} on disk${r.conversion.cached ? ' (earlier run)' : ''} | ${row.cpu_share.toFixed(2)} | ${row.first_step_logits_cosine_to_fp32?.toFixed(6) ?? '-'} |`,
    );
  }
  for (const pr of peerResults.results) {
    if ('skipped' in pr) {
      lines.push(`| transformers | ${pr.precision} | skipped: ${pr.skipped} |`);
      runs.push({ engine: 'transformers', precision: pr.precision, skipped: pr.skipped });
      continue;
    }
    runs.push({ ...pr });
    lines.push(`| transformers | ${pr.precision} | ${fmt(pr.load_ms)} | | | | ${fmt(pr.caption_ms)} | ${fmt(pr.default_settings_caption_ms)} | ${fmt(pr.second_question_ms)} | ${(pr.peak_rss_mb / 1024).toFixed(2)} GiB | | |`);
  }
  if (peerResults.note) lines.push('', peerResults.note);
  const peerRows = peerResults.results.filter((x): x is PeerResult => !('skipped' in x));
  if (peerRows.length) {
    lines.push('', 'Ours over theirs (time ratio, below 1 is faster):');
    for (const r of runs.filter((x) => x.engine === 'blip2')) {
      lines.push(`- ${r.precision}: ${peerRows.map((t) => `vs ${t.precision} caption ${((r.caption_ms as number) / t.caption_ms).toFixed(2)}, default settings ${((r.default_settings_caption_ms as number) / t.default_settings_caption_ms).toFixed(2)}, load ${((r.load_ms as number) / t.load_ms).toFixed(2)}`).join('; ')}`);
    }
  }
  const report = lines.join('\n');
  process.stdout.write('\n' + report + '\n');

  const boundsJson = {
    gemm_gflops: best.gemmGflops,
    int8_gops: best.int8Gops,
    stream_gbps: best.streamGBs,
    caption_bound_ms: Object.fromEntries([...bounds].map(([p, b]) => [p, b.captionMs])),
    default_settings_bound_ms: Object.fromEntries([...bounds].map(([p, b]) => [p, b.defaultSettingsMs])),
    second_question_bound_ms: Object.fromEntries([...bounds].map(([p, b]) => [p, b.questionMs])),
    vision_bound_ms: Object.fromEntries([...bounds].map(([p, b]) => [p, b.visionMs])),
    prefill_bound_ms: Object.fromEntries([...bounds].map(([p, b]) => [p, b.prefillMs])),
    step_bound_ms: Object.fromEntries([...bounds].map(([p, b]) => [p, b.stepMs(1)])),
    limits_at_start: rates,
    limits_at_end: after,
  };
  const out = process.env.BLIP2_BENCH_OUT ?? path.join(ROOT, 'bench/results', resultFileName(m, started));
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({
    machine: { ...m, loadavg_at_start: loadavg() },
    settings: { default_caption: defaultCaptionSettings(), caption_tokens: CAPTION_TOKENS, question: BENCH_QUESTION, question_tokens: QUESTION_TOKENS, repeat: REPEAT },
    bounds: boundsJson,
    runs,
    report,
  }, null, 2) + '\n');
  log(`\nwritten: ${path.relative(ROOT, out)}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});
