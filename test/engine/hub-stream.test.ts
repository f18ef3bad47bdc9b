// A Hub checkpoint converted as it streams (engine/store/hub-stream.ts, engine/convert/convert.ts) from a loopback
// Hub that behaves like the real one (test/helpers/fake-hub.ts: a 302 to signed URLs on another origin that expire,
// Range requests, the tree API's SHA-256): what lands on disk, what is sent where, and what an interruption costs.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { writeRandomCheckpoint } from '../../server/src/engine/checkpoint/random-checkpoint';
import { convertCheckpoint } from '../../server/src/engine/convert/convert';
import { MANIFEST_FILE, readManifest, type ConvertedManifest } from '../../server/src/engine/convert/manifest';
import { UserError, isCancelled } from '../../server/src/engine/errors';
import { dirSize } from '../../server/src/engine/store/model-store';
import { planSetUp, resolveModel, type ResolveOptions, type ResolvedModel } from '../../server/src/engine/store/resolve';
import { checkSpace, describeCost } from '../../server/src/engine/store/setup-cost';
import { readFolderFiles, startHub, type FakeRepo } from '../helpers/fake-hub';
import { testDir, tinyCheckpointDir } from '../helpers/paths';

const REPO = 'tiny/blip2';

const tmpDir = (t: TestContext) => testDir(t, 'blip2-stream-');

/** A sharded random checkpoint of the tiny fixture's layout (so several files and groups stream), written once. */
let sharded: Promise<string> | undefined;
function shardedCheckpoint(): Promise<string> {
  sharded ??= (async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-stream-ckpt-'));
    process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
    const out = path.join(root, 'checkpoint');
    await writeRandomCheckpoint({ configDir: tinyCheckpointDir, outDir: out, seed: 11, dtype: 'F32', shardLayoutFrom: 'size', maxShardBytes: 160 << 10 });
    return out;
  })();
  return sharded;
}

function sandbox(t: TestContext, endpoint: string, env: Record<string, string> = {}) {
  const root = tmpDir(t);
  const hfHome = path.join(root, 'hf');
  const store = path.join(root, 'store');
  const opts = (more: Partial<ResolveOptions> = {}): ResolveOptions => ({ precision: 'int4', store, env: { HF_HOME: hfHome, HF_ENDPOINT: endpoint, ...env }, ...more });
  return { root, hfHome, store, opts };
}

async function streamed(r: ResolvedModel, more: { signal?: AbortSignal; groupBytes?: number } = {}): Promise<ConvertedManifest> {
  assert.ok(r.kind === 'checkpoint' && r.stream, 'a Hub checkpoint not in the cache is streamed');
  return convertCheckpoint({ source: r.stream, outDir: r.convertedDir, precision: 'int4', sourceName: r.source, revision: r.revision, groupBytes: more.groupBytes ?? 64 << 10, signal: more.signal });
}

/** Every file of a conversion, by name; the manifest without what names its source or its time. */
function conversionFiles(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const name = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(name);
      else if (name === MANIFEST_FILE) {
        const m = readManifest(dir) as Partial<ConvertedManifest>;
        delete m.createdAt;
        const files = m.source!.files;
        delete m.source;
        out.set(name, Buffer.from(JSON.stringify({ ...m, sourceFiles: files.filter((f) => f.name.endsWith('.safetensors')) })));
      } else if (!name.startsWith('.')) out.set(name, fs.readFileSync(path.join(dir, name)));
    }
  };
  walk('');
  return out;
}

/** The streamed conversion `r` made is byte for byte what a conversion of the checkpoint folder `ckpt` makes. */
async function assertSameAsFolder(ckpt: string, r: ResolvedModel, root: string): Promise<void> {
  const local = path.join(root, 'from-folder');
  await convertCheckpoint({ checkpointDir: ckpt, outDir: local, precision: 'int4' });
  assert.ok(r.kind === 'checkpoint');
  assertSameConversion(local, r.convertedDir);
}

function assertSameConversion(a: string, b: string): void {
  const x = conversionFiles(a);
  const y = conversionFiles(b);
  assert.deepEqual([...y.keys()].sort(), [...x.keys()].sort());
  for (const [name, bytes] of x) assert.ok(bytes.equals(y.get(name)!), `${name} differs`);
}

