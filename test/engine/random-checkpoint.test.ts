import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { kvHeadSize } from '../../server/src/engine/graphs/decoder';
import { openCheckpoint, readJson } from '../../server/src/engine/checkpoint/checkpoint';
import { parseBlip2Config } from '../../server/src/engine/checkpoint/config';
import { expectedTensors, names } from '../../server/src/engine/checkpoint/layout';
import {
  DEFAULT_MAX_SHARD_BYTES,
  parseByteSize,
  planRandomCheckpoint,
  writeRandomCheckpoint,
  type RandomCheckpointOptions,
} from '../../server/src/engine/checkpoint/random-checkpoint';
import { SAFETENSORS_INDEX_FILE } from '../../server/src/engine/checkpoint/files';
import { readSafetensorsHeader, type StoredDtype } from '../../server/src/engine/checkpoint/safetensors';
import { convertCheckpoint } from '../../server/src/engine/convert/convert';
import { UserError } from '../../server/src/engine/errors';
import { realConfigDir, repoRoot, tinyCheckpointDir } from '../helpers/paths';

const DTYPES: StoredDtype[] = ['F32', 'F16', 'BF16'];
// Forces the tiny model (about 750 kB in float32) into a dozen shards.
const TINY_SHARD = 64_000;

let tmp: string;
let configDir: string;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'random-checkpoint-'));
  configDir = path.join(tmp, 'config');
  fs.mkdirSync(configDir);
  for (const f of fs.readdirSync(tinyCheckpointDir)) {
    if (f.endsWith('.json')) fs.copyFileSync(path.join(tinyCheckpointDir, f), path.join(configDir, f));
  }
});

after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let counter = 0;
async function write(opts: Partial<RandomCheckpointOptions> = {}): Promise<string> {
  const outDir = path.join(tmp, `out-${counter++}`);
  await writeRandomCheckpoint({ configDir, outDir, seed: 7, dtype: 'F32', ...opts });
  return outDir;
}

function tinyExpected() {
  const json = readJson(path.join(configDir, 'config.json')) as { text_config: { vocab_size: number } };
  return expectedTensors(parseBlip2Config(json), json.text_config.vocab_size);
}

function weightFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
}

function headerLength(file: string): number {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, 0);
    return Number(b.readBigUInt64LE(0));
  } finally {
    fs.closeSync(fd);
  }
}

function assertMatchesLayout(dir: string, dtype: StoredDtype): void {
  const ckpt = openCheckpoint(dir);
  const expected = tinyExpected();
  assert.equal(ckpt.vocabSize, 960);
  for (const spec of expected) {
    const info = ckpt.info(spec.name);
    assert.deepEqual(info.shape, spec.shape, spec.name);
    assert.equal(info.dtype, dtype, spec.name);
  }
  const held = new Set<string>();
  for (const f of weightFiles(dir)) for (const k of readSafetensorsHeader(path.join(dir, f)).keys()) held.add(k);
  assert.deepEqual([...held].sort(), expected.map((t) => t.name).sort(), 'exactly the expected tensors, no more');
}

function stats(a: Float32Array): { mean: number; std: number; finite: boolean } {
  let sum = 0;
  let finite = true;
  for (const x of a) {
    sum += x;
    if (!Number.isFinite(x)) finite = false;
  }
  const mean = sum / a.length;
  let v = 0;
  for (const x of a) v += (x - mean) ** 2;
  return { mean, std: Math.sqrt(v / a.length), finite };
}

