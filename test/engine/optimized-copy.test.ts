// When a quantized graph's optimized copy cannot be made (a full disk, a folder that cannot be written), the graph
// still opens and computes what it computes with the copy, nothing half-written is left, and the user is told why
// every load stays slow.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readManifest } from '../../server/src/engine/convert/manifest';
import { openSession, optimizedCacheKey, probe } from '../../server/src/engine/runtime/ort';
import { isolatedEnv, runCli } from '../helpers/cli';
import { tinyCheckpointDir } from '../helpers/paths';
import { imagePath } from '../helpers/reference';
import { convertedTiny } from '../helpers/tiny-model';

describe('a quantized graph whose optimized copy cannot be made', () => {
  let graph: string;
  let reference: Record<string, Float32Array>;
  let tmp: string;
  before(async () => {
    const dir = await convertedTiny('int4');
    graph = path.join(dir, readManifest(dir).graphs.visionEncoder);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-copy-'));
    // The same graph with a copy made normally: what the user gets when the disk has room.
    const withCopy = await openSession(graph, { device: 'cpu', threads: 1, optimizedDir: path.join(tmp, 'roomy') });
    reference = await probe(withCopy.session);
    await withCopy.session.release();
    assert.equal(withCopy.cacheNote, undefined);
    assert.ok(fs.existsSync(path.join(tmp, 'roomy', optimizedCacheKey(), `${path.basename(graph)}.data`)), 'the roomy disk got no copy');
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('is not attempted on a disk without room for it, and the note says how much it needs', async () => {
    const dir = path.join(tmp, 'full');
    const opened = await openSession(graph, { device: 'cpu', threads: 1, optimizedDir: dir, freeBytes: () => 1024 });
    try {
      assert.deepEqual(await probe(opened.session), reference);
    } finally {
      await opened.session.release();
    }
    assert.deepEqual(fs.readdirSync(path.join(dir, optimizedCacheKey())), [], 'something was written to the full disk');
    assert.match(opened.cacheNote ?? '', /^Loading vision_encoder_q4\.onnx stays slow .* needs about \d+(\.\d+)? [KMG]B in .*full, and its disk has 1(\.0)? KB free\. Free some space on that disk, then load/);
  });

  it('falls back to the graph itself when the folder cannot be created, and says so', async () => {
    const blocked = path.join(tmp, 'blocked');
    fs.writeFileSync(blocked, 'a file where the cache folder would go');
    const opened = await openSession(graph, { device: 'cpu', threads: 1, optimizedDir: blocked });
    try {
      assert.deepEqual(await probe(opened.session), reference);
    } finally {
      await opened.session.release();
    }
    assert.equal(fs.readFileSync(blocked, 'utf8'), 'a file where the cache folder would go');
    assert.match(opened.cacheNote ?? '', /stays slow .* could not be written in .*blocked \(.+\)\. Free some space or make .*blocked writable/);
  });

  it('the CLI still captions, as it does with the copy, and tells why on stderr', async () => {
    const iso = isolatedEnv();
    try {
      const model = path.join(iso.store, 'tiny-int4');
      const converted = await runCli(['convert', '--model', tinyCheckpointDir, '--precision', 'int4', '--out', model], iso.env);
      assert.equal(converted.code, 0, converted.stderr);
      const caption = ['caption', imagePath('cat.png'), '--model', model, '--max-new-tokens', '8'];
      const normal = await runCli(caption, iso.env);
      assert.equal(normal.code, 0, normal.stderr);
      assert.doesNotMatch(normal.stderr, /stays slow/);
      // The model folder's cache of optimized copies replaced by a file: no copy can be opened or made.
      fs.rmSync(path.join(model, 'optimized'), { recursive: true, force: true });
      fs.writeFileSync(path.join(model, 'optimized'), '');
      const slow = await runCli(caption, iso.env);
      assert.equal(slow.code, 0, slow.stderr);
      assert.equal(slow.stdout, normal.stdout);
      // Only onnxruntime's decoder keeps a copy (the vision encoder and the embedding are used as converted).
      const notes = slow.stderr.split('\n').filter((l) => /stays slow/.test(l));
      assert.equal(notes.length, 1, `one note, for the decoder:\n${slow.stderr}`);
      assert.match(notes[0], /^blip2: Loading decoder_model_merged_q4\.onnx stays slow .* could not be written/);
    } finally {
      iso.cleanup();
    }
  });
});
