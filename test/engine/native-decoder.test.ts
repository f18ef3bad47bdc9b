// The native int4 decoder (server/native/opt-decoder.c) against onnxruntime's decoder graph over the same 4-bit
// weights: a random checkpoint of the tiny fixture's layout with a language model of sizes the kernel tiles
// (hidden 256, 4 heads, ffn 512), converted at int4 with both forms of the decoder's weights (a conversion for use
// stores only the one this machine runs; the last tests check that, and the other form derived from it). The tiny
// fixture itself (hidden 40) keeps onnxruntime's decoder.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeRandomCheckpoint } from '../../server/src/engine/checkpoint/random-checkpoint';
import { convertCheckpoint } from '../../server/src/engine/convert/convert';
import { onnxDecoderGraph } from '../../server/src/engine/convert/decoder-forms';
import { readManifest } from '../../server/src/engine/convert/manifest';
import { DamagedModelError } from '../../server/src/engine/errors';
import { onnx } from 'onnx-proto';
import { Blip2Model, type LoadOptions } from '../../server/src/engine/runtime/blip2-model';
import { NATIVE_KERNELS, nativeDecoderAvailable, nativeKernel } from '../../server/src/engine/runtime/native-decoder';
import { tinyCheckpointDir } from '../helpers/paths';
import { convertedTiny, cosine, maxAbsDiff } from '../helpers/tiny-model';

const HIDDEN = 256;
const QUERIES = 32;

/**
 * Logits of a prefill and three steps of three prompt rows (the second left-padded by two), with the rows reordered
 * between steps as beam search does, from the decoder `decoder` picks.
 */
async function run(dir: string, decoder: LoadOptions['decoder']): Promise<{ kind: string; kernel?: string; logits: Float32Array[] }> {
  const model = await Blip2Model.load(dir, { device: 'cpu', threads: 2, decoder });
  try {
    const image = model.imageTokenId;
    const ids = [0, 1, 2].map((r) => Array.from({ length: 40 }, (_, i) => (r === 1 && i < 2 ? 1 : i < QUERIES + (r === 1 ? 2 : 0) ? image : 10 + r * 7 + i)));
    const mask = ids.map((row, r) => row.map((_, i) => (r === 1 && i < 2 ? 0 : 1)));
    const features = Float32Array.from({ length: 3 * QUERIES * HIDDEN }, (_, i) => Math.sin(i * 0.37));
    const session = model.startDecoding(ids, mask, features, { capacity: 48 });
    const logits = [await session.prefill()];
    for (const token of [5, 7, 9]) {
      logits.push(await session.next([token, token + 1, token + 2]));
      session.reorder([1, 0, 0]);
    }
    return { kind: model.decoderKind, kernel: model.nativeKernel, logits };
  } finally {
    await model.dispose();
  }
}

