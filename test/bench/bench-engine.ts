// One measurement of our engine for `npm run bench` (test/bench/bench.ts), in a process of its own so that its
// peak RSS is its own. Prints progress on stderr and one JSON object on the last line of stdout.
//
//   node --import tsx test/bench/bench-engine.ts load    --model DIR [--threads 2]
//   node --import tsx test/bench/bench-engine.ts greedy  --model DIR --images A,B,... [--threads 2] [--tokens 20]
//   node --import tsx test/bench/bench-engine.ts default --model DIR --images A,B,... [--threads 2] [--question-tokens 5]
//
// --prepack on|off overrides whether onnxruntime repacks the weights at load (by default only quantized models are).
// --decoder auto|onnxruntime|native|avx2|portable picks who computes the int4 or int8 decoder (LoadOptions.decoder;
// auto by default).
//
// load: opens the model as the extension does (Blip2Pipeline.load) and closes it.
// greedy: a warm-up caption of the first image, then one 20-token caption (min = max, so random weights decode as
//   long as real ones) of each further image, timed stage by stage.
// default: a warm-up, then per further image a caption with the extension's default settings (a new image each
//   time, so nothing is cached) followed by a question about the same image with a short answer (min = max =
//   --question-tokens): the second request about an image, which starts from the image's cached first pass.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Blip2Pipeline, type EncodedImage, type GenerationSettings } from '../../server/src/engine/pipeline';
import type { LoadOptions } from '../../server/src/engine/runtime/blip2-model';
import { generationSettingsFor } from '../../server/src/inference/generation-settings';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/settings';

export const BENCH_QUESTION = 'Question: what is in the picture? Answer:';

/** The settings a hover caption runs with by default: the extension's, as the inference service maps them. */
export function defaultCaptionSettings(): GenerationSettings {
  return generationSettingsFor(DEFAULT_SETTINGS.generation, 'caption');
}

/** A question with the extension's default answer settings, its answer held to `tokens` new tokens. */
export function defaultQuestionSettings(tokens: number): GenerationSettings {
  return { ...generationSettingsFor(DEFAULT_SETTINGS.generation, 'answer'), maxNewTokens: tokens, minNewTokens: tokens };
}

export function arg(args: string[], name: string, fallback?: string): string {
  const i = args.indexOf(name);
  const v = i >= 0 ? args[i + 1] : fallback;
  if (v === undefined) throw new Error(`${name} is required`);
  return v;
}

export function memoryMB(): { rss: number; hwm: number; anon: number; file: number } {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM'), anon: kb('RssAnon'), file: kb('RssFile') };
}

/** Wall time and this process's share of `threads` cores over it. */
async function timed<T>(threads: number, fn: () => Promise<T>): Promise<{ value: T; ms: number; cpuShare: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await fn();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { value, ms, cpuShare: (cpu.user + cpu.system) / 1000 / (ms * threads) };
}

export interface StageTimes {
  totalMs: number;
  prefixReused?: boolean;
  preprocessMs: number;
  visionMs: number;
  prefillMs: number;
  decodeMs: number;
  steps: number;
  tokens: number;
  cpuShare: number;
}

/**
 * One request, image file to text. `seen` is the encoding of an image already captioned: the inference service keeps
 * image encodings by content, so a second request about an image starts from it, as here.
 */
async function caption(pipeline: Blip2Pipeline, image: string, settings: GenerationSettings, prompt: string, threads: number, seen?: EncodedImage): Promise<StageTimes & { prefixReused: boolean; encoded: EncodedImage }> {
  const r = await timed(threads, async () => {
    const [encoded] = seen ? [seen] : await pipeline.encodeImages([image]);
    const { answers, timings } = await pipeline.generate([{ image: encoded, prompt }], settings);
    return { encoded, answers, timings };
  });
  const { encoded, answers, timings } = r.value;
  return {
    encoded,
    totalMs: r.ms,
    preprocessMs: seen ? 0 : encoded.preprocessMs,
    visionMs: seen ? 0 : encoded.visionMs,
    prefillMs: timings.prefillMs,
    decodeMs: timings.decodeMs,
    steps: timings.steps,
    tokens: answers[0].tokenIds.length,
    cpuShare: r.cpuShare,
    prefixReused: timings.prefixReused,
  };
}

