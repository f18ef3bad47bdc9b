import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { UserError, isCancelled } from '../../server/src/engine/errors';
import { hfHubCacheDir, parseRepoSpec, repoFolderName } from '../../server/src/engine/store/hf-cache';
import {
  cleanStaleTemp,
  defaultStoreDir,
  isConverted,
  listStore,
  publishDir,
  storePaths,
  storeRoot,
  tempDirFor,
} from '../../server/src/engine/store/model-store';
import { resolveModel, type DownloadProgress, type ResolveOptions } from '../../server/src/engine/store/resolve';
import { FakeHub, gitBlobSha1, readFolderFiles, sha256, startHub, type FakeRepo } from '../helpers/fake-hub';
import { testDir, tinyCheckpointDir } from '../helpers/paths';
import { CONVERTER_VERSION, MANIFEST_FORMAT } from '../../server/src/engine/convert/manifest';

const fixture = readFolderFiles(tinyCheckpointDir);
const REPO = 'tiny/blip2';

const tmpDir = (t: TestContext) => testDir(t, 'blip2-store-');

/** A home for the Hugging Face cache and a store, and the environment pointing at them and at `endpoint`. */
function sandbox(t: TestContext, endpoint: string, extra: Record<string, string> = {}) {
  const root = tmpDir(t);
  const hfHome = path.join(root, 'hf');
  const store = path.join(root, 'store');
  const env = { HF_HOME: hfHome, HF_ENDPOINT: endpoint, ...extra };
  // The download into the Hugging Face cache (--keep-source); streaming into a conversion is hub-stream.test.ts's.
  const opts = (more: Partial<ResolveOptions> = {}): ResolveOptions => ({ precision: 'fp32', store, env, keepSource: true, ...more });
  return { root, hfHome, hubCache: path.join(hfHome, 'hub'), store, env, opts };
}

/** The name Python gives a file's blob: the LFS sha256 for weights, the git blob sha1 for the rest. */
const etagOf = (name: string, b: Buffer) => (name.endsWith('.safetensors') ? sha256(b) : gitBlobSha1(b));

async function userError(p: Promise<unknown>): Promise<UserError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof UserError, `expected a UserError, got ${(e as Error)?.stack ?? e}`);
    return e;
  }
  assert.fail('expected a UserError, but it resolved');
}

async function closedPortUrl(): Promise<string> {
  const hub = await FakeHub.start([]);
  const url = hub.url;
  await hub.close();
  return url;
}

/** The manifest a finished conversion of `source` has, as the converter writes it (graphs are not needed here). */
function manifestJson(source: string): string {
  return JSON.stringify({ format: MANIFEST_FORMAT, converterVersion: CONVERTER_VERSION, precision: 'fp32', source: { model: source, dir: source, files: [] } });
}