describe('native int4 decoder', () => {
  let root: string;
  let dir: string;

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-native-'));
    const configDir = path.join(root, 'config');
    fs.mkdirSync(configDir);
    for (const f of fs.readdirSync(tinyCheckpointDir)) if (/\.json$/.test(f)) fs.copyFileSync(path.join(tinyCheckpointDir, f), path.join(configDir, f));
    const config = JSON.parse(fs.readFileSync(path.join(configDir, 'config.json'), 'utf8')) as { text_config: Record<string, unknown> };
    Object.assign(config.text_config, { hidden_size: HIDDEN, word_embed_proj_dim: HIDDEN, num_attention_heads: 4, ffn_dim: 512, num_hidden_layers: 2 });
    fs.writeFileSync(path.join(configDir, 'config.json'), JSON.stringify(config));
    await writeRandomCheckpoint({ configDir, outDir: path.join(root, 'checkpoint'), seed: 3, dtype: 'F32' });
    dir = path.join(root, 'int4');
    await convertCheckpoint({ checkpointDir: path.join(root, 'checkpoint'), outDir: dir, precision: 'int4', decoderForms: ['native', 'onnxruntime'] });
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('an int4 conversion writes the native weights beside the graphs and records their checksum', () => {
    const manifest = readManifest(dir);
    assert.equal(manifest.graphs.nativeDecoder, 'onnx/decoder_native_q4.bin');
    const recorded = manifest.files!.find((f) => f.name === manifest.graphs.nativeDecoder);
    assert.ok(recorded, 'not in the recorded files');
    assert.equal(recorded.bytes, fs.statSync(path.join(dir, manifest.graphs.nativeDecoder)).size);
  });

  it("computes onnxruntime's logits over the same weights: prompts, left padding, steps and reordered rows", async () => {
    const reference = await run(dir, 'onnxruntime');
    const native = await run(dir, 'portable');
    assert.equal(reference.kind, 'onnxruntime');
    assert.equal(native.kind, 'native');
    for (let i = 0; i < reference.logits.length; i++) {
      assert.equal(native.logits[i].length, reference.logits[i].length);
      // Both quantize the activations to int8 per block, with their own rounding: close, not equal.
      assert.ok(cosine(native.logits[i], reference.logits[i]) > 0.9999, `run ${i}: cosine ${cosine(native.logits[i], reference.logits[i])}`);
      const scale = Math.max(...reference.logits[i].map(Math.abs));
      const worst = maxAbsDiff(reference.logits[i], native.logits[i]);
      assert.ok(worst < 0.03 * scale, `run ${i}: largest difference ${worst} against logits up to ${scale}`);
    }
  });

  const runs = (kernel: 'avx2' | 'avx512-vnni') => {
    const widest = nativeKernel();
    return widest && NATIVE_KERNELS.indexOf(widest) >= NATIVE_KERNELS.indexOf(kernel) ? false : `this CPU has no ${kernel} (or the library is not built)`;
  };
  for (const [kernel, decoder] of [['avx512-vnni', 'native'], ['avx2', 'avx2']] as const) {
    it(`the ${kernel} kernel computes what the portable one does`, { skip: runs(kernel) }, async () => {
      const portable = await run(dir, 'portable');
      const vector = await run(dir, decoder);
      assert.equal(portable.kernel, 'portable');
      assert.equal(vector.kernel, kernel);
      for (let i = 0; i < portable.logits.length; i++) {
        // The same integer dot products (their outputs agree to 4e-7 per linear), but the kernels' float sums round
        // differently, and a rounding that moves an activation across an int8 step changes the next layers' input:
        // as close as onnxruntime's, not equal.
        assert.ok(cosine(portable.logits[i], vector.logits[i]) > 0.9999, `run ${i}: cosine ${cosine(portable.logits[i], vector.logits[i])}`);
        const scale = Math.max(...portable.logits[i].map(Math.abs));
        const worst = maxAbsDiff(portable.logits[i], vector.logits[i]);
        assert.ok(worst < 0.03 * scale, `run ${i}: largest difference ${worst} against logits up to ${scale}`);
      }
    });
  }

  it('a damaged native weights file is not used: onnxruntime answers, as it would without one', async () => {
    const copy = path.join(root, 'damaged');
    fs.cpSync(dir, copy, { recursive: true });
    const file = path.join(copy, readManifest(copy).graphs.nativeDecoder!);
    fs.truncateSync(file, 4096);
    const { kind, logits } = await run(copy, 'auto');
    assert.equal(kind, 'onnxruntime');
    assert.ok(logits.every((l) => l.every(Number.isFinite)));
    await assert.rejects(run(copy, 'native'), /the native decoder cannot open .*: an offset is outside the file/);
  });

  const nativeHere = nativeDecoderAvailable() ? false : 'this CPU runs no vector kernel of the native decoder (or the library is not built)';

  it('a conversion for use stores the decoder once, in the native form, and onnxruntime\'s is derived from it byte for byte', { skip: nativeHere }, async () => {
    const single = path.join(root, 'int4-single');
    await convertCheckpoint({ checkpointDir: path.join(root, 'checkpoint'), outDir: single, precision: 'int4' });
    const manifest = readManifest(single);
    assert.deepEqual(manifest.decoderForms, ['native']);
    assert.ok(fs.existsSync(path.join(single, manifest.graphs.nativeDecoder!)));
    assert.equal(fs.existsSync(path.join(single, manifest.graphs.decoder)), false, 'the decoder graph is stored for onnxruntime too');
    assert.equal(manifest.files!.some((f) => f.name.startsWith('onnx/decoder_model_merged')), false);
    // The same native weights as the two-form conversion's.
    assert.ok(fs.readFileSync(path.join(single, manifest.graphs.nativeDecoder!)).equals(fs.readFileSync(path.join(dir, manifest.graphs.nativeDecoder!))));

    const derived = await onnxDecoderGraph(single, manifest);
    const weights = (graph: string) => {
      const model = onnx.ModelProto.decode(fs.readFileSync(graph));
      const data = fs.readFileSync(`${graph}_data`);
      return new Map(model.graph!.initializer!.map((t) => {
        const kv = Object.fromEntries((t.externalData ?? []).map((e) => [e.key, e.value]));
        const bytes = kv.offset !== undefined ? data.subarray(Number(kv.offset), Number(kv.offset) + Number(kv.length)) : Buffer.from(t.rawData!);
        return [t.name!, bytes] as const;
      }));
    };
    const written = weights(path.join(dir, manifest.graphs.decoder));
    const fromNative = weights(derived);
    assert.deepEqual([...fromNative.keys()].sort(), [...written.keys()].sort());
    for (const [name, bytes] of written) assert.ok(bytes.equals(fromNative.get(name)!), `${name} differs`);
    // And onnxruntime computes with it what it computes with the converter's.
    const a = await run(dir, 'onnxruntime');
    const b = await run(single, 'onnxruntime');
    for (let i = 0; i < a.logits.length; i++) assert.deepEqual(b.logits[i], a.logits[i]);
  });

  it('a damaged native weights file that is the only copy is a damaged model, not a fallback', { skip: nativeHere }, async () => {
    const single = path.join(root, 'int4-damaged-single');
    fs.cpSync(path.join(root, 'int4-single'), single, { recursive: true });
    fs.rmSync(path.join(single, 'onnx', 'decoder_model_merged_q4.onnx'), { force: true });
    fs.truncateSync(path.join(single, readManifest(single).graphs.nativeDecoder!), 4096);
    await assert.rejects(run(single, 'auto'), (e) => e instanceof DamagedModelError && /decoder_native_q4\.bin/.test(e.message));
  });

  it("the tiny fixture's sizes do not suit the kernel: no native weights, onnxruntime's decoder", async () => {
    const tiny = await convertedTiny('int4');
    assert.equal(readManifest(tiny).graphs.nativeDecoder, undefined);
    const model = await Blip2Model.load(tiny, { device: 'cpu', threads: 1 });
    assert.equal(model.decoderKind, 'onnxruntime');
    await model.dispose();
  });
});
