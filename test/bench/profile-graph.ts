// Where one graph of a converted model spends its time, by operator type, from onnxruntime's own profiler: the
// measurement behind the levers in docs/performance.md.
//
//   node --import tsx test/bench/profile-graph.ts vision|decoder MODEL_DIR_OR_ONNX_FILE [--runs 5] [--past 40] [--tokens 1] [--threads 2]
//
// vision: one image (pixel values of a flat grey) through the vision session. decoder: one pass over `--tokens`
// new positions (1: a decoding step; 33 with `--past 0`: the first pass over the image tokens and BOS) after
// `--past` cached positions (a KV buffer with room for them and the new ones, as the runtime gives it). The first
// run is a warm-up; the table is the mean kernel time per run over the others.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { readJson } from '../../server/src/engine/checkpoint/checkpoint';
import { parseBlip2Config } from '../../server/src/engine/checkpoint/config';
import { readManifest } from '../../server/src/engine/convert/manifest';
import { kvHeadSize } from '../../server/src/engine/graphs/decoder';

function arg(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
}

async function main(argv: string[]): Promise<void> {
  const [which, target, ...args] = argv;
  if ((which !== 'vision' && which !== 'decoder') || !target) throw new Error('usage: profile-graph.ts vision|decoder MODEL_DIR_OR_ONNX_FILE [--runs N] [--past N] [--tokens N] [--threads N]');
  const runs = Number(arg(args, '--runs', '5'));
  const past = Number(arg(args, '--past', '40'));
  const tokens = Number(arg(args, '--tokens', '1'));
  const threads = Number(arg(args, '--threads', '2'));
  // A graph file inside a model folder (its onnx/ folder or an optimized copy), or the model folder itself.
  let modelDir = path.resolve(target);
  while (!fs.existsSync(path.join(modelDir, 'config.json')) && path.dirname(modelDir) !== modelDir) modelDir = path.dirname(modelDir);
  const file = target.endsWith('.onnx') ? target : path.join(target, which === 'vision' ? readManifest(target).graphs.visionEncoder : readManifest(target).graphs.decoder);
  const cfg = parseBlip2Config(readJson(path.join(modelDir, 'config.json')));
  const prefix = path.join(os.tmpdir(), `blip2-profile-${process.pid}`);
  const session = await ort.InferenceSession.create(file, {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: file.includes(`${path.sep}optimized${path.sep}`) ? 'disabled' : 'all',
    logSeverityLevel: 3,
    enableProfiling: true,
    profileFilePrefix: prefix,
  });
  const feeds: Record<string, ort.Tensor> = {};
  const fetches: Record<string, ort.Tensor | null> = {};
  if (which === 'vision') {
    const s = cfg.vision.imageSize;
    feeds.pixel_values = new ort.Tensor('float32', new Float32Array(3 * s * s).fill(0.1), [1, 3, s, s]);
    fetches.image_features = null;
  } else {
    const t = cfg.text;
    const heads = t.numHeads;
    const headSize = kvHeadSize(t.hiddenSize / heads);
    feeds.inputs_embeds = new ort.Tensor('float32', new Float32Array(tokens * t.hiddenSize).fill(0.01), [1, tokens, t.hiddenSize]);
    feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(past + tokens).fill(1n), [1, past + tokens]);
    feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from({ length: tokens }, (_, i) => BigInt(past + i)), [1, tokens]);
    for (let l = 0; l < t.numLayers; l++) {
      for (const kv of ['key', 'value']) {
        const cache = new ort.Tensor('float32', new Float32Array(heads * (past + tokens) * headSize), [1, heads, past + tokens, headSize]);
        feeds[`past_key_values.${l}.${kv}`] = cache;
      }
    }
  }
  const wall: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const t0 = performance.now();
    await session.run(feeds, which === 'vision' ? (fetches as Record<string, ort.Tensor>) : undefined);
    wall.push(performance.now() - t0);
  }
  session.endProfiling();
  await session.release();
  const profile = fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith(path.basename(prefix))).map((f) => path.join(os.tmpdir(), f))[0];
  const events = JSON.parse(fs.readFileSync(profile, 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
  fs.rmSync(profile, { force: true });
  // Kernel events of every run; the warm-up's share is removed by scaling with the runs that are counted.
  const byOp = new Map<string, number>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const op = e.args?.op_name ?? '?';
    byOp.set(op, (byOp.get(op) ?? 0) + e.dur / 1000 / (runs + 1));
  }
  const total = [...byOp.values()].reduce((a, b) => a + b, 0);
  const timed = wall.slice(1).sort((a, b) => a - b);
  process.stdout.write(`${which} of ${file}: ${runs} runs after a warm-up, wall median ${timed[timed.length >> 1].toFixed(1)} ms, kernels ${total.toFixed(1)} ms per run\n`);
  for (const [op, ms] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 12)) process.stdout.write(`  ${op.padEnd(28)} ${ms.toFixed(1).padStart(8)} ms  ${((100 * ms) / total).toFixed(1).padStart(5)}%\n`);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`profile-graph: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
