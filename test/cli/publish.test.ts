// A team converts once and shares: `blip2 publish` uploads this machine's conversions to a Hub repository (the
// loopback Hub of test/helpers/fake-hub.ts implements the upload API @huggingface/hub uses), and another machine's
// `--model OWNER/REPO` downloads one precision's files, checked against the manifest, and captions with no conversion.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CONVERTER_VERSION, MANIFEST_FILE, readManifest } from '../../server/src/engine/convert/manifest';
import { runCli } from '../helpers/cli';
import { FakeHub, readFolderFiles } from '../helpers/fake-hub';
import { tinyCheckpointDir } from '../helpers/paths';
import { imagePath } from '../helpers/reference';

const SOURCE = 'tiny/blip2';
const TEAM = 'team/blip2-onnx';

describe('blip2 publish, and --model with a repository of conversions', () => {
  let root: string;
  let hub: FakeHub;
  const envFor = (name: string, extra: Record<string, string> = {}) => ({
    ...process.env,
    BLIP2_HOME: path.join(root, name, 'store'),
    HF_HOME: path.join(root, name, 'hf'),
    HF_ENDPOINT: hub.url,
    BLIP2_DEBUG: '',
    ...extra,
  });
  const caption = (env: NodeJS.ProcessEnv, model: string, precision: string) =>
    runCli(['caption', imagePath('cat.png'), '--model', model, '--precision', precision, '--max-new-tokens', '8', '--json'], env);

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-publish-'));
    hub = await FakeHub.start([{ id: SOURCE, files: readFolderFiles(tinyCheckpointDir), cardData: { license: 'mit' } }]);
    hub.writeToken = 'hf_write';
  });
  after(async () => {
    await hub.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('publishes the conversions this machine has, with a model card naming source, commit, converter and license', async () => {
    const publisher = envFor('publisher', { HF_TOKEN: 'hf_write' });
    for (const precision of ['int4', 'int8']) {
      const r = await caption(publisher, SOURCE, precision);
      assert.equal(r.code, 0, r.stderr);
    }
    const out = await runCli(['publish', TEAM, '--model', SOURCE, '--precision', 'int4,int8'], publisher);
    assert.equal(out.code, 0, out.stderr);
    const repo = hub.repo(TEAM)!;
    const names = Object.keys(repo.files).sort();
    const local = (precision: string) => {
      const dir = path.join(publisher.BLIP2_HOME!, 'hub', 'tiny--blip2', hub.commitOf(SOURCE), precision);
      return { dir, manifest: readManifest(dir) };
    };
    for (const precision of ['int4', 'int8']) {
      const { dir, manifest } = local(precision);
      for (const f of [MANIFEST_FILE, ...manifest.files!.map((x) => x.name)]) {
        assert.ok(names.includes(`${precision}/${f}`), `${precision}/${f} was not published`);
        const published = repo.files[`${precision}/${f}`];
        const bytes = Buffer.isBuffer(published) ? published : fs.readFileSync(published.path);
        assert.ok(bytes.equals(fs.readFileSync(path.join(dir, f))), `${precision}/${f} differs from the local file`);
      }
    }
    const card = (repo.files['README.md'] as Buffer).toString();
    assert.match(card, /^---\nlicense: mit\nbase_model: tiny\/blip2\n/);
    assert.ok(card.includes(`at commit \`${hub.commitOf(SOURCE)}\``));
    assert.ok(card.includes(`(converter version ${CONVERTER_VERSION})`));
    assert.match(card, /\| int4 \| `int4\/` \|/);
    assert.match(card, /\| int8 \| `int8\/` \|/);
  });

  it('another machine downloads only the precision it asks for, converts nothing, and captions as the publisher does', async () => {
    const publisher = envFor('publisher', { HF_TOKEN: 'hf_write' });
    const expected = await caption(publisher, SOURCE, 'int4');
    assert.equal(expected.code, 0, expected.stderr);

    const before = hub.log.length;
    const user = envFor('user');
    const got = await caption(user, TEAM, 'int4');
    assert.equal(got.code, 0, got.stderr);
    assert.equal(JSON.parse(got.stdout).text, JSON.parse(expected.stdout).text);
    assert.match(got.stderr, /^blip2: Setting up team\/blip2-onnx downloads its int4 conversion, [\d.]+ (KB|MB), into /m);
    const requests = hub.log.slice(before);
    const fetched = requests.filter((l) => l.method === 'GET' && (l.host === 'cdn' || l.url.includes('/resolve/')));
    assert.ok(fetched.length > 0);
    assert.deepEqual(fetched.filter((l) => l.url.includes('/int8/') || l.url.includes(SOURCE)), [], 'something besides the int4 conversion was fetched');
    // Nothing but the published files: no checkpoint, so no conversion happened.
    const manifest = readManifest(path.join(user.BLIP2_HOME!, 'hub', 'team--blip2-onnx', hub.commitOf(TEAM), 'int4'));
    assert.equal(manifest.source.model, SOURCE);
    assert.equal(fs.existsSync(path.join(user.HF_HOME!, 'hub', 'models--tiny--blip2')), false);
  });

  it('a precision the repository does not hold, and a conversion by another converter version, are each one sentence', async () => {
    const user = envFor('user2');
    const fp16 = await caption(user, TEAM, 'fp16');
    assert.equal(fp16.code, 1);
    assert.equal(fp16.stderr.trim(), `blip2: ${TEAM} holds converted models at int8, int4, not at fp16. Choose one of them (blip2.precision, or --precision int8), or set up fp16 from the original checkpoint.`);

    const repo = hub.repo(TEAM)!;
    const manifest = JSON.parse((repo.files[`int8/${MANIFEST_FILE}`] as Buffer).toString()) as { converterVersion: number };
    repo.files[`int8/${MANIFEST_FILE}`] = Buffer.from(JSON.stringify({ ...manifest, converterVersion: CONVERTER_VERSION - 1 }));
    const old = await caption(user, TEAM, 'int8');
    assert.equal(old.code, 1);
    assert.equal(
      old.stderr.trim(),
      `blip2: ${TEAM} holds a conversion by converter version ${CONVERTER_VERSION - 1}, and this version of BLIP-2 reads version ${CONVERTER_VERSION}. Ask its publisher to convert and publish it again with this version (\`blip2 publish\`), or set up from the original checkpoint (${SOURCE}).`,
    );
  });

  it('a published file that differs from its manifest is discarded with one sentence', async () => {
    const repo = hub.repo(TEAM)!;
    const name = Object.keys(repo.files).find((n) => n.startsWith('int4/') && n.endsWith('.onnx_data'))!;
    const original = repo.files[name];
    const bytes = Buffer.from(Buffer.isBuffer(original) ? original : fs.readFileSync(original.path));
    bytes[bytes.length >> 1] ^= 0xff;
    // Re-listed with the changed bytes' own checksum, as a bad publish would have made it: only the manifest can tell.
    repo.files[name] = bytes;
    const user = envFor('user3');
    const r = await caption(user, TEAM, 'int4');
    repo.files[name] = original;
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`blip2: The conversion downloaded from ${TEAM} does not match its own ${MANIFEST_FILE} \\(${name.slice('int4/'.length).replace(/\./g, '\\.')} has changed since it was converted \\(its checksum differs\\)\\), so it was discarded\\. Set up again`));
    const dir = path.join(user.BLIP2_HOME!, 'hub', 'team--blip2-onnx', hub.commitOf(TEAM), 'int4');
    assert.equal(fs.existsSync(dir), false);
    assert.equal(fs.existsSync(`${dir}.download`), false);
  });

  it('publishing needs a token that may write', async () => {
    const noToken = await runCli(['publish', TEAM, '--model', SOURCE, '--precision', 'int4'], envFor('publisher', { HF_TOKEN: '' }));
    assert.equal(noToken.code, 2);
    assert.match(noToken.stderr, /^blip2: publish needs a Hugging Face token with write access\./);
    const wrong = await runCli(['publish', TEAM, '--model', SOURCE, '--precision', 'int4'], envFor('publisher', { HF_TOKEN: 'hf_read' }));
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /refused to let the token in HF_TOKEN write to team\/blip2-onnx \(HTTP 403\)\. Use a token with write access/);
  });
});
