// Damaged models and crafted checkpoints: a converted model whose files changed is refused before it answers (and
// set-up converts it again), NaN scores stop generation, safetensors offsets and config sizes are checked, prompts
// that do not fit the model's context are refused or trimmed, and running out of memory names what is needed.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openCheckpoint } from '../../server/src/engine/checkpoint/checkpoint';
import { parseBlip2Config } from '../../server/src/engine/checkpoint/config';
import { readSafetensorsHeader } from '../../server/src/engine/checkpoint/safetensors';
import { recordModelFiles, VERIFIED_FILE } from '../../server/src/engine/convert/integrity';
import { MANIFEST_FILE, readManifest, type ConvertedManifest } from '../../server/src/engine/convert/manifest';
import { onnx } from 'onnx-proto';
import { DamagedModelError, OutOfMemoryError, UserError } from '../../server/src/engine/errors';
import { explainOutOfMemory } from '../../server/src/engine/memory-needs';
import { ensureConverted, openModel, type OpenModelOptions } from '../../server/src/engine/open-model';
import { Blip2Model } from '../../server/src/engine/runtime/blip2-model';
import { openSession } from '../../server/src/engine/runtime/ort';
import { fitChatPrompt, type ChatTurn } from '../../server/src/engine/preprocess/prompts';
import { isolatedEnv, runCli } from '../helpers/cli';
import { repoRoot, tinyCheckpointDir } from '../helpers/paths';
import { imagePath } from '../helpers/reference';

const readJson = (file: string): Record<string, unknown> => JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;

/** A safetensors file from a header object and a data section of `dataBytes` bytes. */
function safetensors(file: string, header: Record<string, unknown>, dataBytes: number): string {
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]));
  return file;
}

