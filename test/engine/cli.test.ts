// The blip2 CLI end to end on the tiny checkpoint: outputs against transformers' reference, and every bad input.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chatPrompt } from '../../server/src/engine/preprocess/prompts';
import { convertedDirForCheckpoint, storePaths } from '../../server/src/engine/store/model-store';
import { isolatedEnv, runCli, type CliResult } from '../helpers/cli';
import { tinyCheckpointDir } from '../helpers/paths';
import { imagePath, loadManifest, type ReferenceCase } from '../helpers/reference';
import { configurationProperties } from '../client/manifest';

const manifest = loadManifest();
const byId = (id: string): ReferenceCase => manifest.cases.find((c) => c.id === id)!;

function jsonLines(r: CliResult): Record<string, unknown>[] {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** One line on stderr, a non-zero exit, no stack trace. */
function assertUserError(r: CliResult, pattern: RegExp): void {
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0], /^blip2: /);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
}

describe('blip2 CLI on tiny-blip2 (fp32)', () => {
  const iso = isolatedEnv();
  const model = ['--model', tinyCheckpointDir, '--precision', 'fp32'];
  after(() => iso.cleanup());

  it('captions several images in one run with the tokens transformers generates', async () => {
    const cases = ['caption-astronaut', 'caption-horse-rgba', 'caption-noise-palette', 'caption-rocket'].map(byId);
    const r = await runCli(['caption', ...cases.map((c) => imagePath(c.images[0])), ...model, '--max-new-tokens', '12', '--json'], iso.env);
    const records = jsonLines(r);
    assert.equal(records.length, cases.length);
    records.forEach((rec, i) => {
      assert.equal(rec.image, imagePath(cases[i].images[0]));
      assert.deepEqual(rec.token_ids, cases[i].new_token_ids[0]);
      assert.equal(rec.text, cases[i].text[0]);
      assert.equal(rec.precision, 'fp32');
      assert.equal(rec.device, 'cpu');
      assert.deepEqual(Object.keys(rec.timings_ms as object).sort(), ['decode', 'load', 'prefill', 'preprocess', 'total', 'vision']);
    });
  });

  it('answers a question in the "Question: … Answer:" form', async () => {
    const c = byId('vqa-cat');
    const question = c.prompts![0].replace(/^Question: /, '').replace(/ Answer:$/, '');
    const r = await runCli(['ask', imagePath(c.images[0]), question, ...model, '--max-new-tokens', '12'], iso.env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${c.text[0]}\n`);
  });

  it('continues a caption prompt with repetition penalty and no-repeat n-grams', async () => {
    const c = byId('penalties-rocket');
    const r = await runCli(['caption', imagePath(c.images[0]), '--prompt', c.prompts![0], ...model,
      '--max-new-tokens', String(c.generate.max_new_tokens), '--repetition-penalty', String(c.generate.repetition_penalty),
      '--no-repeat-ngram-size', String(c.generate.no_repeat_ngram_size), '--json'], iso.env);
    const [rec] = jsonLines(r);
    assert.deepEqual(rec.token_ids, c.new_token_ids[0]);
  });

  it('an explicit temperature of 0 is greedy, whatever other sampling options say', async () => {
    const c = byId('caption-cat');
    const r = await runCli(['caption', imagePath(c.images[0]), ...model, '--max-new-tokens', '12', '--temperature', '0', '--top-k', '5', '--json'], iso.env);
    const [rec] = jsonLines(r);
    assert.deepEqual(rec.token_ids, c.new_token_ids[0]);
  });

  it('runs beam search and returns the other beams as alternatives', async () => {
    const c = byId('beam-coffee');
    const r = await runCli(['caption', imagePath(c.images[0]), ...model, '--num-beams', String(c.generate.num_beams),
      '--num-return-sequences', '2', '--max-new-tokens', String(c.generate.max_new_tokens), '--json'], iso.env);
    const [rec] = jsonLines(r);
    assert.deepEqual(rec.token_ids, c.new_token_ids[0]);
    assert.equal((rec.alternatives as unknown[]).length, 1);
  });

  it('chats: the first answer is the visual answer, later questions carry the earlier turns', async () => {
    const question = 'what is in the picture?';
    const asked = await runCli(['ask', imagePath('astronaut.png'), question, ...model, '--max-new-tokens', '8'], iso.env);
    const r = await runCli(['chat', imagePath('astronaut.png'), ...model, '--max-new-tokens', '8', '--json'], iso.env, `${question}\nwhat color is it?\n`);
    const records = jsonLines(r);
    assert.equal(records.length, 2);
    assert.equal(`${records[0].text}\n`, asked.stdout);
    // The chat prompt format is the one transformers' reference case was built with.
    const c = byId('chat-astronaut');
    assert.equal(chatPrompt([{ question, answer: 'a man in a suit' }], 'what color is it?'), c.prompts![0]);
  });

  it('falls back to the CPU with a message when the requested device cannot run', async () => {
    const c = byId('caption-cat');
    for (const device of ['webgpu', 'cuda']) {
      const r = await runCli(['caption', imagePath(c.images[0]), ...model, '--device', device, '--max-new-tokens', '12', '--json'], iso.env);
      const [rec] = jsonLines(r);
      assert.equal(rec.device, 'cpu');
      assert.equal(rec.text, c.text[0]);
      assert.match(r.stderr, new RegExp(`running on the CPU because the ${device} execution provider`));
    }
  });

  it('converts into the store once, recording the source checksums', async () => {
    const out = path.join(iso.store, 'explicit-int4');
    const r = await runCli(['convert', '--model', tinyCheckpointDir, '--precision', 'int4', '--out', out], iso.env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), out);
    const m = JSON.parse(fs.readFileSync(path.join(out, 'blip2-onnx.json'), 'utf8'));
    assert.equal(m.precision, 'int4');
    const weights = m.source.files.find((f: { name: string }) => f.name === 'model.safetensors');
    const sha = crypto.createHash('sha256').update(fs.readFileSync(path.join(tinyCheckpointDir, 'model.safetensors'))).digest('hex');
    assert.equal(weights.sha256, sha);
    for (const g of Object.values(m.graphs) as string[]) assert.ok(fs.existsSync(path.join(out, g)), g);
  });
});

describe('blip2 CLI: bad input gets one clear line and a non-zero exit', () => {
  const iso = isolatedEnv();
  let work: string;
  const model = (dir: string) => ['--model', dir, '--precision', 'fp32'];
  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-bad-'));
  });
  after(() => {
    iso.cleanup();
    fs.rmSync(work, { recursive: true, force: true });
  });

  /** A copy of the tiny checkpoint with one file replaced. */
  function brokenCheckpoint(name: string, mutate: (dir: string) => void): string {
    const dir = path.join(work, name);
    fs.cpSync(tinyCheckpointDir, dir, { recursive: true, filter: (src) => !src.includes(`${path.sep}reference`) });
    mutate(dir);
    return dir;
  }

  /** Nothing half-written: every folder in the store is either absent or a finished conversion. */
  function assertStoreClean(): void {
    if (!fs.existsSync(iso.store)) return;
    const walk = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? [path.join(dir, e.name), ...walk(path.join(dir, e.name))] : []));
    for (const d of walk(iso.store)) {
      assert.doesNotMatch(d, /\.partial-/, `leftover ${d}`);
      if (fs.existsSync(path.join(d, 'onnx'))) assert.ok(fs.existsSync(path.join(d, 'blip2-onnx.json')), `unfinished ${d}`);
    }
  }

  it('a missing image', async () => {
    assertUserError(await runCli(['caption', path.join(work, 'nope.png'), ...model(tinyCheckpointDir)], iso.env), /The image file does not exist: .*nope\.png/);
  });

  it('a corrupt image', async () => {
    const file = path.join(work, 'cut.png');
    const png = fs.readFileSync(imagePath('cat.png'));
    fs.writeFileSync(file, png.subarray(0, png.length / 3));
    assertUserError(await runCli(['caption', file, ...model(tinyCheckpointDir)], iso.env), /cut\.png .*(image|truncated|corrupt)/i);
  });

  it('a file that is not an image', async () => {
    const file = path.join(work, 'notes.png');
    fs.writeFileSync(file, 'these are notes, not pixels\n');
    assertUserError(await runCli(['caption', file, ...model(tinyCheckpointDir)], iso.env), /notes\.png is not a readable image/);
  });

  it('a device, a named pipe and a file over --max-image-mb, refused before a byte is read', async () => {
    assertUserError(await runCli(['caption', '/dev/zero', ...model(tinyCheckpointDir)], iso.env), /^blip2: \/dev\/zero is a device, not an image file\. Only regular files are read as images\.$/);
    const fifo = path.join(work, 'pipe.png');
    spawnSync('mkfifo', [fifo]);
    assertUserError(await runCli(['caption', fifo, ...model(tinyCheckpointDir)], iso.env), /pipe\.png is a named pipe, not an image file/);
    // Sparse: 3 MB on paper, nothing on disk.
    const big = path.join(work, 'big.png');
    fs.closeSync(fs.openSync(big, 'w'));
    fs.truncateSync(big, 3 * 1024 * 1024);
    assertUserError(
      await runCli(['caption', big, ...model(tinyCheckpointDir), '--max-image-mb', '2'], iso.env),
      /big\.png is 3 MB, more than the limit of 2 MB for image files\. Pass --max-image-mb with a larger limit to caption it\.$/,
    );
  });

  it('a truncated shard', async () => {
    const dir = brokenCheckpoint('truncated', (d) => {
      const f = path.join(d, 'model.safetensors');
      fs.truncateSync(f, Math.floor(fs.statSync(f).size * 0.6));
    });
    assertUserError(await runCli(['caption', imagePath('cat.png'), ...model(dir)], iso.env), /model\.safetensors is truncated/);
    assertStoreClean();
  });

  it('a corrupt safetensors header', async () => {
    const dir = brokenCheckpoint('corrupt-header', (d) => {
      const f = path.join(d, 'model.safetensors');
      const buf = fs.readFileSync(f);
      buf.fill(0x7b, 8, 40); // "{{{{…" where the JSON header starts
      fs.writeFileSync(f, buf);
    });
    assertUserError(await runCli(['caption', imagePath('cat.png'), ...model(dir)], iso.env), /model\.safetensors is not a valid safetensors file/);
    assertStoreClean();
  });

  it('a checkpoint of another architecture', async () => {
    const dir = brokenCheckpoint('flan-t5', (d) => {
      const f = path.join(d, 'config.json');
      const cfg = JSON.parse(fs.readFileSync(f, 'utf8'));
      cfg.text_config.model_type = 't5';
      fs.writeFileSync(f, JSON.stringify(cfg));
    });
    assertUserError(await runCli(['caption', imagePath('cat.png'), ...model(dir)], iso.env), /Flan-T5 .*only BLIP-2 OPT checkpoints are supported/);
    assertStoreClean();
  });

  it('model files over their size or counts, or not regular files, refused before they are parsed or converted', async () => {
    const sparse = (file: string, bytes: number) => {
      fs.rmSync(file);
      fs.closeSync(fs.openSync(file, 'w'));
      fs.truncateSync(file, bytes);
    };
    const cases: [string, (dir: string) => void, RegExp][] = [
      // The probe's file was 196 MB with 1.2 million added tokens: V8 ran out of memory at 3.5 GB.
      ['huge-tokenizer', (d) => sparse(path.join(d, 'tokenizer.json'), 200 * 1024 * 1024), /tokenizer\.json is 200 MB, more than the 32 MB a tokenizer\.json may be\. Download the model again\.$/],
      ['many-added-tokens', (d) => {
        const file = path.join(d, 'tokenizer.json');
        const tokenizer = JSON.parse(fs.readFileSync(file, 'utf8'));
        for (let i = 0; i < 100_001; i++) tokenizer.added_tokens.push({ id: 1000 + i, content: `t${i}`, special: false });
        fs.writeFileSync(file, JSON.stringify(tokenizer));
      }, /tokenizer\.json has 100006 added tokens, more than the 100000 a tokenizer is read with/],
      ['huge-config', (d) => sparse(path.join(d, 'config.json'), 10 * 1024 * 1024), /config\.json is 10 MB, more than the 4 MB a config\.json may be/],
      ['fifo-tokenizer', (d) => {
        fs.rmSync(path.join(d, 'tokenizer.json'));
        spawnSync('mkfifo', [path.join(d, 'tokenizer.json')]);
        // Found by the checkpoint's inspection, which takes only regular files: no read waits on the pipe.
      }, /fifo-tokenizer is an incomplete BLIP-2 checkpoint: it has no tokenizer\.json/],
    ];
    for (const [name, mutate, pattern] of cases) {
      const dir = brokenCheckpoint(name, mutate);
      assertUserError(await runCli(['caption', imagePath('cat.png'), ...model(dir)], iso.env), pattern);
      assertStoreClean();
      assert.ok(!fs.existsSync(iso.store) || !fs.readdirSync(path.join(iso.store, 'local')).some((f) => f.startsWith(name)), `${name} was not converted`);
    }
  });

  it('a precision that does not exist', async () => {
    assertUserError(await runCli(['caption', imagePath('cat.png'), '--model', tinyCheckpointDir, '--precision', 'int2'], iso.env), /Unknown precision "int2".*fp32, fp16, int8, int4/);
  });

  it('a device that does not exist', async () => {
    assertUserError(await runCli(['caption', imagePath('cat.png'), ...model(tinyCheckpointDir), '--device', 'tpu'], iso.env), /Unknown device "tpu".*cpu/);
  });

  it('a Hub model while offline with nothing cached', async () => {
    assertUserError(await runCli(['caption', imagePath('cat.png'), '--model', 'Salesforce/blip2-opt-2.7b'], iso.env), /not in the Hugging Face cache/);
  });

  it('a non-empty --out folder, which is never overwritten', async () => {
    const out = path.join(work, 'mine');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'notes.txt'), 'keep me');
    assertUserError(await runCli(['convert', ...model(tinyCheckpointDir), '--out', out], iso.env), /mine already exists and is not empty/);
    assert.equal(fs.readFileSync(path.join(out, 'notes.txt'), 'utf8'), 'keep me');
  });

  it('a conversion a killed process abandoned is reclaimed by the next one', async () => {
    const target = await convertedDirForCheckpoint(storePaths(iso.store), tinyCheckpointDir, 'int8');
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid!;
    const abandoned = `${target}.partial-${deadPid}-0badc0de`;
    fs.mkdirSync(path.join(abandoned, 'onnx'), { recursive: true });
    const r = await runCli(['convert', '--model', tinyCheckpointDir, '--precision', 'int8'], iso.env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), target);
    assert.equal(fs.existsSync(abandoned), false);
    assertStoreClean();
  });

  it('a number outside its setting\'s range, before any model loads (exit 2)', async () => {
    const declared = (key: string) => configurationProperties()[`blip2.${key}`];
    const cases: [string, string, RegExp][] = [
      ['--temperature', '1e-300', /--temperature must be 0 or a number from 0\.01 to 100 \(got "1e-300"\)/],
      ['--threads', '100000', new RegExp(`--threads must be a whole number from ${declared('threads').minimum} to ${declared('threads').maximum} \\(got "100000"\\)`)],
      ['--threads', '1000', /--threads must be a whole number from 0 to 256/],
      ['--num-beams', '10000', new RegExp(`--num-beams must be a whole number from 1 to ${declared('generation.numBeams').maximum}`)],
      ['--max-new-tokens', '100000', new RegExp(`--max-new-tokens must be a whole number from 1 to ${declared('generation.maxNewTokens').maximum} \\(got "100000"\\)`)],
      ['--repetition-penalty', '50', new RegExp(`--repetition-penalty must be a number from 1 to ${declared('generation.repetitionPenalty').maximum}`)],
      ['--max-image-mb', '1e9', /--max-image-mb must be a whole number from 1 to 1024/],
      ['--threads', '', /--threads must be a whole number from 0 to 256 \(got ""\)/],
    ];
    for (const [flag, value, pattern] of cases) {
      for (const command of ['caption', 'ask']) {
        const args = command === 'ask' ? [command, imagePath('cat.png'), 'why?'] : [command, imagePath('cat.png')];
        const r = await runCli([...args, ...model(tinyCheckpointDir), flag, value], iso.env);
        assertUserError(r, pattern);
        assert.equal(r.code, 2, `${command} ${flag} ${value}`);
      }
    }
    const fix = await runCli(['fix', work, '--num-beams', '10000'], iso.env);
    assertUserError(fix, /--num-beams must be a whole number from 1 to 16/);
  });

  it('a question of 32,000 characters gets the prompt-length sentence, with onnxruntime\'s telemetry off', async () => {
    // onnxruntime's telemetry parsed /proc/self/cmdline with a recursive regex: this argument was a segfault (139).
    const home = path.join(work, 'home');
    fs.mkdirSync(home);
    const question = 'why '.repeat(8000);
    const r = await runCli(['ask', imagePath('cat.png'), question, ...model(tinyCheckpointDir)], { ...iso.env, HOME: home });
    assertUserError(r, /^blip2: The prompt is \d+ tokens long, more than the \d+ that fit in the model's context/);
    assert.equal(r.code, 1);
    assert.deepEqual(fs.readdirSync(home), [], 'nothing written under HOME (onnxruntime keeps its telemetry in ~/.cache/Microsoft)');
  });

  it('more new tokens than the model\'s context holds, said as such', async () => {
    const config = JSON.parse(fs.readFileSync(path.join(tinyCheckpointDir, 'config.json'), 'utf8'));
    const positions: number = config.text_config.max_position_embeddings;
    const queries: number = config.num_query_tokens;
    assertUserError(
      await runCli(['caption', imagePath('cat.png'), ...model(tinyCheckpointDir), '--max-new-tokens', String(positions)], iso.env),
      new RegExp(`Up to ${positions} new tokens do not fit in the model's context of ${positions} positions with the image's ${queries} tokens: at most ${positions - queries - 1} can be generated`),
    );
  });

  it('an unknown option', async () => {
    assertUserError(await runCli(['caption', imagePath('cat.png'), '--beams', '3'], iso.env), /--beams/);
  });
});
