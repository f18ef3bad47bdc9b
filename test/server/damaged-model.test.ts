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
});
