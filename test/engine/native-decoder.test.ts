// The native decoder (server/native/opt-decoder.c) against onnxruntime's decoder graph over the same 4-bit and 8-bit
// weights: a random checkpoint of the tiny fixture's layout with a language model of sizes the kernel tiles (hidden
// 256, 4 heads, ffn 512), converted at int4 and at int8 with both forms of the decoder's weights (a conversion for use
// stores only the one this machine runs; tests below check that, and the other form derived from it). The tiny
// fixture itself (hidden 40) keeps onnxruntime's decoder. Then each kernel on one linear of chosen codes and
// activations, the extremes included, against exact sums.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { writeRandomCheckpoint } from '../../server/src/engine/checkpoint/random-checkpoint';
import { convertCheckpoint } from '../../server/src/engine/convert/convert';
import { onnx } from 'onnx-proto';
import { onnxDecoderGraph } from '../../server/src/engine/convert/decoder-forms';
import { readManifest } from '../../server/src/engine/convert/manifest';
import { DamagedModelError } from '../../server/src/engine/errors';
import { readNativeHeader } from '../../server/src/engine/convert/native-weights';
import { packColumnInterleaved, type BlockQuantized } from '../../server/src/engine/graphs/quantize';
import { Blip2Model, type LoadOptions } from '../../server/src/engine/runtime/blip2-model';
import { NATIVE_KERNELS, nativeDecoderAvailable, nativeKernel, nativeLinear, type NativeKernel } from '../../server/src/engine/runtime/native-decoder';
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

/** Both quantize the activations to int8 per block, with their own rounding: close, not equal. */
function assertCloseLogits(actual: Float32Array[], expected: Float32Array[]): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    assert.equal(actual[i].length, expected[i].length);
    assert.ok(cosine(actual[i], expected[i]) > 0.9999, `run ${i}: cosine ${cosine(actual[i], expected[i])}`);
    const scale = Math.max(...expected[i].map(Math.abs));
    const worst = maxAbsDiff(expected[i], actual[i]);
    assert.ok(worst < 0.03 * scale, `run ${i}: largest difference ${worst} against logits up to ${scale}`);
  }
}

/** Why a test of `kernel` cannot run here, or false when it can. */
function cannotRun(kernel: NativeKernel): string | false {
  const widest = nativeKernel();
  return widest && NATIVE_KERNELS.indexOf(widest) >= NATIVE_KERNELS.indexOf(kernel) ? false : `this CPU has no ${kernel} (or the library is not built)`;
}

