// What dropping the idle graph's weights from memory (runtime/mapped-weights.ts) costs a caption: one process,
// captions of a new image each time, alternately with the release as the engine does it and with it turned off,
// so both halves see the same machine. Prints each caption and the medians of time and peak (the process's VmHWM,
// reset before each caption).
//
//   node --import tsx test/bench/release-ab.ts --model DIR [--captions 16] [--threads 2] [--greedy]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Blip2Pipeline } from '../../server/src/engine/pipeline';
import { MappedWeights } from '../../server/src/engine/runtime/mapped-weights';
import { imagePath } from '../helpers/reference';
import { arg, defaultCaptionSettings, memoryMB } from './bench-engine';

const IMAGES_DIR = path.dirname(imagePath('cat.png'));

const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1];

async function main(args: string[]): Promise<void> {
  let release = true;
  const engineRelease = MappedWeights.prototype.release;
  const graphs = new Set<MappedWeights>();
  MappedWeights.prototype.release = function (this: MappedWeights) {
    graphs.add(this);
    if (release) engineRelease.call(this);
  };
  const pipeline = await Blip2Pipeline.load(path.resolve(arg(args, '--model')), { device: 'cpu', threads: Number(arg(args, '--threads', '2')) });
  const settings = args.includes('--greedy') ? { maxNewTokens: 20, minNewTokens: 20 } : defaultCaptionSettings();
  const images = fs.readdirSync(IMAGES_DIR).sort().map((f) => path.join(IMAGES_DIR, f));
  const totals: Record<'kept' | 'released', number[]> = { kept: [], released: [] };
  const peaks: Record<'kept' | 'released', number[]> = { kept: [], released: [] };
  try {
    const captions = Number(arg(args, '--captions', '16'));
    for (let i = 0; i < captions; i++) {
      release = i % 2 === 1;
      const mode = release ? 'released' : 'kept';
      // A released caption after a kept one would start its peak from both graphs resident; the engine would
      // release each one before its peak anyway (the decoder before the encoder runs, the encoder after).
      if (release) for (const g of graphs) engineRelease.call(g);
      fs.writeFileSync('/proc/self/clear_refs', '5');
      const t0 = performance.now();
      const [image] = await pipeline.encodeImages([images[i % images.length]]);
      const visionMs = performance.now() - t0;
      const { timings } = await pipeline.generate([{ image, prompt: '' }], settings);
      const ms = performance.now() - t0;
      const peak = memoryMB().hwm;
      // The first two warm both modes up (first faults, the optimized copies' pages read from disk).
      if (i >= 2) {
        totals[mode].push(ms);
        peaks[mode].push(peak);
      }
      const load = fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
      console.log(`${i} ${mode}: ${ms.toFixed(0)} ms (vision ${visionMs.toFixed(0)}, prefill ${timings.prefillMs.toFixed(0)}, ${(timings.decodeMs / timings.steps).toFixed(1)} ms/step x ${timings.steps}), peak ${peak.toFixed(0)} MiB, load ${load}`);
    }
  } finally {
    await pipeline.dispose();
  }
  for (const mode of ['kept', 'released'] as const) {
    console.log(`${mode}: median caption ${median(totals[mode]).toFixed(0)} ms over ${totals[mode].length}, median peak ${median(peaks[mode]).toFixed(0)} MiB`);
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : String(e));
  process.exitCode = 1;
});