describe('a Hub checkpoint converted as it streams', () => {
  test('writes what a conversion of the same checkpoint from a folder writes, and keeps no weights', async (t) => {
    const ckpt = await shardedCheckpoint();
    const files = readFolderFiles(ckpt);
    const hub = await startHub(t, [{ id: REPO, files, access: { mode: 'gated', token: 'hf_secret' } }]);
    const box = sandbox(t, hub.url, { HF_TOKEN: 'hf_secret' });

    const r = await resolveModel(REPO, box.opts());
    await streamed(r);

    await assertSameAsFolder(ckpt, r, box.root);

    const weights = Object.keys(files).filter((n) => n.endsWith('.safetensors'));
    assert.ok(weights.length >= 3, 'the checkpoint is sharded');
    const source = weights.reduce((s, n) => s + files[n].length, 0);
    // Each shard's bytes once, and its header once more (read first, to plan the conversion); nothing else.
    const headers = weights.reduce((s, n) => s + 8 + Number(files[n].readBigUInt64LE(0)), 0);
    assert.equal(hub.bytesSent((l) => l.host === 'cdn'), source + headers);
    // The weights are not in the Hugging Face cache, nor anywhere in the store but as the conversion.
    assert.ok(r.kind === 'checkpoint');
    const cache = path.join(box.hfHome, 'hub', 'models--tiny--blip2');
    assert.equal(fs.readdirSync(path.join(cache, 'blobs')).filter((b) => !b.endsWith('.incomplete')).length, Object.keys(files).length - weights.length);
    const small = Object.entries(files).filter(([n]) => !n.endsWith('.safetensors')).reduce((s, [, b]) => s + b.length, 0);
    assert.ok((await dirSize(cache)) < small + 4096, 'only the configs and tokenizer are cached');
    assert.equal(fs.readdirSync(path.dirname(r.convertedDir)).filter((n) => n !== path.basename(r.convertedDir)).length, 0, 'nothing is left beside the conversion');
    // The token went to the Hub, and never to the CDN.
    assert.ok(hub.log.some((l) => l.host === 'hub' && l.authorization === 'Bearer hf_secret'));
    assert.deepEqual(hub.log.filter((l) => l.host === 'cdn' && l.authorization), []);
    // Each weight file resolved once (signed URLs live an hour), its bytes fetched in ranges.
    const resolves = hub.log.filter((l) => l.host === 'hub' && l.method === 'HEAD' && l.url.includes('/resolve/') && l.url.endsWith('.safetensors'));
    assert.equal(resolves.length, weights.length);
  });

  test('an expired signed address is resolved again, and the stream goes on', async (t) => {
    const ckpt = await shardedCheckpoint();
    const hub = await startHub(t, [{ id: REPO, files: readFolderFiles(ckpt) }]);
    hub.signedUrlTtlMs = 150;
    hub.bytesPerSecond = 1 << 20;
    const box = sandbox(t, hub.url);
    const r = await resolveModel(REPO, box.opts());
    await streamed(r, { groupBytes: 32 << 10 });
    const refused = hub.log.filter((l) => l.host === 'cdn' && l.status === 403);
    assert.ok(refused.length > 0, 'the CDN refused expired signatures');
    await assertSameAsFolder(ckpt, r, box.root);
  });

  test('a cancel keeps what was converted, and the next run resumes from the last finished group', async (t) => {
    const ckpt = await shardedCheckpoint();
    const files = readFolderFiles(ckpt);
    const hub = await startHub(t, [{ id: REPO, files }]);
    const box = sandbox(t, hub.url);
    const source = Object.entries(files).filter(([n]) => n.endsWith('.safetensors')).reduce((s, [, b]) => s + b.length, 0);
    hub.bytesPerSecond = 1 << 20;

    const controller = new AbortController();
    const r = await resolveModel(REPO, box.opts());
    const timer = setInterval(() => {
      if (hub.bytesSent((l) => l.host === 'cdn') > source / 2) controller.abort();
    }, 5);
    t.after(() => clearInterval(timer));
    await assert.rejects(streamed(r, { signal: controller.signal }), (e) => isCancelled(e));
    clearInterval(timer);
    const before = hub.bytesSent((l) => l.host === 'cdn');
    assert.ok(before < source, 'cancelled before the end');
    assert.ok(r.kind === 'checkpoint');
    assert.equal(fs.existsSync(r.convertedDir), false, 'nothing looks finished');
    assert.ok(fs.existsSync(`${r.convertedDir}.incomplete/.journal/journal.json`), 'the progress was journaled');

    hub.bytesPerSecond = 0;
    const again = await resolveModel(REPO, box.opts());
    await streamed(again);
    const total = hub.bytesSent((l) => l.host === 'cdn');
    // The second run fetched the rest and at most the group that was in flight when the cancel came.
    assert.ok(total - before < source - before / 2, `resumed run sent ${total - before} of ${source}`);
    assert.ok(total <= source * 1.1 + (64 << 10) * 2, `${total} bytes in all for ${source}`);
    await assertSameAsFolder(ckpt, r, box.root);
  });

  test('a checksum that does not match the Hub\'s discards the conversion with one sentence', async (t) => {
    const ckpt = await shardedCheckpoint();
    const files = readFolderFiles(ckpt);
    const shard = Object.keys(files).find((n) => n.endsWith('.safetensors'))!;
    const hub = await startHub(t, [{ id: REPO, files }]);
    hub.tamper(shard, files[shard].length - 10);
    const box = sandbox(t, hub.url);
    const r = await resolveModel(REPO, box.opts());
    const e = await streamed(r).then(() => undefined, (err: unknown) => err);
    assert.ok(e instanceof UserError, String(e));
    assert.equal(e.message, `The download of ${shard} from ${REPO} did not match the checksum the Hub lists for it, so the conversion made from it was discarded.`);
    assert.ok(r.kind === 'checkpoint');
    assert.equal(fs.existsSync(`${r.convertedDir}.incomplete`), false);
    assert.equal(fs.existsSync(r.convertedDir), false);
  });

  test('a token revoked in the middle stops with a sentence that says so, and set-up resumes once it is fixed', async (t) => {
    const ckpt = await shardedCheckpoint();
    const repo: FakeRepo = { id: REPO, files: readFolderFiles(ckpt), access: { mode: 'gated', token: 'hf_first' } };
    const hub = await startHub(t, [repo]);
    hub.signedUrlTtlMs = 150;
    hub.bytesPerSecond = 1 << 20;
    const box = sandbox(t, hub.url, { HF_TOKEN: 'hf_first' });
    const r = await resolveModel(REPO, box.opts());
    const timer = setInterval(() => {
      if (hub.bytesSent((l) => l.host === 'cdn') > 128 << 10) hub.setToken(REPO, 'hf_second');
    }, 5);
    t.after(() => clearInterval(timer));
    const e = await streamed(r, { groupBytes: 32 << 10 }).then(() => undefined, (err: unknown) => err);
    clearInterval(timer);
    assert.ok(e instanceof UserError, String(e));
    assert.match(e.message, /^The Hugging Face Hub refused the token in HF_TOKEN for model-\d+-of-\d+\.safetensors of tiny\/blip2 \(HTTP 403/);
    assert.match(e.hint ?? '', /resumes where it stopped/);

    hub.bytesPerSecond = 0;
    const fixed = sandbox(t, hub.url, { HF_TOKEN: 'hf_second' });
    const again = await resolveModel(REPO, { ...fixed.opts(), store: box.store, env: { ...fixed.opts().env, HF_HOME: box.hfHome } });
    await streamed(again);
    assert.ok(again.kind === 'checkpoint' && fs.existsSync(path.join(again.convertedDir, MANIFEST_FILE)));
  });

  test('set-up states what it will download and write before any weight moves, and then does that', async (t) => {
    const ckpt = await shardedCheckpoint();
    const files = readFolderFiles(ckpt);
    const hub = await startHub(t, [{ id: REPO, files }]);
    const box = sandbox(t, hub.url);
    const cost = await planSetUp(REPO, box.opts());
    const weights = Object.keys(files).filter((n) => n.endsWith('.safetensors'));
    const source = weights.reduce((s, n) => s + files[n].length, 0);
    const small = Object.keys(files).filter((n) => !n.endsWith('.safetensors') && n !== 'model.safetensors.index.json').reduce((s, n) => s + files[n].length, 0);
    assert.equal(cost.kind, 'stream');
    assert.equal(cost.sourceBytes, source);
    assert.equal(cost.downloadBytes, source + small);
    assert.equal(cost.sourceDtype, 'float32');
    // Planning read each shard's header and nothing of its tensors.
    assert.equal(hub.log.filter((l) => l.host === 'cdn').length, 2 * weights.length);
    assert.equal(describeCost(cost).startsWith(`Setting up ${REPO} downloads `), true);

    const r = await resolveModel(REPO, box.opts());
    await streamed(r);
    assert.ok(r.kind === 'checkpoint');
    // The conversion's files; the cache's small files and the first load's copy come on top.
    const written = await dirSize(r.convertedDir);
    const said = cost.finalDiskBytes - cost.firstLoadBytes - small;
    assert.ok(written <= said && written >= 0.9 * said, `wrote ${written}, said ${said}`);
    assert.ok(cost.peakDiskBytes >= cost.finalDiskBytes);
  });

  test('a half-size (bfloat16) checkpoint is said to be one, downloads half the bytes, and converts as a folder of it does', async (t) => {
    const root = tmpDir(t);
    const ckpt = path.join(root, 'bf16');
    await writeRandomCheckpoint({ configDir: tinyCheckpointDir, outDir: ckpt, seed: 11, dtype: 'BF16', shardLayoutFrom: 'size', maxShardBytes: 160 << 10 });
    const files = readFolderFiles(ckpt);
    const hub = await startHub(t, [{ id: REPO, files }]);
    const box = sandbox(t, hub.url);
    const cost = await planSetUp(REPO, box.opts());
    assert.equal(cost.sourceDtype, 'bfloat16');
    assert.match(describeCost(cost), /, a bfloat16 checkpoint, half the size of the float32 one and converts it to int4 as it arrives/);
    const f32 = await planSetUp(REPO, sandbox(t, (await startHub(t, [{ id: REPO, files: readFolderFiles(await shardedCheckpoint()) }])).url).opts());
    // The tensors take half the bytes; the shards' headers (a few percent of this tiny checkpoint) do not shrink.
    assert.ok(Math.abs(cost.sourceBytes / f32.sourceBytes - 0.5) < 0.02, `${cost.sourceBytes} against ${f32.sourceBytes}`);
    const r = await resolveModel(REPO, box.opts());
    await streamed(r);
    await assertSameAsFolder(ckpt, r, root);
  });

  test('a disk that cannot hold the model is refused before anything is downloaded, with what it needs and where', async (t) => {
    const hub = await startHub(t, [{ id: REPO, files: readFolderFiles(await shardedCheckpoint()) }]);
    const box = sandbox(t, hub.url);
    const cost = await planSetUp(REPO, box.opts());
    const e = (() => {
      try {
        checkSpace({ ...cost, freeBytes: 1000 });
      } catch (err) {
        return err;
      }
    })();
    assert.ok(e instanceof UserError);
    assert.match(e.message, new RegExp(`^Setting up ${REPO} at int4 needs [\\d.]+ (KB|MB) of free disk in .+, and the disk there has only 1000 bytes free\\.$`));
    assert.equal(e.hint, 'Free some space, or choose a folder on a bigger disk for converted models (the blip2.modelStore setting, or --store).');
  });

  test('a repository that is not BLIP-2 is refused before any weight is requested', async (t) => {
    const files = readFolderFiles(await shardedCheckpoint());
    const config = JSON.parse(files['config.json'].toString()) as Record<string, unknown>;
    files['config.json'] = Buffer.from(JSON.stringify({ ...config, model_type: 'llava' }));
    const hub = await startHub(t, [{ id: REPO, files }]);
    const box = sandbox(t, hub.url);
    const e = await resolveModel(REPO, box.opts()).then(() => undefined, (err: unknown) => err);
    assert.ok(e instanceof UserError);
    assert.equal(e.message, `${REPO} is a "llava" model, not BLIP-2.`);
    assert.deepEqual(hub.log.filter((l) => l.host === 'cdn'), []);
  });

  test('the network gone in the middle ends in one sentence, and the next run resumes', async (t) => {
    const ckpt = await shardedCheckpoint();
    const files = readFolderFiles(ckpt);
    const hub = await startHub(t, [{ id: REPO, files }]);
    const box = sandbox(t, hub.url);
    const r = await resolveModel(REPO, box.opts());
    // Every content request from the second on fails as a dropped connection does.
    hub.failures = { match: /^\/cdn\//, status: 0, count: 1000, after: 1 };
    const e = await streamed(r).then(() => undefined, (err: unknown) => err);
    assert.ok(e instanceof UserError, String(e));
    assert.match(e.message, /^The download of model-\d+-of-\d+\.safetensors kept failing \(/);
    assert.equal(e.hint, 'Check the connection and set up again; it resumes where it stopped.');
    hub.failures = undefined;
    await streamed(await resolveModel(REPO, box.opts()));
    await assertSameAsFolder(ckpt, r, box.root);
  });
});
