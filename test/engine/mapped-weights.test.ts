// Only one of the two large graphs runs at a time, so each one's weights leave the process's resident memory while
// the other runs, and come back, unchanged, when it runs again. What is resident is read from the kernel
// (/proc/self/smaps), what comes back is checked against the first run's outputs.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { readManifest } from '../../server/src/engine/convert/manifest';
import type { Precision } from '../../server/src/engine/convert/precision';
import { Blip2Pipeline } from '../../server/src/engine/pipeline';
import { MappedWeights } from '../../server/src/engine/runtime/mapped-weights';
import { imagePath } from '../helpers/reference';
import { convertedTiny } from '../helpers/tiny-model';

/** Every weight file of a graph under the model folder: the converter's `_data` and optimized copies' `.data`. */
function weightFiles(dir: string, graph: string): string[] {
  const base = path.basename(graph);
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => path.basename(f) === `${base}_data` || path.basename(f) === `${base}.data`)
    .map((f) => fs.realpathSync(path.join(dir, f)));
}

/** kB of `files` resident in this process, and how many mappings of them there are, as the kernel reports them. */
function resident(files: string[]): { kB: number; mappings: number } {
  let kB = 0;
  let mappings = 0;
  let counting = false;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      counting = files.includes(header[1]);
      if (counting) mappings++;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && counting) kB += Number(rss[1]);
  }
  return { kB, mappings };
}

/** A tiny model loaded as the extension loads it (optimized copies made), with its two large graphs' weight files. */
async function loaded(precision: Precision): Promise<{ pipeline: Blip2Pipeline; vision: string[]; decoder: string[] }> {
  const dir = await convertedTiny(precision);
  const graphs = readManifest(dir).graphs;
  const pipeline = await Blip2Pipeline.load(dir, { device: 'cpu', threads: 1 });
  return { pipeline, vision: weightFiles(dir, graphs.visionEncoder), decoder: weightFiles(dir, graphs.decoder) };
}

describe('the idle graph’s weights are dropped from memory and come back unchanged', { skip: process.platform !== 'linux' && 'reads /proc' }, () => {
  it('this platform can release mapped pages (koffi and /proc/self/smaps)', () => {
    assert.equal(MappedWeights.supported, true);
  });

  for (const precision of ['int4', 'int8'] as const) {
    it(`${precision}: the decoder's weights leave during the vision encoder's run and the vision encoder's during decoding`, async () => {
      const { vision, decoder, pipeline } = await loaded(precision);
      try {
        const settings = { maxNewTokens: 4, minNewTokens: 4 };
        // The first caption: both graphs have run once.
        const [first] = await pipeline.encodeImages([imagePath('cat.png')]);
        const caption = await pipeline.generate([{ image: first, prompt: '' }], settings);
        assert.ok(resident(vision).mappings > 0, `onnxruntime maps none of ${vision.join(', ')}`);
        assert.ok(resident(decoder).kB > 0, 'the decoder just ran, yet none of its weights are resident');
        assert.equal(resident(vision).kB, 0, 'the vision encoder is idle, yet its weights are resident');

        const [again] = await pipeline.encodeImages([imagePath('cat.png')]);
        assert.equal(resident(decoder).kB, 0, 'the decoder is idle, yet its weights are resident');
        assert.deepEqual(again.features, first.features);
        const second = await pipeline.generate([{ image: again, prompt: '' }], settings);
        assert.deepEqual(second.answers[0].tokenIds, caption.answers[0].tokenIds);
        assert.ok(resident(decoder).kB > 0);
      } finally {
        await pipeline.dispose();
      }
    });
  }

  it('fp32: float weights stay resident (faulting gigabytes in again at every image costs more than it saves)', async () => {
    const { vision, decoder, pipeline } = await loaded('fp32');
    try {
      const [image] = await pipeline.encodeImages([imagePath('cat.png')]);
      await pipeline.generate([{ image, prompt: '' }], { maxNewTokens: 2, minNewTokens: 2 });
      assert.ok(resident(vision).kB > 0 && resident(decoder).kB > 0, 'float weights were released');
    } finally {
      await pipeline.dispose();
    }
  });
});