describe('repo ids and cache locations', () => {
  test('parseRepoSpec accepts Org/Name[@revision] and nothing that could be a path', () => {
    assert.deepEqual(parseRepoSpec('Salesforce/blip2-opt-2.7b'), { repo: 'Salesforce/blip2-opt-2.7b', revision: 'main', explicitRevision: false });
    assert.deepEqual(parseRepoSpec('Salesforce/blip2-opt-2.7b@refs/pr/38'), { repo: 'Salesforce/blip2-opt-2.7b', revision: 'refs/pr/38', explicitRevision: true });
    for (const bad of ['gpt2', './a/b', 'a/b/c', '/abs/path', '~/x', 'a/../b', 'a--b/c', 'a/b@', 'a/b@../../x', 'C:\\models\\x', '-a/b']) {
      assert.equal(parseRepoSpec(bad), undefined, bad);
    }
    assert.equal(repoFolderName('Salesforce/blip2-opt-2.7b'), 'models--Salesforce--blip2-opt-2.7b');
  });

  test('the hub cache follows HF_HUB_CACHE, then HF_HOME, then XDG_CACHE_HOME, as huggingface_hub does', () => {
    assert.equal(hfHubCacheDir({ HF_HUB_CACHE: '/c/hub', HF_HOME: '/h' }), path.resolve('/c/hub'));
    assert.equal(hfHubCacheDir({ HF_HOME: '/h' }), path.resolve('/h/hub'));
    assert.equal(hfHubCacheDir({ XDG_CACHE_HOME: '/x' }), path.resolve('/x/huggingface/hub'));
    assert.equal(hfHubCacheDir({}), path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
  });

  test('the store is --store, else BLIP2_HOME, else the platform cache folder', () => {
    assert.equal(storeRoot('/s', { BLIP2_HOME: '/b' }), path.resolve('/s'));
    assert.equal(storeRoot(undefined, { BLIP2_HOME: '/b' }), path.resolve('/b'));
    assert.equal(defaultStoreDir({ XDG_CACHE_HOME: '/xdg' }, 'linux'), path.join('/xdg', 'blip2'));
    assert.equal(defaultStoreDir({ XDG_CACHE_HOME: 'relative' }, 'linux'), path.join(os.homedir(), '.cache', 'blip2'));
    assert.equal(defaultStoreDir({}, 'darwin'), path.join(os.homedir(), 'Library', 'Caches', 'blip2'));
    assert.equal(defaultStoreDir({ LOCALAPPDATA: 'C:\\Users\\u\\AppData\\Local' }, 'win32'), path.join('C:\\Users\\u\\AppData\\Local', 'blip2'));
    const p = storePaths('/s', {});
    assert.deepEqual([p.hub, p.local], [path.resolve('/s/hub'), path.resolve('/s/local')]);
  });
});

describe('downloads from the Hub into the Hugging Face cache', () => {
  test('writes the Python layout, fetches only the checkpoint files, reports progress, then works with the Hub gone', async (t) => {
    const extra = { 'pytorch_model.bin': randomBytes(1000), 'README.md': Buffer.from('# tiny\n') };
    const hub = await startHub(t, [{ id: REPO, files: { ...fixture, ...extra } }]);
    const box = sandbox(t, hub.url);
    const events: DownloadProgress[] = [];

    const r = await resolveModel(REPO, box.opts({ onProgress: (p) => events.push({ ...p }) }));

    const commit = hub.commitOf(REPO);
    const repoDir = path.join(box.hubCache, 'models--tiny--blip2');
    const snapshot = path.join(repoDir, 'snapshots', commit);
    assert.ok(r.kind === 'checkpoint' && r.cost.kind === 'download');
    const { cost: _cost, ...resolved } = r;
    assert.deepEqual(resolved, {
      kind: 'checkpoint',
      checkpointDir: snapshot,
      source: REPO,
      revision: commit,
      convertedDir: path.join(box.store, 'hub', 'tiny--blip2', commit, 'fp32'),
    });
    assert.equal(fs.readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8'), commit);
    for (const [name, bytes] of Object.entries(fixture)) {
      const pointer = path.join(snapshot, name);
      assert.ok(fs.lstatSync(pointer).isSymbolicLink(), `${name} is a link`);
      assert.equal(fs.readlinkSync(pointer), path.join('..', '..', 'blobs', etagOf(name, bytes)));
      assert.ok(fs.readFileSync(pointer).equals(bytes), `${name} has the Hub's bytes`);
    }
    assert.deepEqual(fs.readdirSync(path.join(repoDir, 'blobs')).sort(), Object.entries(fixture).map(([n, b]) => etagOf(n, b)).sort());
    assert.deepEqual(fs.readdirSync(snapshot).sort(), Object.keys(fixture).sort());
    for (const name of Object.keys(extra)) {
      assert.equal(hub.log.filter((l) => l.url.endsWith(`/${name}`)).length, 0, `${name} was not requested`);
    }

    const total = Object.values(fixture).reduce((s, b) => s + b.length, 0);
    assert.ok(events.length > 0);
    assert.ok(events.every((e) => e.total === total), 'every event carries the total size');
    assert.deepEqual(events.at(-1), { file: 'model.safetensors', fileBytes: fixture['model.safetensors'].length, fileTotal: fixture['model.safetensors'].length, bytes: total, total });
    for (const [name, bytes] of Object.entries(fixture)) {
      assert.ok(events.some((e) => e.file === name && e.fileBytes === bytes.length && e.fileTotal === bytes.length), `${name} reported done`);
    }
    for (let i = 1; i < events.length; i++) assert.ok(events[i].bytes >= events[i - 1].bytes, 'overall bytes never go back');

    await hub.close();
    const requests = hub.log.length;
    const again = await resolveModel(REPO, box.opts());
    // From the cache now: converting it downloads nothing.
    assert.ok(again.kind === 'checkpoint' && again.cost.kind === 'convert' && again.cost.downloadBytes === 0);
    assert.deepEqual({ ...again, cost: undefined }, { ...r, cost: undefined });
    assert.equal(hub.log.length, requests);
  });

  test('a cache written by Python is used without any network, by branch or by commit', async (t) => {
    const box = sandbox(t, await closedPortUrl());
    const commit = 'a'.repeat(40);
    const repoDir = path.join(box.hubCache, 'models--Salesforce--blip2-opt-2.7b');
    fs.mkdirSync(path.join(repoDir, 'blobs'), { recursive: true });
    fs.mkdirSync(path.join(repoDir, 'snapshots', commit), { recursive: true });
    fs.mkdirSync(path.join(repoDir, 'refs'));
    fs.writeFileSync(path.join(repoDir, 'refs', 'main'), commit);
    for (const [name, bytes] of Object.entries(fixture)) {
      fs.writeFileSync(path.join(repoDir, 'blobs', etagOf(name, bytes)), bytes);
      fs.symlinkSync(`../../blobs/${etagOf(name, bytes)}`, path.join(repoDir, 'snapshots', commit, name));
    }
    for (const spec of ['Salesforce/blip2-opt-2.7b', `Salesforce/blip2-opt-2.7b@${commit}`]) {
      const r = await resolveModel(spec, box.opts());
      assert.equal(r.kind, 'checkpoint');
      assert.equal(r.kind === 'checkpoint' && r.checkpointDir!, path.join(repoDir, 'snapshots', commit));
      assert.equal(r.revision, commit);
    }
  });

  test('HF_TOKEN, or the token file hf auth login writes, is sent as Authorization: Bearer', async (t) => {
    const hub = await startHub(t, [{ id: REPO, files: fixture, access: { mode: 'gated', token: 'hf_secret' } }]);
    const box = sandbox(t, hub.url, { HF_TOKEN: 'hf_secret' });
    const r = await resolveModel(REPO, box.opts());
    assert.equal(r.kind, 'checkpoint');
    const toHub = hub.log.filter((l) => !l.url.startsWith('/cdn/'));
    assert.ok(toHub.length >= 3);
    assert.deepEqual(new Set(toHub.map((l) => l.authorization)), new Set(['Bearer hf_secret']));

    const box2 = sandbox(t, hub.url);
    fs.mkdirSync(box2.hfHome, { recursive: true });
    fs.writeFileSync(path.join(box2.hfHome, 'token'), 'hf_secret\n');
    const before = hub.log.length;
    assert.equal((await resolveModel(REPO, box2.opts())).kind, 'checkpoint');
    assert.ok(hub.log.slice(before).some((l) => l.authorization === 'Bearer hf_secret'));
  });

  test('401, 403 and 404 from the Hub each get one sentence', async (t) => {
    const hub = await startHub(t, [
      { id: 'tiny/gated', files: fixture, access: { mode: 'gated', token: 'hf_right' } },
      { id: 'tiny/private', files: fixture, access: { mode: 'private', token: 'hf_right' } },
      { id: REPO, files: fixture },
    ]);
    const anon = sandbox(t, hub.url);
    const wrong = sandbox(t, hub.url, { HF_TOKEN: 'hf_wrong' });

    let e = await userError(resolveModel('tiny/gated', anon.opts()));
    assert.equal(e.message, 'tiny/gated is a gated repository on the Hugging Face Hub and needs an access token.');
    assert.match(e.hint ?? '', /HF_TOKEN/);
    assert.match(e.hint ?? '', new RegExp(`${hub.url}/tiny/gated`));

    e = await userError(resolveModel('tiny/gated', wrong.opts()));
    assert.equal(e.message, 'Your Hugging Face token (HF_TOKEN) has no access to tiny/gated: it is gated or private.');

    e = await userError(resolveModel('tiny/private', anon.opts()));
    assert.equal(e.message, 'tiny/private was not found on the Hugging Face Hub, or it is private and needs an access token.');
    assert.match(e.hint ?? '', /HF_TOKEN/);

    e = await userError(resolveModel('nobody/nothing', wrong.opts()));
    assert.equal(e.message, 'nobody/nothing was not found on the Hugging Face Hub.');

    e = await userError(resolveModel(`${REPO}@no-such-branch`, anon.opts()));
    assert.equal(e.message, 'tiny/blip2 has no revision "no-such-branch" on the Hugging Face Hub.');

    // Nothing of a refused repository was written to the cache.
    assert.deepEqual(fs.existsSync(anon.hubCache) ? fs.readdirSync(anon.hubCache).filter((n) => n.startsWith('models--')) : [], []);
  });

  test('offline, or with the Hub unreachable, and nothing cached: one sentence saying what to do', async (t) => {
    const hub = await startHub(t, [{ id: REPO, files: fixture }]);
    const box = sandbox(t, hub.url, { HF_HUB_OFFLINE: '1' });
    let e = await userError(resolveModel(REPO, box.opts()));
    assert.equal(e.message, `tiny/blip2 is not in the Hugging Face cache (${box.hubCache}) and offline mode is on (HF_HUB_OFFLINE).`);
    assert.equal(e.hint, 'Pass --model with a local checkpoint folder, or go online once (unset HF_HUB_OFFLINE) to download it.');
    e = await userError(resolveModel(REPO, sandbox(t, hub.url).opts({ offline: true })));
    assert.match(e.message, /and offline mode is on \(--offline\)\.$/);
    assert.equal(hub.log.length, 0, 'offline mode sent no request');

    const gone = await closedPortUrl();
    const down = sandbox(t, gone);
    e = await userError(resolveModel(REPO, down.opts()));
    assert.equal(e.message, `tiny/blip2 is not in the Hugging Face cache (${down.hubCache}) and ${gone} cannot be reached.`);
    assert.equal(e.hint, `Pass --model with a local checkpoint folder, or connect once to download it (HF_ENDPOINT is ${gone}).`);
  });

  test('a connection cut in the middle of the weights resumes with a Range request', async (t) => {
    const hub = await startHub(t, [{ id: REPO, files: fixture }]);
    const box = sandbox(t, hub.url);
    const cut = 300_001;
    hub.cutOnce('model.safetensors', cut);

    const r = await resolveModel(REPO, box.opts());

    const gets = hub.contentRequests(REPO, 'model.safetensors');
    assert.deepEqual(gets.map((g) => g.range), [undefined, `bytes=${cut}-`]);
    assert.ok(r.kind === 'checkpoint');
    assert.ok(fs.readFileSync(path.join(r.checkpointDir!, 'model.safetensors')).equals(fixture['model.safetensors']));
  });

  test('a cancelled download keeps what arrived, and the next run continues from there', async (t) => {
    const big = randomBytes(3 * 1024 * 1024 + 12345);
    const hub = await startHub(t, [{ id: REPO, files: { ...fixture, 'model.safetensors': big } }]);
    const box = sandbox(t, hub.url);
    const controller = new AbortController();
    let stoppedAt = 0;
    const onProgress = (p: DownloadProgress) => {
      if (p.file === 'model.safetensors' && p.fileBytes > 0 && p.fileBytes < p.fileTotal && !controller.signal.aborted) {
        stoppedAt = p.fileBytes;
        controller.abort();
      }
    };

    await assert.rejects(resolveModel(REPO, box.opts({ signal: controller.signal, onProgress })), (e) => isCancelled(e));

    const repoDir = path.join(box.hubCache, 'models--tiny--blip2');
    const partial = path.join(repoDir, 'blobs', `${sha256(big)}.incomplete`);
    assert.ok(stoppedAt > 0);
    const kept = fs.readFileSync(partial);
    assert.equal(kept.length, stoppedAt);
    assert.ok(kept.equals(big.subarray(0, stoppedAt)), 'the partial file is a prefix of the real one');
    assert.equal(fs.existsSync(path.join(repoDir, 'blobs', sha256(big))), false, 'no complete-looking blob');
    assert.equal(fs.existsSync(path.join(repoDir, 'refs', 'main')), false, 'the ref waits for a complete snapshot');
    assert.deepEqual(fs.readdirSync(path.join(box.hubCache, '.locks', 'models--tiny--blip2')), [], 'the lock was released');

    const r = await resolveModel(REPO, box.opts());
    assert.equal(hub.contentRequests(REPO, 'model.safetensors').at(-1)?.range, `bytes=${stoppedAt}-`);
    assert.ok(r.kind === 'checkpoint');
    assert.ok(fs.readFileSync(path.join(r.checkpointDir!, 'model.safetensors')).equals(big));
    assert.equal(fs.existsSync(partial), false);
  });

  test('a partial file that is not a prefix of the real one is caught by the checksum and fetched afresh', async (t) => {
    const hub = await startHub(t, [{ id: REPO, files: fixture }]);
    const box = sandbox(t, hub.url);
    const blobs = path.join(box.hubCache, 'models--tiny--blip2', 'blobs');
    fs.mkdirSync(blobs, { recursive: true });
    const garbage = randomBytes(1000);
    fs.writeFileSync(path.join(blobs, `${sha256(fixture['model.safetensors'])}.incomplete`), garbage);

    const r = await resolveModel(REPO, box.opts());
    assert.deepEqual(hub.contentRequests(REPO, 'model.safetensors').map((g) => g.range), [`bytes=${garbage.length}-`, undefined]);
    assert.ok(r.kind === 'checkpoint');
    assert.ok(fs.readFileSync(path.join(r.checkpointDir!, 'model.safetensors')).equals(fixture['model.safetensors']));
  });

  test('a server that ignores Range has its whole answer replace the partial file', async (t) => {
    const hub = await startHub(t, [{ id: REPO, files: fixture }]);
    hub.ignoreRange = true;
    hub.cutOnce('model.safetensors', 200_000);
    const box = sandbox(t, hub.url);
    const r = await resolveModel(REPO, box.opts());
    assert.deepEqual(hub.contentRequests(REPO, 'model.safetensors').map((g) => g.range), [undefined, 'bytes=200000-']);
    assert.ok(r.kind === 'checkpoint');
    assert.ok(fs.readFileSync(path.join(r.checkpointDir!, 'model.safetensors')).equals(fixture['model.safetensors']));
  });

  test('a listing without hashes falls back to the etag resolve reports', async (t) => {
    const hub = await startHub(t, [{ id: REPO, files: fixture }]);
    hub.omitOids = true;
    const box = sandbox(t, hub.url);
    const r = await resolveModel(REPO, box.opts());
    assert.ok(r.kind === 'checkpoint');
    for (const [name, bytes] of Object.entries(fixture)) {
      assert.equal(fs.readlinkSync(path.join(r.checkpointDir!, name)), path.join('..', '..', 'blobs', etagOf(name, bytes)));
      assert.ok(fs.readFileSync(path.join(r.checkpointDir!, name)).equals(bytes));
    }
    assert.ok(hub.log.some((l) => l.range === 'bytes=0-0'), 'the etags came from probing resolve');
  });

  test('a sharded checkpoint needs every shard its index names', async (t) => {
    const shards = { 'model-00001-of-00002.safetensors': randomBytes(5000), 'model-00002-of-00002.safetensors': randomBytes(7000) };
    const index = Buffer.from(JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }));
    const files = { ...fixture, ...shards, 'model.safetensors.index.json': index };
    delete (files as Record<string, Buffer>)['model.safetensors'];
    const hub = await startHub(t, [{ id: 'tiny/sharded', files }]);
    const box = sandbox(t, hub.url);
    const events: DownloadProgress[] = [];

    const r = await resolveModel('tiny/sharded', box.opts({ onProgress: (p) => events.push(p) }));
    assert.ok(r.kind === 'checkpoint');
    for (const [name, bytes] of Object.entries(shards)) assert.ok(fs.readFileSync(path.join(r.checkpointDir!, name)).equals(bytes));
    const total = Object.values(files).reduce((s, b) => s + b.length, 0);
    assert.ok(events.every((p) => p.total === total && p.bytes <= total), 'the shards are in the total from the first event');
    assert.equal(events.at(-1)?.bytes, total);

    // One shard's link gone: the snapshot is incomplete, which offline mode says, and going online repairs from the blob.
    fs.rmSync(path.join(r.checkpointDir!, 'model-00002-of-00002.safetensors'));
    const e = await userError(resolveModel('tiny/sharded', box.opts({ offline: true })));
    assert.equal(
      e.message,
      `tiny/sharded is only partly in the Hugging Face cache (${box.hubCache}; model-00002-of-00002.safetensors missing) and offline mode is on (--offline).`,
    );
    const before = hub.contentRequests('tiny/sharded', 'model-00002-of-00002.safetensors').length;
    const again = await resolveModel('tiny/sharded', box.opts());
    const withoutCost = (x: object) => ({ ...x, cost: undefined });
    assert.deepEqual(withoutCost(again), withoutCost(r));
    assert.equal(hub.contentRequests('tiny/sharded', 'model-00002-of-00002.safetensors').length, before, 'relinked, not downloaded');
  });

  test('a repository of another architecture is refused before its weights are downloaded', async (t) => {
    const config = Buffer.from(JSON.stringify({ model_type: 'llama' }));
    const hub = await startHub(t, [{ id: 'tiny/llama', files: { ...fixture, 'config.json': config } }]);
    const e = await userError(resolveModel('tiny/llama', sandbox(t, hub.url).opts()));
    assert.equal(e.message, 'tiny/llama is a "llama" model, not BLIP-2.');
    assert.equal(hub.contentRequests('tiny/llama', 'model.safetensors').length, 0);
  });

  test('a repository with only PyTorch weights is refused with the way out', async (t) => {
    const files: Record<string, Buffer> = { ...fixture, 'pytorch_model.bin': randomBytes(100) };
    delete files['model.safetensors'];
    const hub = await startHub(t, [{ id: 'tiny/bin', files }]);
    const e = await userError(resolveModel('tiny/bin', sandbox(t, hub.url).opts()));
    assert.equal(e.message, 'tiny/bin on the Hugging Face Hub is not a BLIP-2 checkpoint we can read: it has no model.safetensors or model.safetensors.index.json.');
    assert.match(e.hint ?? '', /safe_serialization=True/);
  });
});

