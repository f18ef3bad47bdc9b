// Parity with Hugging Face transformers on the tiny checkpoint: every reference case, stage by stage.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { generate } from '../../server/src/engine/generation/generate';
import { buildInputs } from '../../server/src/engine/preprocess/prompts';
import { readManifest } from '../../server/src/engine/convert/manifest';
import { Blip2Model, OPTIMIZED_DIR } from '../../server/src/engine/runtime/blip2-model';
import type { ImagePrefix } from '../../server/src/engine/runtime/decoder-session';
import { optimizedCacheKey } from '../../server/src/engine/runtime/ort';
import { generationOptionsFor, loadManifest, readTensor, type ReferenceCase } from '../helpers/reference';
import { convertedTiny, cosine, maxAbsDiff } from '../helpers/tiny-model';

const manifest = loadManifest();
// Absolute tolerances from the issue: tensors to 1e-4, processed step scores to 1e-3.
const TENSOR_TOL = 1e-4;
const SCORE_TOL = 1e-3;

const optionsFor = (c: ReferenceCase) => generationOptionsFor(c, manifest);

describe('fp32 parity with transformers (tiny-blip2)', () => {
  let model: Blip2Model;
  before(async () => {
    model = await Blip2Model.load(await convertedTiny('fp32'), { device: 'cpu', threads: 1 });
  });
  after(() => model?.dispose());

  for (const c of manifest.cases) {
    it(`${c.id}: ${c.note}`, async (t) => {
      const batch = c.input_ids.length;
      const enc = await model.encodeImages(readTensor(c.pixel_values), batch, true);
      const diffs = {
        vision: maxAbsDiff(enc.visionHidden!, readTensor(c.vision_last_hidden_state)),
        qformer: maxAbsDiff(enc.qformerHidden!, readTensor(c.qformer_last_hidden_state)),
        features: maxAbsDiff(enc.imageFeatures, readTensor(c.image_features)),
      };
      t.diagnostic(`max abs diff: vision ${diffs.vision.toExponential(2)}, qformer ${diffs.qformer.toExponential(2)}, features ${diffs.features.toExponential(2)}`);
      for (const [stage, d] of Object.entries(diffs)) assert.ok(d <= TENSOR_TOL, `${stage} differs by ${d}`);

      // The processor's rows, built from the prompts by our tokenizer, are transformers' rows.
      const prompts = (c.prompts ?? Array(batch).fill('')).map((p: string) => (p ? model.tokenizer.encode(p) : []));
      const inputs = buildInputs(prompts, {
        imageToken: manifest.image_token_id,
        bos: manifest.bos_token_id,
        pad: manifest.pad_token_id,
        numQueryTokens: manifest.num_query_tokens,
      });
      assert.deepEqual(inputs.inputIds, c.input_ids);
      assert.deepEqual(inputs.attentionMask, c.attention_mask);

      const capacity = inputs.inputIds[0].length + optionsFor(c).maxNewTokens;
      const first = model.startDecoding(inputs.inputIds, inputs.attentionMask, enc.imageFeatures, { capacity });
      const logits = await first.prefill();
      first.dispose();
      const logitDiff = maxAbsDiff(logits, readTensor(c.first_step_last_logits));
      t.diagnostic(`first-step logits max abs diff ${logitDiff.toExponential(2)}`);
      assert.ok(logitDiff <= TENSOR_TOL, `first-step logits differ by ${logitDiff}`);

      const session = model.startDecoding(inputs.inputIds, inputs.attentionMask, enc.imageFeatures, { capacity });
      const result = await generate(session, { inputIds: inputs.inputIds }, optionsFor(c), { keepStepScores: true });
      session.dispose();
      assert.deepEqual(result.sequences.map((s) => s[0].tokenIds), c.new_token_ids);
      assert.deepEqual(result.sequences.map((s) => model.tokenizer.decode(s[0].tokenIds)), c.text);

      if (c.step_scores) {
        const ref = readTensor(c.step_scores);
        const [rows, steps, vocab] = c.step_scores.shape;
        assert.equal(result.stepScores!.length, steps);
        let worst = 0;
        for (let s = 0; s < steps; s++) {
          for (let r = 0; r < rows; r++) {
            const ours = result.stepScores![s].subarray(r * vocab, (r + 1) * vocab);
            const theirs = ref.subarray((r * steps + s) * vocab, (r * steps + s + 1) * vocab);
            worst = Math.max(worst, maxAbsDiff(mapInf(ours), mapInf(theirs)));
          }
        }
        t.diagnostic(`step scores max abs diff ${worst.toExponential(2)}`);
        assert.ok(worst <= SCORE_TOL, `step scores differ by ${worst}`);
      }
    });
  }
});