describe('writeRandomCheckpoint, single file', () => {
  for (const dtype of DTYPES) {
    test(`${dtype}: every expected tensor with its shape, in one model.safetensors`, async () => {
      const dir = await write({ dtype });
      assert.deepEqual(weightFiles(dir), ['model.safetensors']);
      assert.ok(!fs.existsSync(path.join(dir, SAFETENSORS_INDEX_FILE)), 'transformers writes no index for one file');
      for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'preprocessor_config.json', 'processor_config.json']) {
        assert.deepEqual(fs.readFileSync(path.join(dir, f)), fs.readFileSync(path.join(configDir, f)), `${f} copied`);
      }
      assertMatchesLayout(dir, dtype);
      const file = path.join(dir, 'model.safetensors');
      const params = tinyExpected().reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
      assert.equal(fs.statSync(file).size, 8 + headerLength(file) + params * (dtype === 'F32' ? 4 : 2));
    });

    test(`${dtype}: values are small, layer norms near 1, and finite`, async () => {
      const ckpt = openCheckpoint(await write({ dtype }));
      const embed = stats(await ckpt.read(names.text.embedTokens));
      assert.ok(embed.finite);
      assert.ok(Math.abs(embed.mean) < 1e-3, `mean ${embed.mean}`);
      assert.ok(Math.abs(embed.std - 0.02) < 1e-3, `std ${embed.std}`);
      for (const n of [`${names.vision.postLayerNorm}.weight`, 'qformer.layernorm.weight', `${names.text.layer(1)}.self_attn_layer_norm.weight`, 'qformer.encoder.layer.0.attention.output.LayerNorm.weight']) {
        const s = stats(await ckpt.read(n));
        assert.ok(Math.abs(s.mean - 1) < 0.02 && s.std > 0.005 && s.std < 0.04, `${n}: mean ${s.mean}, std ${s.std}`);
      }
      const bias = stats(await ckpt.read(`${names.text.layer(0)}.fc1.bias`));
      assert.ok(Math.abs(bias.mean) < 0.01 && bias.std > 0.005 && bias.std < 0.04, `bias mean ${bias.mean}, std ${bias.std}`);
    });
  }

  test('header follows the safetensors conventions', async () => {
    const file = path.join(await write({ dtype: 'BF16' }), 'model.safetensors');
    const buf = fs.readFileSync(file);
    const len = Number(buf.readBigUInt64LE(0));
    assert.equal(len % 8, 0, 'header padded to a multiple of 8');
    const text = buf.subarray(8, 8 + len).toString('utf8');
    assert.match(text, /^\{"__metadata__":\{"format":"pt"\},"/, 'compact JSON, metadata first');
    assert.match(text, /\} *$/, 'padded with spaces only');
    const header = JSON.parse(text) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const tensorNames = Object.keys(header).filter((k) => k !== '__metadata__');
    assert.deepEqual(tensorNames, [...tensorNames].sort(), 'tensors in name order, as the safetensors library writes them');
    let offset = 0;
    for (const k of tensorNames) {
      const t = header[k];
      assert.equal(t.dtype, 'BF16');
      assert.deepEqual(t.data_offsets, [offset, offset + t.shape.reduce((a, b) => a * b, 1) * 2], k);
      offset = t.data_offsets[1];
    }
    assert.equal(buf.length, 8 + len + offset, 'data follows the header with no gaps');
  });
});

