/**
 * The server under a flood, with the tiny model: a one-megabyte markdown document does not hold other requests
 * while it is parsed, and 500 hovers and code actions over its 50 images are each answered, each image encoded once.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { CodeActionRequest, DidChangeTextDocumentNotification, HoverRequest, LSPErrorCodes, type Position } from 'vscode-languageserver-protocol/node';
import { CountersRequest, ModelStatusRequest } from '../../server/src/protocol/messages';
import { bigMarkdown } from '../helpers/documents';
import { testSettings, TestServer } from '../helpers/lsp-server';

const IMAGES = 50;

describe('responsiveness', { timeout: 300_000 }, () => {
  let ws: string;
  let server: TestServer;

  before(async () => {
    ws = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-flood-'));
    // Fifty different images, so fifty encodings are needed.
    for (let i = 0; i < IMAGES; i++) {
      const pixels = Buffer.alloc(32 * 32 * 3, i * 5);
      await sharp(pixels, { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(path.join(ws, `image-${i}.png`));
    }
    server = await TestServer.start({
      settings: testSettings({ generation: { maxNewTokens: 4, numBeams: 1, alternatives: 0 } }),
      workspaceFolder: ws,
      initializationOptions: { hoverWaitMs: 100 },
    });
  });
  after(async () => {
    await server?.dispose();
    if (ws) fs.rmSync(ws, { recursive: true, force: true });
  });

  it('a 1 MB markdown file is parsed off the main thread: other requests are answered before its diagnostics', async () => {
    const text = bigMarkdown(1024 * 1024, IMAGES);
    assert.ok(text.length >= 1024 * 1024);
    const uri = pathToFileURL(path.join(ws, 'CHANGELOG.md')).href;
    let published = false;
    const diagnostics = server.diagnosticsFor(uri, 1).then((d) => {
      published = true;
      return d;
    });
    await server.open(uri, 'markdown', text);
    // While the document is parsed (seconds), the server keeps answering: one request after another, each
    // answered before the next is sent. A parse on the main thread would let one or two through.
    let answeredDuringParse = 0;
    while (!published) {
      await server.connection.sendRequest(ModelStatusRequest.type);
      if (!published) answeredDuringParse++;
    }
    assert.ok(answeredDuringParse >= 20, `${answeredDuringParse} requests answered while the document was parsed`);
    assert.equal((await diagnostics).diagnostics.length, IMAGES);

    // 500 hovers and code actions over the fifty images, then two unrelated requests.
    const lines = text.split('\n');
    const imageLines = lines.flatMap((line, i) => (line.startsWith('![](') ? [i] : []));
    assert.equal(imageLines.length, IMAGES);
    let answered = 0;
    let cancelled = 0;
    const burst: Promise<void>[] = [];
    for (let i = 0; i < 500; i++) {
      const position: Position = { line: imageLines[i % IMAGES], character: 5 };
      // Rounds of fifty: hovers on every image, then code actions on every image, and so on.
      const request =
        Math.floor(i / IMAGES) % 2 === 0
          ? server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position })
          : server.connection.sendRequest(CodeActionRequest.type, { textDocument: { uri }, range: { start: position, end: position }, context: { diagnostics: [] } });
      burst.push(
        request.then(
          () => void answered++,
          (e: { code?: number }) => {
            assert.equal(e.code, LSPErrorCodes.RequestCancelled, `only cancellations may fail: ${JSON.stringify(e)}`);
            cancelled++;
          },
        ),
      );
    }
    const allDone = Promise.all(burst);
    const counters = async () => server.connection.sendRequest(CountersRequest.type);
    const plainText = await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: imageLines[0] + 2, character: 3 } });
    // Answered while the captions the flood started are still being worked through, not queued behind them. (Whether
    // the burst's own answers came first is no measure: they may all be quick "captioning…" hovers and code actions.)
    const duringFlood = await counters();
    assert.ok(duringFlood.generations < IMAGES, `${duringFlood.generations} of ${IMAGES} captions were done before an unrelated hover was answered`);
    assert.equal(plainText, null);
    await allDone;
    assert.equal(answered + cancelled, 500);

    // Every caption the hovers started goes on after the hover answered; once they are done, each image was
    // encoded exactly once.
    const deadline = Date.now() + 120_000;
    while ((await counters()).generations < IMAGES && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    const counted = await counters();
    assert.equal(counted.visionRuns, IMAGES);
    assert.equal(counted.generations, IMAGES);
  });

  it('a markdown file too large to search for images is said to be unchecked, once while it is open', async () => {
    // 5 MB, as a generated changelog can be: `blip2 check` checks it; the editor would show nothing, and not say why.
    const text = bigMarkdown(5 * 1024 * 1024, IMAGES);
    const uri = pathToFileURL(path.join(ws, 'HUGE.md')).href;
    const before = server.messages.length;
    await server.open(uri, 'markdown', text);
    assert.deepEqual((await server.diagnosticsFor(uri, 1)).diagnostics, []);
    const [notice] = await server.until('the notice', () => (server.messages.length > before ? server.messages.slice(before) : undefined));
    assert.match(notice, new RegExp(`^BLIP-2 does not check HUGE\\.md for alt text and shows no captions in it: it is ${text.length.toLocaleString('en-US')} characters long, more than the [\\d,]+ searched for images\\.`));
    await server.connection.sendNotification(DidChangeTextDocumentNotification.type, { textDocument: { uri, version: 2 }, contentChanges: [{ text: `${text}more\n` }] });
    await server.diagnosticsFor(uri, 2);
    assert.equal(server.messages.length, before + 1, 'told once, not at every change');
  });
});