describe('fp32: a question after a caption starts from the image positions the caption computed', () => {
  let model: Blip2Model;
  before(async () => {
    model = await Blip2Model.load(await convertedTiny('fp32'), { device: 'cpu', threads: 1 });
  });
  after(() => model?.dispose());

  for (const c of manifest.cases.filter((x) => x.prompts && x.input_ids.length === 1)) {
    it(`${c.id}: first-step logits and tokens as transformers computes them without any cache`, async (t) => {
      const enc = await model.encodeImages(readTensor(c.pixel_values), 1);
      const q = manifest.num_query_tokens;
      const captionIds = [[...c.input_ids[0].slice(0, q), manifest.bos_token_id]];
      let prefix: ImagePrefix | undefined;
      const caption = model.startDecoding(captionIds, [captionIds[0].map(() => 1)], enc.imageFeatures, { capacity: q + 1, onPrefix: (p) => (prefix = p) });
      await caption.prefill();
      caption.dispose();
      assert.equal(prefix?.length, q);

      const capacity = c.input_ids[0].length + optionsFor(c).maxNewTokens;
      const first = model.startDecoding(c.input_ids, c.attention_mask, enc.imageFeatures, { capacity, reusePrefix: prefix });
      const logits = await first.prefill();
      assert.equal(first.timings.prefixReused, true);
      first.dispose();
      const diff = maxAbsDiff(logits, readTensor(c.first_step_last_logits));
      t.diagnostic(`first-step logits max abs diff ${diff.toExponential(2)} (from the cached image positions)`);
      assert.ok(diff <= TENSOR_TOL, `first-step logits differ by ${diff}`);

      const session = model.startDecoding(c.input_ids, c.attention_mask, enc.imageFeatures, { capacity, reusePrefix: prefix });
      const result = await generate(session, { inputIds: c.input_ids }, optionsFor(c));
      session.dispose();
      assert.deepEqual(result.sequences.map((s) => s[0].tokenIds), c.new_token_ids);
    });
  }
});

