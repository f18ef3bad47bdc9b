// The CLI with --server naming a real `blip2 serve` on loopback (tiny model, fp32): caption, ask and fix print and
// write what they do with the model here; `blip2 serve` refuses to listen beyond loopback without a key.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isolatedEnv, runCli } from '../helpers/cli';
import { docsSiteCopy } from '../helpers/docs-site';
import { referenceDir, tinyCheckpointDir } from '../helpers/paths';
import { startServe, type RunningServe } from '../helpers/serve';

const images = ['cat.png', 'rocket.jpg', 'coffee.png', 'wide-alpha.png'].map((n) => path.join(referenceDir, 'images', n));
const MODEL = ['--model', tinyCheckpointDir, '--precision', 'fp32'];
const KEY = 'cli-key-77ad0e';

describe('blip2 with --server', { timeout: 300_000 }, () => {
  const iso = isolatedEnv();
  let serve: RunningServe;
  const env = { ...iso.env, BLIP2_API_KEY: KEY };

  before(async () => {
    serve = await startServe(env);
  });
  after(async () => {
    await serve?.stop();
    iso.cleanup();
  });

  it('caption prints what the local model prints, image by image', async () => {
    for (const flags of [['--max-new-tokens', '12'], ['--num-beams', '3', '--num-return-sequences', '3', '--max-new-tokens', '10'], ['--prompt', 'a photo of', '--no-repeat-ngram-size', '2']]) {
      const local = await runCli(['caption', ...images, ...MODEL, ...flags], env);
      const remote = await runCli(['caption', ...images, ...flags, '--server', serve.url], env);
      assert.equal(local.code, 0, local.stderr);
      assert.equal(remote.code, 0, remote.stderr);
      assert.equal(remote.stdout, local.stdout, flags.join(' '));
    }
  });

  it('ask prints the local answer; --json names the server and its model', async () => {
    const local = await runCli(['ask', images[0], 'what is it?', ...MODEL, '--max-new-tokens', '8'], env);
    const remote = await runCli(['ask', images[0], 'what is it?', '--max-new-tokens', '8', '--server', `${serve.url}/v1`, '--json'], env);
    assert.equal(remote.code, 0, remote.stderr);
    const record = JSON.parse(remote.stdout);
    assert.equal(record.text, local.stdout.trim());
    assert.equal(record.model, tinyCheckpointDir);
    assert.equal(record.server, serve.url);
  });

  it('chat answers each question with the turns before it, as the local chat does', async () => {
    const questions = 'what is it?\nwhat colour is it?\n';
    const local = await runCli(['chat', images[1], ...MODEL, '--max-new-tokens', '8'], env, questions);
    const remote = await runCli(['chat', images[1], '--max-new-tokens', '8', '--server', serve.url], env, questions);
    assert.equal(remote.code, 0, remote.stderr);
    assert.equal(remote.stdout, local.stdout);
  });

  it('fix writes the alt text the local model writes', async () => {
    const localSite = docsSiteCopy(path.join(path.dirname(iso.store), 'local-site'));
    const remoteSite = docsSiteCopy(path.join(path.dirname(iso.store), 'remote-site'));
    const flags = ['--max-new-tokens', '12', '--num-beams', '1'];
    const local = await runCli(['fix', '.', ...MODEL, ...flags, '--dry-run'], env, undefined, localSite);
    const remote = await runCli(['fix', '.', ...flags, '--server', serve.url, '--dry-run'], env, undefined, remoteSite);
    assert.equal(local.code, 0, local.stderr);
    assert.equal(remote.code, 0, remote.stderr);
    assert.ok(local.stdout.includes('+'), 'something to write');
    assert.equal(remote.stdout, local.stdout);
  });

  it('a wrong key is one line naming the server, exit 1, and the key is not printed', async () => {
    const result = await runCli(['caption', images[0], '--server', serve.url], { ...env, BLIP2_API_KEY: 'wrong-7c1' });
    assert.equal(result.code, 1);
    assert.equal(result.stderr, `blip2: The BLIP-2 server at ${serve.url} refused the API key (401, Unauthorized).\n`);
  });

  it('serve listens beyond loopback only with a key', async () => {
    const { BLIP2_API_KEY: _, ...noKey } = env;
    const result = await runCli(['serve', '--host', '0.0.0.0', '--port', '0', ...MODEL], noKey);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^blip2: blip2 serve answers on 0\.0\.0\.0, beyond this machine, only with an API key\. Set BLIP2_API_KEY/);
    assert.ok(!fs.existsSync(path.join(iso.store, 'never')));
  });
});