/** The first-step logits of a plain caption, for comparing precisions (the bench's fidelity column). */
async function firstStepLogits(pipeline: Blip2Pipeline, image: string): Promise<Uint8Array> {
  const [encoded] = await pipeline.encodeImages([image]);
  const model = pipeline.model;
  const q = model.config.numQueryTokens;
  const ids = [[...Array<number>(q).fill(model.imageTokenId), model.generation.bosTokenId]];
  const session = model.startDecoding(ids, [ids[0].map(() => 1)], encoded.features, { capacity: ids[0].length });
  try {
    const logits = await session.prefill();
    return new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength);
  } finally {
    session.dispose();
  }
}

/** A request's times without the image encoding it carries (which would swell the JSON). */
function times({ encoded: _encoded, ...rest }: StageTimes & { encoded: EncodedImage }): StageTimes {
  return rest;
}

async function main(argv: string[]): Promise<void> {
  const [mode, ...args] = argv;
  const dir = path.resolve(arg(args, '--model'));
  const threads = Number(arg(args, '--threads', '2'));
  const before = memoryMB();
  const prepack = args.includes('--prepack') ? arg(args, '--prepack') === 'on' : undefined;
  const decoder = args.includes('--decoder') ? (arg(args, '--decoder') as LoadOptions['decoder']) : undefined;
  const load = await timed(threads, () => Blip2Pipeline.load(dir, { device: 'cpu', threads, prepack, decoder }));
  const pipeline = load.value;
  const afterLoad = memoryMB();
  process.stderr.write(`  loaded in ${(load.ms / 1000).toFixed(2)} s, RSS ${afterLoad.rss.toFixed(0)} MiB\n`);
  const result: Record<string, unknown> = { mode, decoder: pipeline.model.decoderKind, nativeKernel: pipeline.model.nativeKernel, loadMs: load.ms, memoryBeforeLoad: before, memoryAfterLoad: afterLoad };
  try {
    if (mode === 'greedy' || mode === 'default') {
      const images = arg(args, '--images').split(',');
      const settings = mode === 'greedy' ? { maxNewTokens: Number(arg(args, '--tokens', '20')), minNewTokens: Number(arg(args, '--tokens', '20')) } : defaultCaptionSettings();
      const questionTokens = Number(arg(args, '--question-tokens', '5'));
      const warm = await caption(pipeline, images[0], settings, '', threads);
      process.stderr.write(`  warm-up caption ${warm.totalMs.toFixed(0)} ms\n`);
      const logitsOut = args.includes('--logits-out') ? arg(args, '--logits-out') : undefined;
      if (logitsOut) fs.writeFileSync(logitsOut, await firstStepLogits(pipeline, images[0]));
      const runs: StageTimes[] = [];
      const questions: StageTimes[] = [];
      for (const image of images.slice(1)) {
        const r = await caption(pipeline, image, settings, '', threads);
        runs.push(times(r));
        let line = `  ${path.basename(image)}: ${r.totalMs.toFixed(0)} ms (vision ${r.visionMs.toFixed(0)}, prefill ${r.prefillMs.toFixed(0)}, ${(r.decodeMs / Math.max(1, r.steps)).toFixed(1)} ms/step x ${r.steps}), cpu share ${r.cpuShare.toFixed(2)}`;
        if (mode === 'default') {
          const q = await caption(pipeline, image, defaultQuestionSettings(questionTokens), BENCH_QUESTION, threads, r.encoded);
          questions.push(times(q));
          line += `; question ${q.totalMs.toFixed(0)} ms (prefix ${q.prefixReused ? 'reused' : 'NOT reused'}, prefill ${q.prefillMs.toFixed(0)})`;
        }
        process.stderr.write(line + '\n');
      }
      Object.assign(result, { settings, warmup: times(warm), runs, questions, questionTokens });
    }
  } finally {
    await pipeline.dispose();
  }
  result.memoryAtEnd = memoryMB();
  result.loadavg = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  process.stdout.write(JSON.stringify(result) + '\n');
}

if (path.resolve(process.argv[1] ?? '') === __filename) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`bench-engine: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  });
}