describe('native decoder', () => {
  let root: string;
  let checkpoint: string;

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-native-'));
    const configDir = path.join(root, 'config');
    fs.mkdirSync(configDir);
    for (const f of fs.readdirSync(tinyCheckpointDir)) if (/\.json$/.test(f)) fs.copyFileSync(path.join(tinyCheckpointDir, f), path.join(configDir, f));
    const config = JSON.parse(fs.readFileSync(path.join(configDir, 'config.json'), 'utf8')) as { text_config: Record<string, unknown> };
    Object.assign(config.text_config, { hidden_size: HIDDEN, word_embed_proj_dim: HIDDEN, num_attention_heads: 4, ffn_dim: 512, num_hidden_layers: 2 });
    fs.writeFileSync(path.join(configDir, 'config.json'), JSON.stringify(config));
    checkpoint = path.join(root, 'checkpoint');
    await writeRandomCheckpoint({ configDir, outDir: checkpoint, seed: 3, dtype: 'F32' });
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  for (const [precision, bits, file] of [['int4', 4, 'onnx/decoder_native_q4.bin'], ['int8', 8, 'onnx/decoder_native_int8.bin']] as const) {
    describe(`at ${precision}`, () => {
      let dir: string;
      before(async () => {
        dir = path.join(root, precision);
        await convertCheckpoint({ checkpointDir: checkpoint, outDir: dir, precision, decoderForms: ['native', 'onnxruntime'] });
      });

      it(`an ${precision} conversion writes ${bits}-bit native weights beside the graphs and records their checksum`, () => {
        const manifest = readManifest(dir);
        assert.equal(manifest.graphs.nativeDecoder, file);
        const recorded = manifest.files!.find((f) => f.name === manifest.graphs.nativeDecoder);
        assert.ok(recorded, 'not in the recorded files');
        assert.equal(recorded.bytes, fs.statSync(path.join(dir, file)).size);
        assert.equal(readNativeHeader(path.join(dir, file))?.bits, bits);
      });

      it("computes onnxruntime's logits over the same weights: prompts, left padding, steps and reordered rows", async () => {
        const reference = await run(dir, 'onnxruntime');
        const native = await run(dir, 'portable');
        assert.equal(reference.kind, 'onnxruntime');
        assert.equal(native.kind, 'native');
        assertCloseLogits(native.logits, reference.logits);
      });

      for (const [kernel, decoder] of [['avx512-vnni', 'native'], ['avx2', 'avx2']] as const) {
        it(`the ${kernel} kernel computes what the portable one does`, { skip: cannotRun(kernel) }, async () => {
          const portable = await run(dir, 'portable');
          const vector = await run(dir, decoder);
          assert.equal(portable.kernel, 'portable');
          assert.equal(vector.kernel, kernel);
          // The same integer dot products (their outputs agree to 4e-7 per linear), but the kernels' float sums round
          // differently, and a rounding that moves an activation across an int8 step changes the next layers' input:
          // as close as onnxruntime's, not equal.
          assertCloseLogits(vector.logits, portable.logits);
        });
      }

      it('a damaged native weights file is not used: onnxruntime answers, as it would without one', async () => {
        const copy = path.join(root, `damaged-${precision}`);
        fs.cpSync(dir, copy, { recursive: true });
        fs.truncateSync(path.join(copy, file), 4096);
        const { kind, logits } = await run(copy, 'auto');
        assert.equal(kind, 'onnxruntime');
        assert.ok(logits.every((l) => l.every(Number.isFinite)));
        await assert.rejects(run(copy, 'native'), /the native decoder cannot open .*: an offset is outside the file/);
      });

      const nativeHere = nativeDecoderAvailable() ? false : 'this CPU runs no vector kernel of the native decoder (or the library is not built)';
      const single = () => path.join(root, `${precision}-single`);

      it("a conversion for use stores the decoder once, in the native form, and onnxruntime's is derived from it byte for byte", { skip: nativeHere }, async () => {
        await convertCheckpoint({ checkpointDir: checkpoint, outDir: single(), precision });
        const manifest = readManifest(single());
        assert.deepEqual(manifest.decoderForms, ['native']);
        assert.equal(fs.existsSync(path.join(single(), manifest.graphs.decoder)), false, 'the decoder graph is stored for onnxruntime too');
        assert.equal(manifest.files!.some((f) => f.name.startsWith('onnx/decoder_model_merged')), false);
        // The same native weights as the two-form conversion's.
        assert.ok(fs.readFileSync(path.join(single(), file)).equals(fs.readFileSync(path.join(dir, file))));

        const derived = await onnxDecoderGraph(single(), manifest);
        const weights = (graph: string) => {
          const model = onnx.ModelProto.decode(fs.readFileSync(graph));
          const data = fs.readFileSync(`${graph}_data`);
          return new Map(
            model.graph!.initializer!.map((t) => {
              const kv = Object.fromEntries((t.externalData ?? []).map((e) => [e.key, e.value]));
              const bytes = kv.offset !== undefined ? data.subarray(Number(kv.offset), Number(kv.offset) + Number(kv.length)) : Buffer.from(t.rawData!);
              return [t.name!, bytes] as const;
            }),
          );
        };
        const written = weights(path.join(dir, manifest.graphs.decoder));
        const fromNative = weights(derived);
        assert.deepEqual([...fromNative.keys()].sort(), [...written.keys()].sort());
        for (const [name, bytes] of written) assert.ok(bytes.equals(fromNative.get(name)!), `${name} differs`);
        // And onnxruntime computes with it what it computes with the converter's.
        const a = await run(dir, 'onnxruntime');
        const b = await run(single(), 'onnxruntime');
        for (let i = 0; i < a.logits.length; i++) assert.deepEqual(b.logits[i], a.logits[i]);
      });

      it('a damaged native weights file that is the only copy is a damaged model, not a fallback', { skip: nativeHere }, async () => {
        const damaged = path.join(root, `${precision}-damaged-single`);
        fs.cpSync(single(), damaged, { recursive: true });
        const manifest = readManifest(damaged);
        fs.rmSync(path.join(damaged, manifest.graphs.decoder), { force: true });
        fs.truncateSync(path.join(damaged, file), 4096);
        await assert.rejects(run(damaged, 'auto'), (e) => e instanceof DamagedModelError && e.message.includes(path.basename(file)));
      });

      it("the tiny fixture's sizes do not suit the kernel: no native weights, onnxruntime's decoder", async () => {
        const tiny = await convertedTiny(precision);
        assert.equal(readManifest(tiny).graphs.nativeDecoder, undefined);
        const model = await Blip2Model.load(tiny, { device: 'cpu', threads: 1 });
        assert.equal(model.decoderKind, 'onnxruntime');
        await model.dispose();
      });
    });
  }

  it("reads converter version 6's int4 files (header version 1: no bits field) as before", async () => {
    const dir = path.join(root, 'int4');
    const copy = path.join(root, 'version-1');
    fs.cpSync(dir, copy, { recursive: true });
    const file = path.join(copy, 'onnx/decoder_native_q4.bin');
    // Version 1's header: magic, version, the 9 sizes, then the offsets at byte 48 (version 2's are at 56, after the
    // bits and a zero); the tensors stay where they are.
    const fd = fs.openSync(file, 'r+');
    try {
      const head = Buffer.alloc(4096);
      fs.readSync(fd, head, 0, head.length, 0);
      assert.equal(head.readUInt32LE(8), 2);
      assert.equal(head.readUInt32LE(48), 4);
      const tensors = 2 * 20 + 6;
      const v1 = Buffer.concat([head.subarray(0, 48), head.subarray(56, 56 + 8 * tensors)]);
      v1.writeUInt32LE(1, 8);
      fs.writeSync(fd, v1, 0, v1.length, 0);
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(readNativeHeader(file)?.bits, 4);
    const [current, old] = [await run(dir, 'portable'), await run(copy, 'portable')];
    assert.equal(old.kind, 'native');
    old.logits.forEach((l, i) => assert.deepEqual(l, current.logits[i]));
  });

  describe('kernels on chosen codes and activations', () => {
    // Three groups of 16 columns (an odd count: the AVX-512 kernel's pairs end in a single group), two blocks, and 5
    // rows (tiles of 4 and 1, of 3 and 2).
    const N = 48;
    const K = 512;
    const BLOCK = 256;
    const ROWS = 5;
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);

    /**
     * Codes at the extremes (all the largest, all 0, alternating, half and half) and random ones, with random zero
     * points and scales.
     */
    function weights(bits: 4 | 8): BlockQuantized {
      const top = (1 << bits) - 1;
      const nb = K / BLOCK;
      const codes = new Uint8Array(N * K);
      for (let n = 0; n < N; n++) {
        for (let k = 0; k < K; k++) {
          const pattern = [top, 0, k % 2 ? top : 0, k % BLOCK < BLOCK / 2 ? top : 0, Math.floor(random() * (top + 1))];
          codes[n * K + k] = pattern[n % pattern.length];
        }
      }
      const scales = Float32Array.from({ length: N * nb }, () => 0.001 + 0.01 * random());
      const zeroPoints = Uint8Array.from({ length: N * nb }, (_, i) => (i % 3 === 0 ? top : i % 3 === 1 ? 0 : Math.floor(random() * (top + 1))));
      return { bits, blockSize: BLOCK, rows: N, cols: K, blocksPerRow: nb, codes, scales, zeroPoints };
    }

    /**
     * Rows whose int8 codes are known: every value is c / 127 for an integer c, and every block holds a ±1, so the
     * block's scale is 1/127 and its codes are the c: all 127, all -127 (the extremes), alternating, and random.
     */
    function activations(): { x: Float32Array; codes: Int32Array } {
      const codes = new Int32Array(ROWS * K);
      for (let r = 0; r < ROWS; r++) {
        for (let k = 0; k < K; k++) {
          const pattern = [127, -127, k % 2 ? 127 : -127, (k >> 1) % 2 ? -127 : 127, k % BLOCK === 0 ? 127 : Math.round(random() * 254) - 127];
          codes[r * K + k] = pattern[r];
        }
      }
      return { x: Float32Array.from(codes, (c) => c / 127), codes };
    }

    /** The linear in float64 from the unpacked codes: Σ over blocks of scale × scale_a × Σ (code - zero point) × a. */
    function exact(q: BlockQuantized, a: Int32Array, bias: Float32Array): { y: Float64Array; magnitude: Float64Array } {
      const sa = Math.fround(1 / 127);
      const y = new Float64Array(ROWS * N);
      const magnitude = new Float64Array(ROWS * N);
      for (let r = 0; r < ROWS; r++) {
        for (let n = 0; n < N; n++) {
          let sum = bias[n];
          let size = Math.abs(bias[n]);
          for (let b = 0; b < q.blocksPerRow; b++) {
            let d = 0;
            let terms = 0;
            const zp = q.zeroPoints[n * q.blocksPerRow + b];
            for (let k = b * BLOCK; k < (b + 1) * BLOCK; k++) {
              d += (q.codes[n * K + k] - zp) * a[r * K + k];
              terms += (q.codes[n * K + k] + zp) * Math.abs(a[r * K + k]);
            }
            const s = q.scales[n * q.blocksPerRow + b] * sa;
            sum += s * d;
            size += s * terms;
          }
          y[r * N + n] = sum;
          magnitude[r * N + n] = size;
        }
      }
      return { y, magnitude };
    }

    for (const bits of [4, 8] as const) {
      for (const kernel of NATIVE_KERNELS) {
        it(`${kernel}, ${bits}-bit: exact sums at the extremes (the largest codes times ±127)`, { skip: cannotRun(kernel) }, () => {
          const q = weights(bits);
          const { x, codes } = activations();
          const bias = Float32Array.from({ length: N }, () => random() - 0.5);
          const packed = packColumnInterleaved(q);
          const y = nativeLinear({ bits, n: N, k: K, block: BLOCK, ...packed, bias }, x, ROWS, kernel);
          const want = exact(q, codes, bias);
          for (let i = 0; i < y.length; i++) {
            // The kernels sum exact integers per block, then scale in float32: the error is float32 rounding of the
            // terms, far under one product's worth (a saturated pair of products would be off by thousands of them).
            const allowed = 1e-5 * want.magnitude[i];
            assert.ok(Math.abs(y[i] - want.y[i]) <= allowed, `row ${Math.floor(i / N)}, column ${i % N}: ${y[i]} against ${want.y[i]} (within ${allowed})`);
          }
        });
      }
    }
  });
});
