/**
 * A converted model damaged after conversion, as the editor meets it: requests fail with the NoModel code (so the
 * client offers set-up) and a sentence naming the damaged file, and set-up converts it again.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { readManifest } from '../../server/src/engine/convert/manifest';
import { ensureConverted } from '../../server/src/engine/open-model';
import { DidChangeConfigurationNotification, LSPErrorCodes } from 'vscode-languageserver-protocol/node';
import { Blip2ErrorCodes, CaptionRequest, ModelStatusRequest, SetUpModelRequest } from '../../server/src/protocol/messages';
import { engineCaptions } from '../helpers/engine-captions';
import { testSettings, TestServer } from '../helpers/lsp-server';
import { tinyCheckpointDir } from '../helpers/paths';
import { imagePath } from '../helpers/reference';

const GENERATION = { maxNewTokens: 8, numBeams: 1, alternatives: 0, noRepeatNgramSize: 3, repetitionPenalty: 1 };

describe('a damaged model in the editor', { timeout: 180_000 }, () => {
  let root: string;
  let server: TestServer | undefined;

  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-damaged-'));
  });
  after(async () => {
    await server?.dispose();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('is refused with the file that changed, and set-up converts it again', async () => {
    const store = path.join(root, 'store');
    const { dir } = await ensureConverted({ model: tinyCheckpointDir, precision: 'fp32', device: 'cpu', threads: 1, store, offline: true });
    const data = path.join(dir, `${readManifest(dir).graphs.decoder}_data`);
    const bytes = fs.readFileSync(data);
    bytes[bytes.length >> 1] ^= 0x40;
    fs.writeFileSync(data, bytes);

    server = await TestServer.start({ settings: testSettings({ generation: GENERATION }), workspaceFolder: root, env: { BLIP2_HOME: store } });
    const image = pathToFileURL(imagePath('cat.png')).href;
    await assert.rejects(server.connection.sendRequest(CaptionRequest.type, { image }), (e: { code: number; message: string }) => {
      assert.equal(e.code, Blip2ErrorCodes.NoModel);
      assert.match(e.message, /^The converted model in .* is damaged: onnx\/decoder_model_merged\.onnx_data has changed since it was converted \(its checksum differs\)\. Convert it again: "BLIP-2: Set Up Model…"/);
      return true;
    });
    const status = await server.connection.sendRequest(ModelStatusRequest.type);
    assert.equal(status.state, 'noModel');
    assert.match(status.message ?? '', /is damaged/);

    assert.equal((await server.connection.sendRequest(SetUpModelRequest.type, {})).state, 'ready');
    const caption = await server.connection.sendRequest(CaptionRequest.type, { image });
    const expected = (await engineCaptions([imagePath('cat.png')], GENERATION)).get(imagePath('cat.png'))!;
    assert.equal(caption.text, expected.text);
  });

  /** A copy of the tiny checkpoint whose tokenizer.json has `extra` more added tokens (and is otherwise the same). */
  function withAddedTokens(name: string, extra: number): string {
    const dir = path.join(root, name);
    fs.cpSync(tinyCheckpointDir, dir, { recursive: true, filter: (src) => !src.includes(`${path.sep}reference`) });
    const file = path.join(dir, 'tokenizer.json');
    const tokenizer = JSON.parse(fs.readFileSync(file, 'utf8'));
    const first = Math.max(...tokenizer.added_tokens.map((t: { id: number }) => t.id)) + 1;
    for (let i = 0; i < extra; i++) {
      tokenizer.added_tokens.push({ id: first + i, content: `tok${i}x`, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false });
    }
    fs.writeFileSync(file, JSON.stringify(tokenizer));
    return dir;
  }

  it('a model that runs the inference worker out of memory while loading leaves the server answering, with the reason', async () => {
    // 90,000 added tokens are within the tokenizer's limits, and take about 100 MB of heap to build: more than the
    // 64 MB the worker is given here, which the tiny model itself needs less than. Without a heap limit of its own, a
    // worker that runs out of heap aborts the whole process.
    const heavy = withAddedTokens('heavy-tokenizer', 90_000);
    const settings = { ...testSettings({ generation: GENERATION }), model: heavy };
    const oom = await TestServer.start({ settings, workspaceFolder: root, env: { BLIP2_HOME: path.join(root, 'oom-store'), BLIP2_DEBUG_INFERENCE_HEAP_MB: '64' } });
    try {
      const image = pathToFileURL(imagePath('cat.png')).href;
      const expected = `The model ${heavy} could not be loaded: the inference worker ran out of memory (its JavaScript heap is limited to 64 MB) while loading it. It is tried again when a model setting changes or the model is set up again.`;
      for (const attempt of ['first', 'second']) {
        await assert.rejects(oom.connection.sendRequest(CaptionRequest.type, { image }), (e: { code: number; message: string }) => {
          assert.equal(e.code, LSPErrorCodes.RequestFailed, attempt);
          assert.equal(e.message, expected, attempt);
          return true;
        });
      }
      const status = await oom.connection.sendRequest(ModelStatusRequest.type);
      assert.deepEqual([status.state, status.message], ['error', expected]);
      assert.equal((oom.log.match(/ERR_WORKER_OUT_OF_MEMORY/g) ?? []).length, 1, 'the second request did not load it again');
      // Another model, and the same server captions.
      oom.settings = { ...settings, model: tinyCheckpointDir };
      await oom.connection.sendNotification(DidChangeConfigurationNotification.type, { settings: null });
      await oom.until('the other model in the status', () => oom.statuses.find((s) => s.model === tinyCheckpointDir));
      const caption = await oom.connection.sendRequest(CaptionRequest.type, { image });
      const reference = (await engineCaptions([imagePath('cat.png')], GENERATION)).get(imagePath('cat.png'))!;
      assert.equal(caption.text, reference.text);
      assert.equal(oom.exitCode, undefined);
    } finally {
      await oom.dispose();
    }
  });
});