describe('local folders and the model store', () => {
  function copyCheckpoint(t: TestContext, name = 'my-ckpt'): string {
    const dir = path.join(tmpDir(t), name);
    fs.mkdirSync(dir);
    for (const [n, b] of Object.entries(fixture)) fs.writeFileSync(path.join(dir, n), b);
    return dir;
  }

  test('a local checkpoint folder is recognised and keyed by its path and files', async (t) => {
    const box = sandbox(t, await closedPortUrl());
    const dir = copyCheckpoint(t);

    const r = await resolveModel(dir, box.opts());
    assert.ok(r.kind === 'checkpoint');
    assert.equal(r.checkpointDir!, dir);
    assert.equal(r.source, dir);
    assert.equal(path.basename(r.convertedDir), 'fp32');
    assert.equal(path.dirname(path.dirname(r.convertedDir)), path.join(box.store, 'local'));
    assert.match(path.basename(path.dirname(r.convertedDir)), /^my-ckpt-[0-9a-f]{12}$/);

    const relative = await resolveModel(path.basename(dir), box.opts({ cwd: path.dirname(dir) }));
    assert.deepEqual(relative, r, 'a relative spelling maps to the same entry');
    const fp16 = await resolveModel(dir, box.opts({ precision: 'fp16' }));
    assert.ok(fp16.kind === 'checkpoint');
    assert.equal(fp16.convertedDir, path.join(path.dirname(r.convertedDir), 'fp16'));

    const keyNow = async () => {
      const x = await resolveModel(dir, box.opts());
      assert.ok(x.kind === 'checkpoint');
      return x.convertedDir;
    };
    const k1 = await keyNow();
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(path.join(dir, 'config.json'), later, later);
    const k2 = await keyNow();
    assert.notEqual(k2, k1, 'an edited config.json gets a new entry');
    fs.appendFileSync(path.join(dir, 'model.safetensors'), Buffer.alloc(8));
    const k3 = await keyNow();
    assert.notEqual(k3, k2, 'changed weights get a new entry');
    const other = copyCheckpoint(t);
    const k4 = (await resolveModel(other, box.opts())) as { convertedDir: string };
    assert.notEqual(k4.convertedDir, k1, 'another folder with the same files is another entry');

    // Once the converter has written there, the same spec resolves to the converted model.
    fs.mkdirSync(k3, { recursive: true });
    fs.writeFileSync(path.join(k3, 'blip2-onnx.json'), manifestJson(dir));
    assert.deepEqual(await resolveModel(dir, box.opts()), { kind: 'converted', dir: k3, source: dir });
  });

  test('a converted folder is recognised by its manifest', async (t) => {
    const box = sandbox(t, await closedPortUrl());
    const dir = tmpDir(t);
    fs.writeFileSync(path.join(dir, 'blip2-onnx.json'), manifestJson(dir));
    assert.deepEqual(await resolveModel(dir, box.opts()), { kind: 'converted', dir, source: dir });
    assert.equal(await isConverted(dir), true);

    // A conversion by another converter version is not one this version loads: it is redone, not reused.
    fs.writeFileSync(path.join(dir, 'blip2-onnx.json'), JSON.stringify({ ...JSON.parse(manifestJson(dir)), converterVersion: CONVERTER_VERSION - 1 }));
    assert.equal(await isConverted(dir), false);

    fs.writeFileSync(path.join(dir, 'blip2-onnx.json'), '{"format": ');
    assert.equal(await isConverted(dir), false);
    const e = await userError(resolveModel(dir, box.opts()));
    assert.equal(e.message, `${dir} has a blip2-onnx.json that is not valid JSON.`);
  });

  test('specs that are neither a folder nor a repo id, and folders that are neither kind, are refused by name', async (t) => {
    const box = sandbox(t, await closedPortUrl());
    const forms = /blip2-onnx\.json.*config\.json and model\.safetensors.*Salesforce\/blip2-opt-2\.7b/;

    for (const spec of ['no/such/thing', './missing-folder', 'gpt2']) {
      const e = await userError(resolveModel(spec, box.opts({ cwd: box.root })));
      assert.equal(e.message, `Model not found: ${spec}`);
      assert.match(e.hint ?? '', forms);
    }

    const empty = tmpDir(t);
    let e = await userError(resolveModel(empty, box.opts()));
    assert.equal(e.message, `${empty} is neither a converted model nor a BLIP-2 checkpoint: it has no blip2-onnx.json and no config.json.`);
    assert.match(e.hint ?? '', forms);

    const onlyConfig = tmpDir(t);
    fs.writeFileSync(path.join(onlyConfig, 'config.json'), fixture['config.json']);
    e = await userError(resolveModel(onlyConfig, box.opts()));
    assert.equal(
      e.message,
      `${onlyConfig} is an incomplete BLIP-2 checkpoint: it has no tokenizer.json, tokenizer_config.json, preprocessor_config.json or processor_config.json, model.safetensors or model.safetensors.index.json.`,
    );

    const file = path.join(copyCheckpoint(t), 'model.safetensors');
    e = await userError(resolveModel(file, box.opts()));
    assert.equal(e.message, `${file} is a file; --model needs a folder.`);
    assert.equal(e.hint, `Pass the folder that holds it: ${path.dirname(file)}`);

    e = await userError(resolveModel(copyCheckpoint(t), box.opts({ precision: '../x' })));
    assert.match(e.message, /^Unknown precision/);
  });

  test('a converted Hub model is found offline after the Hugging Face cache is cleared, and listed with its size', async (t) => {
    const hub = await startHub(t, [{ id: REPO, files: fixture }]);
    const box = sandbox(t, hub.url);
    const r = await resolveModel(REPO, box.opts());
    assert.ok(r.kind === 'checkpoint');

    const tmp = await tempDirFor(r.convertedDir);
    assert.equal(path.dirname(tmp), path.dirname(r.convertedDir));
    assert.match(path.basename(tmp), new RegExp(`^fp32\\.partial-${process.pid}-[0-9a-f]+$`));
    const weights = randomBytes(4321);
    fs.writeFileSync(path.join(tmp, 'model.onnx.data'), weights);
    fs.writeFileSync(path.join(tmp, 'blip2-onnx.json'), manifestJson(REPO));
    await publishDir(tmp, r.convertedDir);
    assert.equal(fs.existsSync(tmp), false);

    fs.rmSync(box.hfHome, { recursive: true, force: true });
    await hub.close();
    const offline = await resolveModel(REPO, box.opts({ offline: true }));
    assert.deepEqual(offline, { kind: 'converted', dir: r.convertedDir, source: REPO, revision: r.revision });

    const expectedBytes = fs.statSync(path.join(r.convertedDir, 'model.onnx.data')).size + fs.statSync(path.join(r.convertedDir, 'blip2-onnx.json')).size;
    assert.deepEqual(await listStore(box.store), [
      { kind: 'hub', source: REPO, revision: r.revision, precision: 'fp32', dir: r.convertedDir, bytes: expectedBytes },
    ]);
  });

  test('listStore shows local conversions and skips unfinished ones; cleanStaleTemp removes only dead writers', async (t) => {
    const box = sandbox(t, await closedPortUrl());
    const dir = copyCheckpoint(t);
    const r = await resolveModel(dir, box.opts());
    assert.ok(r.kind === 'checkpoint');

    const mine = await tempDirFor(r.convertedDir);
    fs.writeFileSync(path.join(mine, 'blip2-onnx.json'), manifestJson(dir));
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
    assert.ok(deadPid);
    const abandoned = `${r.convertedDir}.partial-${deadPid}-0badc0de`;
    fs.mkdirSync(abandoned);
    fs.writeFileSync(path.join(abandoned, 'blip2-onnx.json'), '{}');
    assert.deepEqual(await listStore(box.store), [], 'partial folders are not conversions');

    assert.deepEqual(await cleanStaleTemp(box.store), [abandoned]);
    assert.equal(fs.existsSync(abandoned), false);
    assert.equal(fs.existsSync(mine), true, 'a folder of a live process stays');

    await publishDir(mine, r.convertedDir);
    const size = fs.statSync(path.join(r.convertedDir, 'blip2-onnx.json')).size;
    assert.deepEqual(await listStore(box.store), [
      { kind: 'local', source: dir, precision: 'fp32', dir: r.convertedDir, bytes: size },
    ]);
  });
});