describe('writeRandomCheckpoint, sharded', () => {
  for (const dtype of DTYPES) {
    test(`${dtype}: shards and an index as transformers writes them`, async () => {
      const dir = await write({ dtype, maxShardBytes: TINY_SHARD });
      const files = weightFiles(dir);
      const n = files.length;
      assert.ok(n >= 3, `${n} shards`);
      const pad = (k: number) => String(k).padStart(5, '0');
      assert.deepEqual(files, Array.from({ length: n }, (_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`));
      assertMatchesLayout(dir, dtype);

      const indexText = fs.readFileSync(path.join(dir, SAFETENSORS_INDEX_FILE), 'utf8');
      const index = JSON.parse(indexText) as { metadata: { total_size: number; total_parameters: number }; weight_map: Record<string, string> };
      assert.equal(indexText, JSON.stringify(index, null, 2) + '\n', 'indent 2 and a final newline');
      const expected = tinyExpected();
      assert.deepEqual(Object.keys(index.weight_map), expected.map((t) => t.name).sort(), 'every tensor, keys sorted');
      assert.deepEqual([...new Set(Object.values(index.weight_map))].sort(), files, 'every shard named, and only shards');
      const ckpt = openCheckpoint(dir);
      for (const [name, file] of Object.entries(index.weight_map)) assert.equal(path.basename(ckpt.info(name).file), file, name);

      const dataBytes = files.map((f) => fs.statSync(path.join(dir, f)).size - 8 - headerLength(path.join(dir, f)));
      assert.equal(index.metadata.total_size, dataBytes.reduce((a, b) => a + b, 0));
      assert.equal(index.metadata.total_parameters, expected.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0));
      const elem = dtype === 'F32' ? 4 : 2;
      for (const [i, f] of files.entries()) {
        const tensors = [...readSafetensorsHeader(path.join(dir, f)).values()];
        assert.ok(dataBytes[i] <= TINY_SHARD || tensors.length === 1, `${f} holds ${dataBytes[i]} bytes`);
        assert.equal(dataBytes[i], tensors.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * elem, 0));
      }
    });
  }

  test('a tensor is the same whether the checkpoint is sharded or not', async () => {
    const single = openCheckpoint(await write({ seed: 3 }));
    const sharded = openCheckpoint(await write({ seed: 3, maxShardBytes: TINY_SHARD }));
    for (const n of [names.text.embedTokens, `${names.vision.layer(1)}.mlp.fc2.weight`, 'query_tokens']) {
      assert.deepEqual(await sharded.read(n), await single.read(n), n);
    }
  });

  test('follows the shard assignment of an index in the config folder', async () => {
    const withIndex = path.join(tmp, 'config-with-index');
    fs.cpSync(configDir, withIndex, { recursive: true });
    const names = tinyExpected().map((t) => t.name).sort();
    // Deliberately not what a size-based split would give: alternate tensors between two shards.
    const map = Object.fromEntries(names.map((n, i) => [n, `model-0000${1 + (i % 2)}-of-00002.safetensors`]));
    fs.writeFileSync(path.join(withIndex, SAFETENSORS_INDEX_FILE), JSON.stringify({ metadata: { total_size: 0 }, weight_map: map }));
    const dir = path.join(tmp, `out-${counter++}`);
    await writeRandomCheckpoint({ configDir: withIndex, outDir: dir, seed: 1, dtype: 'F16' });
    const index = readJson(path.join(dir, SAFETENSORS_INDEX_FILE)) as { weight_map: Record<string, string> };
    assert.deepEqual(index.weight_map, map);
    const ckpt = openCheckpoint(dir);
    for (const n of names) assert.equal(path.basename(ckpt.info(n).file), map[n]);

    // 'size' overrides it.
    const bySize = path.join(tmp, `out-${counter++}`);
    await writeRandomCheckpoint({ configDir: withIndex, outDir: bySize, seed: 1, dtype: 'F16', shardLayoutFrom: 'size' });
    assert.deepEqual(weightFiles(bySize), ['model.safetensors']);
  });

  test('an index that does not match config.json is refused', async () => {
    const bad = path.join(tmp, 'config-bad-index');
    fs.cpSync(configDir, bad, { recursive: true });
    fs.writeFileSync(path.join(bad, SAFETENSORS_INDEX_FILE), JSON.stringify({ weight_map: { 'not.a.tensor': 'model-00001-of-00001.safetensors' } }));
    await assert.rejects(writeRandomCheckpoint({ configDir: bad, outDir: path.join(tmp, `out-${counter++}`), seed: 1, dtype: 'F32' }), UserError);
  });
});

describe('writeRandomCheckpoint, seeds and overwriting', () => {
  test('the same seed gives byte-identical files, another seed different values', async () => {
    const a = await write({ seed: 11, maxShardBytes: TINY_SHARD });
    const b = await write({ seed: 11, maxShardBytes: TINY_SHARD });
    const c = await write({ seed: 12, maxShardBytes: TINY_SHARD });
    const files = weightFiles(a).concat(SAFETENSORS_INDEX_FILE);
    for (const f of files) assert.ok(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), `${f} identical`);
    assert.deepEqual(weightFiles(c), weightFiles(a));
    for (const f of weightFiles(a)) {
      const x = fs.readFileSync(path.join(a, f));
      const y = fs.readFileSync(path.join(c, f));
      const data = 8 + headerLength(path.join(a, f));
      assert.ok(x.subarray(0, data).equals(y.subarray(0, data)), `${f}: same header`);
      assert.ok(!x.subarray(data).equals(y.subarray(data)), `${f}: different values`);
    }
  });

  test('large seeds are distinct too', async () => {
    const a = openCheckpoint(await write({ seed: 2 ** 32 }));
    const b = openCheckpoint(await write({ seed: 0 }));
    assert.notDeepEqual(await a.read('query_tokens'), await b.read('query_tokens'));
  });

  test('refuses to write over weights unless told to, and then leaves no stale shard', async () => {
    const dir = await write({ maxShardBytes: TINY_SHARD });
    await assert.rejects(writeRandomCheckpoint({ configDir, outDir: dir, seed: 1, dtype: 'F32' }), UserError);
    await writeRandomCheckpoint({ configDir, outDir: dir, seed: 1, dtype: 'F32', overwrite: true });
    assert.deepEqual(weightFiles(dir), ['model.safetensors']);
    assert.ok(!fs.existsSync(path.join(dir, SAFETENSORS_INDEX_FILE)));
    assert.ok(!fs.readdirSync(dir).some((f) => f.endsWith('.partial')));
    assertMatchesLayout(dir, 'F32');
  });

  test('bad options are user errors', async () => {
    await assert.rejects(write({ seed: -1 }), UserError);
    await assert.rejects(write({ seed: 1.5 }), UserError);
    await assert.rejects(write({ maxShardBytes: 0, shardLayoutFrom: 'size' }), UserError);
    await assert.rejects(write({ shardLayoutFrom: 'index' }), UserError, 'no index to follow');
    await assert.rejects(write({ dtype: 'I8' as StoredDtype }), UserError);
  });

  test('reports progress up to the total', async () => {
    const seen: number[] = [];
    let total = 0;
    await write({ dtype: 'F16', maxShardBytes: TINY_SHARD, onProgress: (p) => (seen.push(p.bytesDone), (total = p.bytesTotal)) });
    assert.equal(seen.length, tinyExpected().length);
    assert.equal(seen.at(-1), total);
    assert.deepEqual(seen, [...seen].sort((a, b) => a - b));
  });
});

describe('converting a random checkpoint', () => {
  for (const [dtype, sharded] of [['F32', true], ['BF16', false]] as const) {
    test(`${dtype}${sharded ? ' sharded' : ''}: converts at int4, loads in onnxruntime and gives finite outputs`, async () => {
      const dir = await write({ dtype, maxShardBytes: sharded ? TINY_SHARD : undefined });
      const out = path.join(tmp, `converted-${counter++}`);
      const manifest = await convertCheckpoint({ checkpointDir: dir, outDir: out, precision: 'int4' });
      assert.equal(manifest.vocabSize, 960);
      const onnxFiles = fs.readdirSync(path.join(out, 'onnx')).filter((f) => f.endsWith('.onnx')).sort();
      assert.deepEqual(onnxFiles, ['decoder_model_merged_q4.onnx', 'embed_tokens_q4.onnx', 'vision_encoder_q4.onnx']);
      const sessions: Record<string, ort.InferenceSession> = {};
      for (const f of onnxFiles) sessions[f] = await ort.InferenceSession.create(path.join(out, 'onnx', f), { logSeverityLevel: 3 });

      const finite = (t: ort.Tensor, what: string) => {
        for (const x of t.data as Float32Array) assert.ok(Number.isFinite(x), `${what} has ${x}`);
      };
      const pixels = Float32Array.from({ length: 3 * 224 * 224 }, (_, i) => Math.sin(i) * 2);
      const vision = await sessions['vision_encoder_q4.onnx'].run({ pixel_values: new ort.Tensor('float32', pixels, [1, 3, 224, 224]) });
      for (const [k, v] of Object.entries(vision)) finite(v, `vision ${k}`);

      const ids = [2, 5, 100, 900];
      const embeds = await sessions['embed_tokens_q4.onnx'].run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]) });
      const embedded = Object.values(embeds)[0];
      finite(embedded, 'embeddings');

      const decoder = sessions['decoder_model_merged_q4.onnx'];
      const feeds: Record<string, ort.Tensor> = {
        inputs_embeds: embedded,
        attention_mask: new ort.Tensor('int64', BigInt64Array.from(ids, () => 1n), [1, ids.length]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (_, i) => BigInt(i)), [1, ids.length]),
      };
      // The cache is the caller's buffer, room for the prompt; the run returns the prompt's keys and values.
      const headSize = kvHeadSize(10);
      for (const name of decoder.inputNames) {
        if (!name.startsWith('past_key_values.')) continue;
        const cache = new ort.Tensor('float32', new Float32Array(4 * ids.length * headSize), [1, 4, ids.length, headSize]);
        feeds[name] = cache;
      }
      const result = await decoder.run(feeds);
      assert.deepEqual(result.logits.dims.at(-1), 960);
      for (const [k, v] of Object.entries(result)) finite(v, `decoder ${k}`);
      for (const s of Object.values(sessions)) await s.release();
    });
  }
});

describe('the real model (blip2-opt-2.7b-config), planned without writing 15 GB', () => {
  const realIndex = readJson(path.join(realConfigDir, SAFETENSORS_INDEX_FILE)) as {
    metadata: { total_parameters: number; total_size: number };
    weight_map: Record<string, string>;
  };

  test("yields exactly the index's tensors, shards, parameter count and size", () => {
    const plan = planRandomCheckpoint({ configDir: realConfigDir, dtype: 'F32' });
    assert.equal(plan.vocabSize, 50304);
    assert.ok(plan.index);
    assert.deepEqual(Object.keys(plan.index.weight_map), Object.keys(realIndex.weight_map));
    assert.deepEqual(plan.index.weight_map, realIndex.weight_map);
    assert.equal(plan.totalParameters, realIndex.metadata.total_parameters);
    assert.equal(plan.totalSize, realIndex.metadata.total_size);
    assert.deepEqual(plan.index.metadata, realIndex.metadata);
    assert.deepEqual(plan.shards.map((s) => s.file), [1, 2, 3, 4].map((i) => `model-0000${i}-of-00004.safetensors`));
    // Each shard is one of transformers' 5 GB pieces.
    for (const s of plan.shards) assert.ok(s.bytes - s.header.length <= DEFAULT_MAX_SHARD_BYTES, `${s.file}: ${s.bytes}`);
    assert.equal(plan.shards.reduce((n, s) => n + s.tensors.length, 0), Object.keys(realIndex.weight_map).length);
  });

  test('half precision halves the size, not the parameters', () => {
    const plan = planRandomCheckpoint({ configDir: realConfigDir, dtype: 'BF16' });
    assert.equal(plan.totalParameters, realIndex.metadata.total_parameters);
    assert.equal(plan.totalSize, realIndex.metadata.total_size / 2);
  });

  test("a 5 GB size-based split reproduces transformers' shards", () => {
    const plan = planRandomCheckpoint({ configDir: realConfigDir, dtype: 'F32', shardLayoutFrom: 'size', maxShardBytes: parseByteSize('5GB') });
    assert.ok(plan.index);
    assert.equal(plan.shards.length, 4);
    // expectedTensors lists the decoder's final layer norm last, while OPTDecoder registers it before its
    // layers, so transformers puts it in the first shard; that tiny tensor may land in either.
    const finalNorm = names.text.finalLayerNorm;
    for (const [name, file] of Object.entries(realIndex.weight_map)) {
      if (!name.startsWith(finalNorm)) assert.equal(plan.index.weight_map[name], file, name);
    }
  });
});

describe('parseByteSize', () => {
  test('decimal and binary units, as huggingface_hub reads them', () => {
    assert.equal(parseByteSize('5GB'), 5e9);
    assert.equal(parseByteSize('500MB'), 5e8);
    assert.equal(parseByteSize('2GiB'), 2 * 2 ** 30);
    assert.equal(parseByteSize('1.5kb'), 1500);
    assert.equal(parseByteSize('4096'), 4096);
    assert.throws(() => parseByteSize('five'), UserError);
    assert.throws(() => parseByteSize('0'), UserError);
  });
});

describe('the random-checkpoint command', () => {
  const tool = path.join(repoRoot, 'server', 'src', 'tools', 'random-checkpoint.ts');
  const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', tool, ...args], { cwd: repoRoot, encoding: 'utf8' });

  test('writes a checkpoint and reports on stderr', () => {
    const out = path.join(tmp, `cli-${counter++}`);
    const r = run(['--config', configDir, '--out', out, '--seed', '5', '--dtype', 'f16', '--shard-size', '100kB']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /Wrote 186728 parameters/);
    assert.ok(weightFiles(out).length > 1);
    assertMatchesLayout(out, 'F16');
  });

  test('errors are one line and exit 1', () => {
    for (const args of [['--config', configDir], ['--config', configDir, '--out', path.join(tmp, 'x'), '--dtype', 'F64'], ['--bogus']]) {
      const r = run(args);
      assert.equal(r.status, 1);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /^random-checkpoint: /);
    }
  });
});