function rejectsWith(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof UserError, `a UserError, not ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('safetensors offsets', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-st-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const t = (offsets: unknown, shape: unknown = [2]) => ({ dtype: 'F32', shape, data_offsets: offsets });

  it('reads tensors that tile the data section exactly', () => {
    const tensors = readSafetensorsHeader(safetensors(path.join(dir, 'ok.safetensors'), { b: t([8, 16]), a: t([0, 8]) }, 16));
    assert.deepEqual([...tensors.keys()].sort(), ['a', 'b']);
    assert.equal(tensors.get('b')!.end - tensors.get('b')!.begin, 8);
  });

  it('refuses overlapping, negative, reversed and gap-leaving offsets, and bytes after the last tensor', () => {
    const cases: [string, Record<string, unknown>, number, RegExp][] = [
      ['overlap', { a: t([0, 8]), b: t([4, 12]) }, 12, /tensor b overlaps the tensor before it/],
      ['negative', { a: t([-8, 0]) }, 8, /tensor a has the data offsets \[-8,0\]/],
      ['reversed', { a: t([8, 0], [-2]) }, 8, /tensor a has the shape \[-2\]/],
      ['out-of-order', { a: t([8, 0]) }, 8, /tensor a has the data offsets \[8,0\]/],
      ['gap', { a: t([0, 8]), b: t([12, 20]) }, 20, /there are 4 unused bytes before tensor b/],
      ['trailing', { a: t([0, 8]) }, 12, /it has 4 bytes after its last tensor/],
      ['into the header', { a: t([0, 8]), b: t([0, 8]) }, 8, /overlaps/],
      ['fractional', { a: t([0, 7.5]) }, 8, /data offsets/],
    ];
    for (const [name, header, bytes, pattern] of cases) {
      rejectsWith(() => readSafetensorsHeader(safetensors(path.join(dir, `${name}.safetensors`), header, bytes)), pattern);
    }
    rejectsWith(() => readSafetensorsHeader(safetensors(path.join(dir, 'short.safetensors'), { a: t([0, 8]) }, 4)), /is truncated: it holds/);
  });
});

describe('config sizes', () => {
  const tiny = readJson(path.join(tinyCheckpointDir, 'config.json'));
  const variant = (section: string, key: string, value: unknown): unknown => {
    const c = structuredClone(tiny) as Record<string, Record<string, unknown>>;
    if (section) c[section][key] = value;
    else (c as Record<string, unknown>)[key] = value;
    return c;
  };

  it('accepts the tiny and the real configs', () => {
    assert.equal(parseBlip2Config(tiny).text.hiddenSize, 40);
    assert.equal(parseBlip2Config(readJson(path.join(tinyCheckpointDir, '..', 'blip2-opt-2.7b-config', 'config.json'))).text.hiddenSize, 2560);
  });

  it('refuses sizes the architecture does not allow', () => {
    rejectsWith(() => parseBlip2Config(variant('text_config', 'num_attention_heads', 3)), /text_config\.hidden_size 40 does not split into 3 attention heads/);
    rejectsWith(() => parseBlip2Config(variant('vision_config', 'image_size', 16384)), /vision_config\.image_size is 16384, not a whole number from 1 to 1024/);
    rejectsWith(() => parseBlip2Config(variant('vision_config', 'patch_size', 15)), /image_size 224 is not a multiple of patch_size 15/);
    rejectsWith(() => parseBlip2Config(variant('text_config', 'num_hidden_layers', 0)), /num_hidden_layers is 0/);
    rejectsWith(() => parseBlip2Config(variant('text_config', 'ffn_dim', 1e12)), /ffn_dim is 1000000000000/);
    rejectsWith(() => parseBlip2Config(variant('', 'num_query_tokens', 500)), /num_query_tokens is 500/);
    rejectsWith(() => parseBlip2Config(variant('qformer_config', 'hidden_size', 32.5)), /qformer_config\.hidden_size is 32\.5/);
  });

  it('refuses a checkpoint whose tensors have other dimensions than its config allows', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-dims-'));
    try {
      fs.cpSync(tinyCheckpointDir, dir, { recursive: true, filter: (src) => !src.includes(`${path.sep}reference`) });
      const write = (config: unknown) => fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
      assert.equal(openCheckpoint(dir).config.text.ffnDim, 80);
      write(variant('text_config', 'ffn_dim', 96));
      rejectsWith(() => openCheckpoint(dir), /^Tensor language_model\.model\.decoder\.layers\.0\.fc1\.weight has shape \[80,40\] but config\.json implies \[96,40\]\./);
      write(variant('text_config', 'vocab_size', 961));
      rejectsWith(() => openCheckpoint(dir), /embed_tokens\.weight has shape \[960,40\] but config\.json implies \[961,40\]/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('damaged conversions', () => {
  let root: string;
  let store: string;
  let base: OpenModelOptions;
  let dir: string;
  let pristine: string;

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-damage-'));
    store = path.join(root, 'store');
    base = { model: tinyCheckpointDir, precision: 'fp32', device: 'cpu', threads: 1, store, offline: true };
    dir = (await ensureConverted(base)).dir;
    pristine = path.join(root, 'pristine');
    fs.cpSync(dir, pristine, { recursive: true });
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  /** The conversion as it was written, then changed by `damage`. */
  function damaged(damage: (manifest: ConvertedManifest) => void): void {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.cpSync(pristine, dir, { recursive: true });
    damage(readManifest(dir));
  }

  const file = (manifest: ConvertedManifest, which: 'decoder' | 'embedTokens') => path.join(dir, `${manifest.graphs[which]}_data`);

  it('records the size and checksums of every file of the conversion', () => {
    const manifest = readManifest(dir);
    const names = manifest.files!.map((f) => f.name);
    assert.ok(names.includes('onnx/decoder_model_merged.onnx_data'), names.join());
    assert.ok(names.includes('tokenizer.json') && names.includes('config.json'));
    assert.ok(!names.includes(MANIFEST_FILE));
    for (const f of manifest.files!) assert.equal(f.bytes, fs.statSync(path.join(dir, f.name)).size, f.name);
  });

  /** Flips bits of one byte in place: the size stays, the bytes do not. */
  function flipByte(path: string, offset: number, bits: number): void {
    const fd = fs.openSync(path, 'r+');
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, offset);
    byte[0] ^= bits;
    fs.writeSync(fd, byte, 0, 1, offset);
    fs.closeSync(fd);
  }

  it('a byte flipped in the decoder weights is found before the model answers', async () => {
    damaged((m) => flipByte(file(m, 'decoder'), 5000, 0x10));
    await assert.rejects(openModel(base), (e: unknown) => {
      assert.ok(e instanceof DamagedModelError);
      assert.match(e.line, /is damaged: onnx\/decoder_model_merged\.onnx_data has changed since it was converted \(its checksum differs\)\. Convert it again/);
      return true;
    });
  });

  it('after a load that found the model intact, a byte flipped later is still found', async () => {
    damaged(() => undefined);
    await (await openModel(base)).pipeline.dispose();
    // That load left the files' stamps, so an unchanged model is not read again; a change must not hide behind them.
    assert.ok(fs.existsSync(path.join(dir, VERIFIED_FILE)));
    flipByte(file(readManifest(dir), 'decoder'), 7000, 0x01);
    await assert.rejects(openModel(base), (e: unknown) => e instanceof DamagedModelError);
  });

  it('a vision graph onnxruntime cannot parse fails the load with the sentence for it, and leaves no thread or session behind', async () => {
    // The vision encoder opens in a thread of its own (blip2-model.ts), the decoder meanwhile on this one: the error
    // must come back as the same UserError, and the decoder that did open must be released.
    const threads = () => fs.readdirSync('/proc/self/task').length;
    // onnxruntime keeps a few threads of its own for the process once used: the baseline is after a whole load.
    damaged(() => undefined);
    await (await Blip2Model.load(dir, { device: 'cpu', threads: 2 })).dispose();
    const before = threads();
    damaged((m) => fs.writeFileSync(path.join(dir, m.graphs.visionEncoder), 'not a protobuf'));
    await assert.rejects(Blip2Model.load(dir, { device: 'cpu', threads: 2 }), (e: unknown) => {
      assert.ok(e instanceof UserError, `a UserError, not ${String(e)}`);
      assert.match(e.line, /^The converted model file .*vision_encoder\.onnx is damaged \(.*\)\. Delete its folder and convert again\.$/);
      return true;
    });
    // A worker's threads end shortly after terminate() resolves.
    for (let i = 0; i < 50 && threads() > before; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(threads(), before, 'threads left running after the failed load');
  });

  it('a truncated embedding file is found by its size, not left to onnxruntime', async () => {
    damaged((m) => fs.truncateSync(file(m, 'embedTokens'), 100));
    await assert.rejects(openModel(base), /onnx\/embed_tokens\.onnx_data is 100 bytes but was .* when converted/);
  });

  it('set-up (repair) converts a damaged conversion in the store again, and it answers', async () => {
    damaged((m) => fs.writeFileSync(file(m, 'decoder'), Buffer.alloc(fs.statSync(file(m, 'decoder')).size, 0xff)));
    const opened = await openModel({ ...base, repair: true });
    try {
      const [image] = await opened.pipeline.encodeImages([imagePath('cat.png')]);
      const { answers } = await opened.pipeline.generate([{ image, prompt: '' }], { maxNewTokens: 5 });
      assert.ok(answers[0].tokenIds.length > 0);
    } finally {
      await opened.pipeline.dispose();
    }
    assert.deepEqual(fs.readFileSync(file(readManifest(dir), 'decoder')), fs.readFileSync(path.join(pristine, readManifest(dir).graphs.decoder + '_data')));
  });

  it('NaN weights that the checksums cannot see (recorded as they are) stop generation with "the model is damaged"', async () => {
    damaged((m) => {
      const nan = Buffer.alloc(fs.statSync(file(m, 'decoder')).size);
      for (let i = 0; i + 4 <= nan.length; i += 4) nan.writeUInt32LE(0x7fc00000, i);
      fs.writeFileSync(file(m, 'decoder'), nan);
    });
    const manifest = readManifest(dir);
    fs.writeFileSync(path.join(dir, MANIFEST_FILE), JSON.stringify({ ...manifest, files: await recordModelFiles(dir) }));
    const opened = await openModel(base);
    try {
      const [image] = await opened.pipeline.encodeImages([imagePath('cat.png')]);
      await assert.rejects(opened.pipeline.generate([{ image, prompt: '' }], { maxNewTokens: 5 }), (e: unknown) => {
        assert.ok(e instanceof DamagedModelError, String(e));
        assert.match(e.line, /^The model is damaged: its prefill step computed NaN for a token score\. Set the model up again/);
        return true;
      });
    } finally {
      await opened.pipeline.dispose();
    }
  });

  it('blip2 verify: exit 0 when intact, 1 naming the changed file, and --repair converts it again', async () => {
    const iso = isolatedEnv();
    try {
      const args = ['verify', '--model', tinyCheckpointDir, '--precision', 'fp32', '--store', store];
      damaged(() => undefined);
      const ok = await runCli(args, iso.env);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, new RegExp(`all ${readManifest(dir).files!.length} files intact`));
      damaged((m) => fs.appendFileSync(file(m, 'embedTokens'), 'x'));
      const bad = await runCli(args, iso.env);
      assert.equal(bad.code, 1);
      assert.match(bad.stdout, /onnx\/embed_tokens\.onnx_data is .* but was .* when converted\.\nRun with --repair/);
      const repaired = await runCli([...args, '--repair', '--json'], iso.env);
      assert.equal(repaired.code, 0, repaired.stderr);
      const report = JSON.parse(repaired.stdout) as { repaired: boolean; problems: { name: string }[] };
      assert.equal(report.repaired, true);
      assert.deepEqual(report.problems.map((p) => p.name), ['onnx/embed_tokens.onnx_data']);
      assert.equal((await runCli(args, iso.env)).code, 0);
    } finally {
      iso.cleanup();
    }
  });
});

describe('prompts and the model context', () => {
  let root: string;
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-context-'));
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('a question longer than the context is refused with a sentence, not an out-of-bounds Gather', async () => {
    const opened = await openModel({ model: tinyCheckpointDir, precision: 'fp32', device: 'cpu', threads: 1, store: path.join(root, 'store'), offline: true });
    try {
      const [image] = await opened.pipeline.encodeImages([imagePath('cat.png')]);
      const long = `Question: ${'why is the cat there '.repeat(200)}Answer:`;
      await assert.rejects(opened.pipeline.generate([{ image, prompt: long }], { maxNewTokens: 10 }), (e: unknown) => {
        assert.ok(e instanceof UserError, String(e));
        // The tiny model has 128 positions: 8 go to the image, 1 to BOS, 10 to the answer.
        assert.match(e.line, /^The prompt is \d+ tokens long, more than the 109 that fit in the model's context of 128 positions with the image's 8 tokens and up to 10 new ones\. Shorten the question or the prompt\.$/);
        return true;
      });
      // At the budget it runs.
      const fits = opened.pipeline.model.tokenizer.decode(opened.pipeline.model.tokenizer.encode(long).slice(0, 109));
      assert.equal(opened.pipeline.model.tokenizer.encode(fits).length <= 109, true);
      const { answers } = await opened.pipeline.generate([{ image, prompt: fits }], { maxNewTokens: 10 });
      assert.ok(answers[0].tokenIds.length > 0);
    } finally {
      await opened.pipeline.dispose();
    }
  });

  it('a chat history that outgrows the context loses its oldest turns first', () => {
    const history: ChatTurn[] = Array.from({ length: 5000 }, (_, i) => ({ question: `question ${i}`, answer: `answer ${i}` }));
    const words = (text: string) => text.split(' ').length;
    let calls = 0;
    const prompt = fitChatPrompt(history, 'and now?', (t) => (calls++, words(t)), 60);
    // Six words a turn and four for the question: nine turns fit in 60, ten would not.
    assert.equal(words(prompt), 58);
    assert.match(prompt, /^Question: question 4991 Answer: answer 4991\. .*Question: question 4999 Answer: answer 4999\. Question: and now\? Answer:$/);
    assert.ok(calls < 20, `${calls} tokenizations`);
    assert.equal(fitChatPrompt(history.slice(0, 2), 'and now?', words, 1000), 'Question: question 0 Answer: answer 0. Question: question 1 Answer: answer 1. Question: and now? Answer:');
  });
});

describe('out of memory at load', () => {
  // A MatMul whose constant weight is 1 TiB, in a sparse file that takes no disk: onnxruntime's own allocation for
  // it fails at load as a too-large model's would. Under "always overcommit" (vm.overcommit_memory = 1) the
  // allocation would succeed and be filled until the system runs out, so the test is skipped there.
  const overcommit = fs.existsSync('/proc/sys/vm/overcommit_memory') ? fs.readFileSync('/proc/sys/vm/overcommit_memory', 'utf8').trim() : '';
  it('onnxruntime failing to allocate while loading is reported as out of memory, not as an internal error', { skip: overcommit === '1' || process.platform !== 'linux' ? 'needs Linux without vm.overcommit_memory = 1' : false }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-oom-'));
    try {
      const n = 2 ** 19;
      const bytes = String(n * n * 4);
      fs.closeSync(fs.openSync(path.join(dir, 'w.bin'), 'w'));
      fs.truncateSync(path.join(dir, 'w.bin'), n * n * 4);
      const shape = { dim: [{ dimValue: 1 }, { dimValue: n }] };
      const model = onnx.ModelProto.create({
        irVersion: 8,
        opsetImport: [{ domain: '', version: 17 }],
        graph: {
          name: 'too_large',
          node: [{ opType: 'MatMul', input: ['A', 'W'], output: ['Y'] }],
          input: [{ name: 'A', type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape } } }],
          output: [{ name: 'Y', type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape } } }],
          initializer: [{
            name: 'W',
            dataType: onnx.TensorProto.DataType.FLOAT,
            dims: [n, n],
            dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
            externalData: [{ key: 'location', value: 'w.bin' }, { key: 'offset', value: '0' }, { key: 'length', value: bytes }],
          }],
        },
      });
      const file = path.join(dir, 'too-large.onnx');
      fs.writeFileSync(file, onnx.ModelProto.encode(model).finish());
      await assert.rejects(openSession(file, { device: 'cpu', threads: 1 }), (e: unknown) => {
        assert.ok(e instanceof OutOfMemoryError, String(e));
        assert.match((e as OutOfMemoryError).line, /^Not enough memory to load .*too-large\.onnx\. Choose a smaller precision/);
        return true;
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says how much the precision needs, what is free, and offers a smaller precision', () => {
    // What the committed benchmark measured on the full-size model: each precision's files and its peak memory.
    // The latest run of `npm run bench` (the set-up and server benchmarks write files of their own, without `runs`).
    type EngineBench = { runs?: { engine: string; precision: string; peak_rss_mb: number; conversion?: { bytes_on_disk: number } }[] };
    const results = fs.readdirSync(path.join(repoRoot, 'bench', 'results')).filter((f) => f.endsWith('.json')).sort();
    const bench = results
      .map((f) => JSON.parse(fs.readFileSync(path.join(repoRoot, 'bench', 'results', f), 'utf8')) as EngineBench)
      .filter((b) => b.runs)
      .at(-1) as Required<EngineBench>;
    const measured = (precision: string) => bench.runs.find((r) => r.engine === 'blip2' && r.precision === precision)!;
    const gib = (mb: number) => mb / 1024;
    const int8 = measured('int8');
    const manifest = { precision: 'int8', sizes: { 'onnx/a.onnx': int8.conversion!.bytes_on_disk } } as unknown as ConvertedManifest;
    const e = explainOutOfMemory(manifest, 3 * 1024 ** 3);
    assert.ok(e instanceof OutOfMemoryError);
    const m = /^Not enough memory to load the int8 model: it needs about ([\d.]+) GB, and 3 GB is free\. Choose a smaller precision: int4 \(about ([\d.]+) GB\); or close other programs\.$/.exec(e.line);
    assert.ok(m, e.line);
    // The estimates, from the int8 files alone, within 10% of what each precision was measured to need.
    assert.ok(Math.abs(Number(m[1]) / gib(int8.peak_rss_mb) - 1) < 0.1, `int8: ${m[1]} GB against ${gib(int8.peak_rss_mb)} GiB measured`);
    assert.ok(Math.abs(Number(m[2]) / gib(measured('int4').peak_rss_mb) - 1) < 0.1, `int4: ${m[2]} GB against ${gib(measured('int4').peak_rss_mb)} GiB measured`);
    const int4 = explainOutOfMemory({ precision: 'int4', sizes: { x: measured('int4').conversion!.bytes_on_disk } } as unknown as ConvertedManifest, 1024 ** 3);
    assert.match(int4.line, /no smaller precision exists/);
  });
});
