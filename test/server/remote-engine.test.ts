/**
 * The language server with `blip2.server.url` naming a real `blip2 serve` on loopback (tiny model, fp32): hovers,
 * the quick fix and its alternatives, questions with streamed answers and Generate Missing Alt Text give the
 * texts the engine gives locally; the status names the server; a repository cannot choose the server; a failing
 * server is one sentence with the way back to the local model; the key is never written anywhere.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import {
  CodeActionRequest,
  CodeActionResolveRequest,
  ExecuteCommandRequest,
  HoverRequest,
  type CodeAction,
  type MarkupContent,
  type TextDocumentEdit,
  type TextEdit,
} from 'vscode-languageserver-protocol/node';
import { chatPrompt } from '../../server/src/engine/preprocess/prompts';
import { openModel } from '../../server/src/engine/open-model';
import { escapeMarkdown } from '../../server/src/features/hover/hover-markdown';
import { AnswerPartialType, AskRequest, Blip2ErrorCodes, CaptionRequest, ModelStatusRequest, ServerCommands, type AltTextCommandResult } from '../../server/src/protocol/messages';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/settings';
import { generationSettingsFor } from '../../server/src/inference/generation-settings';
import { isolatedEnv } from '../helpers/cli';
import { engineCaptions, type EngineCaption } from '../helpers/engine-captions';
import { tinyCheckpointDir } from '../helpers/paths';
import { testSettings, TestServer } from '../helpers/lsp-server';
import { startServe, type RunningServe } from '../helpers/serve';

const IMAGES = path.join(tinyCheckpointDir, 'reference', 'images');
const GENERATION = { maxNewTokens: 20, numBeams: 3, alternatives: 2, noRepeatNgramSize: 3, repetitionPenalty: 1 };
const KEY = 'serve-key-9f81c2d7e5';
const DOC = '# Photos\n\n![](cat.png)\n\n![image](rocket.jpg)\n';

describe('the language server with a BLIP-2 server as its engine', { timeout: 300_000 }, () => {
  let ws: string;
  let env: ReturnType<typeof isolatedEnv>;
  let serve: RunningServe;
  let server: TestServer;
  let captions: Map<string, EngineCaption>;
  const uri = (name: string) => pathToFileURL(path.join(ws, name)).href;

  before(async () => {
    ws = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-remote-ws-'));
    for (const name of ['cat.png', 'rocket.jpg', 'coffee.png']) fs.copyFileSync(path.join(IMAGES, name), path.join(ws, name));
    fs.writeFileSync(path.join(ws, 'doc.md'), DOC);
    captions = await engineCaptions(['cat.png', 'rocket.jpg', 'coffee.png'].map((n) => path.join(ws, n)), GENERATION);
    env = isolatedEnv();
    serve = await startServe({ ...env.env, BLIP2_API_KEY: KEY });
    server = await TestServer.start({
      // The local model's settings are there too: none of it may be used.
      settings: testSettings({ generation: GENERATION, server: { url: serve.url } }),
      workspaceFolder: ws,
      initializationOptions: { hoverWaitMs: 600_000 },
      env: { BLIP2_API_KEY: KEY },
    });
  });

  after(async () => {
    await server?.dispose();
    await serve?.stop();
    env?.cleanup();
    if (ws) fs.rmSync(ws, { recursive: true, force: true });
  });

  it('shows the caption the engine gives in a hover, with the server as where it came from', async () => {
    await server.open(uri('doc.md'), 'markdown', DOC);
    const hover = await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri: uri('doc.md') }, position: { line: 2, character: 6 } });
    const text = (hover!.contents as MarkupContent).value;
    assert.ok(text.includes(escapeMarkdown(captions.get(path.join(ws, 'cat.png'))!.text)), text);
    assert.ok(text.includes(new URL(serve.url).host), 'the hover names the server');
    assert.doesNotMatch(text, /fp32/, 'and not a local precision');
  });

  it('reports the server and the model it serves in the status', async () => {
    const status = await server.connection.sendRequest(ModelStatusRequest.type);
    assert.equal(status.server, serve.url);
    assert.equal(status.model, tinyCheckpointDir);
    assert.ok(status.state === 'ready' || status.state === 'busy', status.state);
  });

  it('inserts the engine\'s caption with the quick fix, and offers the beams the engine finds as alternatives', async () => {
    const actions = (await server.connection.sendRequest(CodeActionRequest.type, {
      textDocument: { uri: uri('doc.md') },
      range: { start: { line: 2, character: 0 }, end: { line: 2, character: 12 } },
      context: { diagnostics: [], only: ['quickfix'] },
    })) as CodeAction[];
    const fix = actions.find((a) => /Generate alt text/.test(a.title));
    assert.ok(fix, actions.map((a) => a.title).join(', '));
    const resolved = await server.connection.sendRequest(CodeActionResolveRequest.type, fix);
    const edit = (resolved.edit!.documentChanges![0] as TextDocumentEdit).edits[0] as TextEdit;
    const expected = captions.get(path.join(ws, 'cat.png'))!;
    assert.equal(edit.newText, expected.text);
    assert.deepEqual(resolved.command?.arguments?.[2], expected.alternatives);
  });

  it('answers a question, streaming it, and a follow-up with the chat so far, as the engine does', async () => {
    const opened = await openModel({ model: tinyCheckpointDir, precision: 'fp32', device: 'cpu', threads: 1, store: fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-remote-local-')), offline: true });
    try {
      const g = generationSettingsFor({ ...DEFAULT_SETTINGS.generation, ...GENERATION }, 'answer');
      const [image] = await opened.pipeline.encodeImages([path.join(IMAGES, 'coffee.png')]);
      const first = (await opened.pipeline.generate([{ image, prompt: chatPrompt([], 'what is this?') }], g)).answers[0].text;
      const second = (await opened.pipeline.generate([{ image, prompt: chatPrompt([{ question: 'what is this?', answer: first }], 'what colour is it?') }], g)).answers[0].text;
      const token = 'partial-1';
      const answer = await server.connection.sendRequest(AskRequest.type, { image: uri('coffee.png'), question: 'what is this?', partialResultToken: token });
      assert.equal(answer.text, first);
      const partials = server.progress.filter((p) => p.token === token).map((p) => (p.value as { textSoFar: string }).textSoFar);
      assert.equal(partials.at(-1), first);
      const followUp = await server.connection.sendRequest(AskRequest.type, { image: uri('coffee.png'), question: 'what colour is it?', history: [{ question: 'what is this?', answer: first }] });
      assert.equal(followUp.text, second);
    } finally {
      await opened.pipeline.dispose();
    }
    void AnswerPartialType;
  });

  it('fills in the workspace\'s missing alt text with the engine\'s captions', async () => {
    const result = (await server.connection.sendRequest(ExecuteCommandRequest.type, { command: ServerCommands.generateMissingAltText, arguments: [{}] })) as AltTextCommandResult;
    assert.deepEqual(result.failures, []);
    const edits = (result.edit.documentChanges as TextDocumentEdit[]).flatMap((c) => c.edits as TextEdit[]).map((e) => e.newText).sort();
    assert.deepEqual(edits, [captions.get(path.join(ws, 'cat.png'))!.text, captions.get(path.join(ws, 'rocket.jpg'))!.text].sort());
  });

  it('never writes the key: not in the log, not in a message, not in the cache', async () => {
    const cacheDir = path.join(server.root, 'cache');
    const files = fs.readdirSync(cacheDir, { recursive: true, withFileTypes: true }).filter((f) => f.isFile());
    assert.ok(files.length > 0, 'something was cached');
    for (const f of files) assert.ok(!fs.readFileSync(path.join(f.parentPath, f.name)).includes(KEY), `${f.name} holds the key`);
    assert.ok(!server.log.includes(KEY), 'the log holds the key');
    assert.ok(![...server.messages, ...server.serverFailures].some((m) => m.includes(KEY)));
    assert.ok(!serve.log().includes(KEY), "blip2 serve's log holds the key");
  });
});

describe('a BLIP-2 server that fails, or that a repository names', { timeout: 300_000 }, () => {
  let ws: string;
  let env: ReturnType<typeof isolatedEnv>;
  let serve: RunningServe;
  const servers: TestServer[] = [];
  const uri = (name: string) => pathToFileURL(path.join(ws, name)).href;

  before(async () => {
    ws = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-remote-fail-'));
    fs.copyFileSync(path.join(IMAGES, 'cat.png'), path.join(ws, 'cat.png'));
    fs.mkdirSync(path.join(ws, '.git'));
    env = isolatedEnv();
    serve = await startServe({ ...env.env, BLIP2_API_KEY: KEY });
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.dispose()));
    await serve?.stop();
    env?.cleanup();
    fs.rmSync(ws, { recursive: true, force: true });
  });

  it('a wrong key: one sentence naming the server, the way back to the local model, no local computation, no key', async () => {
    const wrongKey = 'not-the-key-3c4d';
    const server = await TestServer.start({ settings: testSettings({ server: { url: serve.url } }), workspaceFolder: ws, env: { BLIP2_API_KEY: wrongKey } });
    servers.push(server);
    await assert.rejects(server.connection.sendRequest(CaptionRequest.type, { image: uri('cat.png') }), (e: { code: number; message: string }) => {
      assert.equal(e.code, Blip2ErrorCodes.ServerFailed);
      assert.match(e.message, new RegExp(`^The BLIP-2 server at ${serve.url.replace(/[.]/g, '\\.')} refused the API key \\(401, Unauthorized\\)\\.$`));
      return true;
    });
    const told = await server.until('a server failure notice', () => server.serverFailures[0]);
    assert.match(told, /refused the API key/);
    const status = await server.connection.sendRequest(ModelStatusRequest.type);
    assert.equal(status.state, 'error');
    // Nothing ran here: no model was loaded, no worker computed.
    assert.equal(status.precision, undefined);
    assert.ok(![server.log, ...server.messages, ...server.serverFailures].some((t) => t.includes(wrongKey)), 'the key is written somewhere');
  });

  it('a server that is not there: one sentence, once for many requests; other editors get the setting to clear', async () => {
    const server = await TestServer.start({ settings: testSettings({ server: { url: 'http://127.0.0.1:9' } }), workspaceFolder: ws, clientName: 'Neovim' });
    servers.push(server);
    const failures = await Promise.all([1, 2, 3].map(() => server.connection.sendRequest(CaptionRequest.type, { image: uri('cat.png') }).then(() => '', (e: Error) => e.message)));
    for (const f of failures) assert.match(f, /^The BLIP-2 server at http:\/\/127\.0\.0\.1:9 cannot be reached \(nothing listens there\)\. Clear the server\.url setting to use the model on this machine\.$/);
    const notice = await server.until('a notice', () => server.messages.find((m) => m.includes('cannot be reached')));
    assert.match(notice, /Clear the server\.url setting/);
    assert.equal(server.messages.filter((m) => m.includes('cannot be reached')).length, 1);
    assert.deepEqual(server.serverFailures, [], 'the VS Code notification goes to VS Code only');
  });

  it("ignores a repository's .blip2.json that names a server, with a warning, and captions with the local model", async () => {
    fs.writeFileSync(path.join(ws, '.blip2.json'), JSON.stringify({ server: { url: serve.url } }));
    try {
      const server = await TestServer.start({ settings: testSettings(), workspaceFolder: ws });
      servers.push(server);
      const warning = await server.until('the warning', () => server.messages.find((m) => m.includes('.blip2.json')));
      assert.match(warning, /"server\.url" cannot be set here; it was ignored/);
      const result = await server.connection.sendRequest(CaptionRequest.type, { image: uri('cat.png') });
      assert.equal(result.precision, 'fp32', 'computed by the local model');
      assert.equal((await server.connection.sendRequest(ModelStatusRequest.type)).server, undefined);
    } finally {
      fs.rmSync(path.join(ws, '.blip2.json'));
    }
  });
});
