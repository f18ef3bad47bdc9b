/**
 * Long generations, made long on purpose: the worker sleeps after every token (BLIP2_DEBUG_STEP_DELAY_MS) and
 * the end token is kept away (minNewTokens = maxNewTokens). What happened is read from the server's own
 * counters, never from how long something took.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import {
  CancellationTokenSource,
  CodeActionRequest,
  HoverRequest,
  LSPErrorCodes,
  type Hover,
  type MarkupContent,
} from 'vscode-languageserver-protocol/node';
import { escapeMarkdown } from '../../server/src/features/hover/hover-markdown';
import { CaptionRequest, CountersRequest, ModelStatusRequest, type InferenceCounters } from '../../server/src/protocol/messages';
import { engineCaptions } from '../helpers/engine-captions';
import { testSettings, TestServer } from '../helpers/lsp-server';
import { tinyCheckpointDir } from '../helpers/paths';

const IMAGES = path.join(tinyCheckpointDir, 'reference', 'images');
// The tiny model's decoder holds 128 positions; 8 image queries and BOS leave room for 110 new tokens.
const LONG = { maxNewTokens: 110, minNewTokens: 110, numBeams: 1, alternatives: 0, noRepeatNgramSize: 3, repetitionPenalty: 1 };

let ws: string;
const servers: TestServer[] = [];

async function start(hoverWaitMs: number, stepDelayMs: number, generation: typeof LONG): Promise<TestServer> {
  const server = await TestServer.start({
    settings: testSettings({ generation }),
    workspaceFolder: ws,
    initializationOptions: { hoverWaitMs },
    env: { BLIP2_DEBUG_STEP_DELAY_MS: String(stepDelayMs) },
  });
  servers.push(server);
  return server;
}

/** Asks for the counters until `check` accepts them; every answer also shows the server is responsive. */
async function countersUntil(server: TestServer, what: string, check: (c: InferenceCounters) => boolean): Promise<InferenceCounters> {
  for (;;) {
    const counters = await server.connection.sendRequest(CountersRequest.type);
    if (check(counters)) return counters;
    if (server.exitCode !== undefined) throw new Error(`the server exited while waiting for ${what}\n${server.log}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function hoverText(hover: Hover | null): string {
  assert.ok(hover, 'a hover');
  return (hover.contents as MarkupContent).value;
}

describe('long generations', { timeout: 300_000 }, () => {
  const text = '![](cat.png)\n\n![](coffee.png)\n\n![](missing.png)\n';
  let uri: string;

  before(() => {
    ws = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-cancel-'));
    for (const name of ['cat.png', 'coffee.png']) fs.copyFileSync(path.join(IMAGES, name), path.join(ws, name));
    fs.writeFileSync(path.join(ws, 'doc.md'), text);
    uri = pathToFileURL(path.join(ws, 'doc.md')).href;
  });

  after(async () => {
    for (const server of servers) await server.dispose();
    if (ws) fs.rmSync(ws, { recursive: true, force: true });
  });

  it('a cancelled hover stops its generation, while other requests are answered meanwhile', async () => {
    // The hover waits as long as it takes, so only the cancellation can end it early.
    const server = await start(600_000, 50, LONG);
    await server.open(uri, 'markdown', text);

    const cancel = new CancellationTokenSource();
    const hover = server.connection
      .sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 0, character: 5 } }, cancel.token)
      .then(
        (value) => ({ value }),
        (error: { code?: number }) => ({ error }),
      );
    const started = await countersUntil(server, 'the first token', (c) => c.tokensGenerated >= 1);
    assert.equal(started.generations, 1);

    // Other requests are answered while the model runs: a hover that needs no model, code actions, the status.
    const other = hoverText(await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 4, character: 5 } }));
    assert.match(other, /does not exist/);
    const actions = await server.connection.sendRequest(CodeActionRequest.type, {
      textDocument: { uri },
      range: { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } },
      context: { diagnostics: [], only: ['source'] },
    });
    assert.equal(actions?.length, 1);
    assert.equal((await server.connection.sendRequest(ModelStatusRequest.type)).state, 'busy');
    const meanwhile = await server.connection.sendRequest(CountersRequest.type);
    assert.equal(meanwhile.cancelledGenerations, 0, 'the generation was still running when those were answered');
    assert.ok(meanwhile.tokensGenerated < LONG.maxNewTokens);

    cancel.cancel();
    const answered = await hover;
    assert.ok('value' in answered ? answered.value === null : answered.error.code === LSPErrorCodes.RequestCancelled, JSON.stringify(answered));
    const stopped = await countersUntil(server, 'the cancelled generation', (c) => c.cancelledGenerations === 1);
    assert.ok(stopped.tokensGenerated < LONG.maxNewTokens, `stopped after ${stopped.tokensGenerated} tokens`);
    assert.equal(stopped.generations, 1);
    assert.equal((await server.connection.sendRequest(ModelStatusRequest.type)).state, 'ready');
  });

  it('a hover answers "Captioning…" when the caption takes long, and the caption goes on for the next hover', async () => {
    const generation = { ...LONG, maxNewTokens: 40, minNewTokens: 40 };
    const [expected] = (await engineCaptions([path.join(ws, 'coffee.png')], generation)).values();
    // 40 tokens at 25 ms each outlast a 200 ms wait whatever the machine.
    const server = await start(200, 25, generation);
    await server.open(uri, 'markdown', text);
    const position = { line: 2, character: 5 };

    const first = hoverText(await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position }));
    assert.match(first, /Captioning… hover again in a moment/);

    // A request for the same caption joins the run the hover started instead of starting another.
    const captioned = await server.connection.sendRequest(CaptionRequest.type, { image: pathToFileURL(path.join(ws, 'coffee.png')).href });
    assert.equal(captioned.text, expected.text);
    const counters = await server.connection.sendRequest(CountersRequest.type);
    assert.deepEqual([counters.generations, counters.sharedRequests, counters.cancelledGenerations], [1, 1, 0]);

    const second = hoverText(await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position }));
    assert.ok(second.includes(`**${escapeMarkdown(expected.text)}**`), second);
    assert.match(second, /from the cache/);
    assert.equal((await server.connection.sendRequest(CountersRequest.type)).generations, 1);
  });
});