describe('int4: a second load opens the optimized copy the first one made', () => {
  const c = manifest.cases[0];
  const firstStep = async (dir: string, visionCopy = true) => {
    const model = await Blip2Model.load(dir, { device: 'cpu', threads: 1, visionCopy });
    try {
      const enc = await model.encodeImages(readTensor(c.pixel_values), 1);
      const s = model.startDecoding(c.input_ids, c.attention_mask, enc.imageFeatures, { capacity: c.input_ids[0].length });
      const logits = await s.prefill();
      s.dispose();
      return logits;
    } finally {
      await model.dispose();
    }
  };
  const copyDir = (dir: string) => path.join(dir, OPTIMIZED_DIR, optimizedCacheKey());
  const visionCopy = (dir: string) => path.join(copyDir(dir), `${path.basename(readManifest(dir).graphs.visionEncoder)}.data`);

  // onnxruntime 1.30 reads this tiny decoder's saved copy back as NaN (the real model's copy is exact): the copy is
  // compared with its original when made, and such a copy is refused. Either way the logits must not change.
  it('the copies exist after a load, are opened as they are by the next, and compute the same logits', async () => {
    const dir = await convertedTiny('int4');
    const a = await firstStep(dir);
    const graphs = readManifest(dir).graphs;
    for (const g of [graphs.visionEncoder, graphs.decoder]) {
      const name = path.basename(g);
      assert.ok(fs.existsSync(path.join(copyDir(dir), `${name}.data`)) || fs.existsSync(path.join(copyDir(dir), `${name}.unusable`)), `no copy of ${name} and no word why`);
    }
    const stamp = fs.statSync(visionCopy(dir)).mtimeMs;
    const b = await firstStep(dir);
    assert.equal(fs.statSync(visionCopy(dir)).mtimeMs, stamp, 'the second load rewrote the copy instead of opening it');
    assert.ok(maxAbsDiff(a, b) <= 1e-6, `logits differ by ${maxAbsDiff(a, b)}`);
    assert.ok(cosine(b, readTensor(c.first_step_last_logits)) >= COSINE_BOUNDS.int4);
  });

  it('by default the vision encoder and the embedding keep no copy: the same disk as converted, logits within the int4 bound', async () => {
    const dir = await convertedTiny('int4');
    fs.rmSync(path.join(dir, OPTIMIZED_DIR), { recursive: true, force: true });
    const logits = await firstStep(dir, false);
    const graphs = readManifest(dir).graphs;
    const copies = fs.existsSync(copyDir(dir)) ? fs.readdirSync(copyDir(dir)) : [];
    for (const g of [graphs.visionEncoder, graphs.embedTokens]) assert.deepEqual(copies.filter((f) => f.startsWith(path.basename(g))), [], `${g} has a copy`);
    assert.ok(cosine(logits, readTensor(c.first_step_last_logits)) >= COSINE_BOUNDS.int4);
  });

  it('a copy whose bytes changed is not used: it is made again from the conversion', async () => {
    const dir = await convertedTiny('int4');
    const a = await firstStep(dir);
    const decoderData = visionCopy(dir);
    const fd = fs.openSync(decoderData, 'r+');
    const size = fs.fstatSync(fd).size;
    // Garbage over the middle of the copy's weights: loaded as they are, they would give other logits.
    fs.writeSync(fd, Buffer.alloc(4096, 0x7f), 0, 4096, Math.floor(size / 2));
    fs.closeSync(fd);
    const b = await firstStep(dir);
    assert.ok(maxAbsDiff(a, b) <= 1e-6, `logits differ by ${maxAbsDiff(a, b)} after the copy was damaged`);
    // Read back in full: the check found the change, so the copy was made again.
    const fresh = fs.readFileSync(decoderData);
    assert.notDeepEqual(fresh.subarray(Math.floor(size / 2), Math.floor(size / 2) + 4096), Buffer.alloc(4096, 0x7f), 'the damaged copy is still there');
  });
});

// Banned tokens are -inf on both sides; compare them as equal values.
function mapInf(a: Float32Array): Float32Array {
  return a.map((v) => (v === -Infinity ? -1e30 : v));
}

// Bounds measured on these cases (lowest cosine per precision, see docs/reliability.md) with margin.
const COSINE_BOUNDS = { fp16: 0.9999, int8: 0.999, int4: 0.97 } as const;

for (const precision of ['fp16', 'int8', 'int4'] as const) {
  describe(`${precision}: first-step logits close to the fp32 reference`, () => {
    let model: Blip2Model;
    before(async () => {
      model = await Blip2Model.load(await convertedTiny(precision), { device: 'cpu', threads: 1 });
    });
    after(() => model?.dispose());

    it(`cosine similarity ≥ ${COSINE_BOUNDS[precision]} on every case`, async (t) => {
      let lowest = 1;
      for (const c of manifest.cases) {
        const enc = await model.encodeImages(readTensor(c.pixel_values), c.input_ids.length);
        const session = model.startDecoding(c.input_ids, c.attention_mask, enc.imageFeatures, { capacity: c.input_ids[0].length });
        const logits = await session.prefill();
        session.dispose();
        const ref = readTensor(c.first_step_last_logits);
        const vocab = c.first_step_last_logits.shape[1];
        for (let r = 0; r < c.input_ids.length; r++) {
          const cos = cosine(logits.subarray(r * vocab, (r + 1) * vocab), ref.subarray(r * vocab, (r + 1) * vocab));
          lowest = Math.min(lowest, cos);
          assert.ok(cos >= COSINE_BOUNDS[precision], `${c.id} row ${r}: cosine ${cos}`);
        }
      }
      t.diagnostic(`${precision}: lowest cosine ${lowest.toFixed(6)}`);
    });
  });
}
