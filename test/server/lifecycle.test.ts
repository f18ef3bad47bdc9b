/**
 * How the server starts and ends: settings from initializationOptions for clients without
 * workspace/configuration, no model yet, remote images, and every way it can be told (or left) to exit.
 */
import { strict as assert } from 'node:assert';
import { fork, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import {
  createMessageConnection,
  ExitNotification,
  HoverRequest,
  InitializedNotification,
  InitializeRequest,
  IPCMessageReader,
  IPCMessageWriter,
  ShutdownRequest,
  type Hover,
  type MarkupContent,
} from 'vscode-languageserver-protocol/node';
import { escapeMarkdown } from '../../server/src/features/hover/hover-markdown';
import { Blip2ErrorCodes, CaptionRequest, CountersRequest, ModelStatusRequest, SetUpModelRequest } from '../../server/src/protocol/messages';
import { engineCaptions } from '../helpers/engine-captions';
import { startImageSite, type ImageSite } from '../helpers/image-site';
import { processExists, testSettings, TestServer } from '../helpers/lsp-server';
import { repoRoot, tinyCheckpointDir } from '../helpers/paths';

const IMAGES = path.join(tinyCheckpointDir, 'reference', 'images');
const GENERATION = { maxNewTokens: 12, numBeams: 1, alternatives: 0, noRepeatNgramSize: 3, repetitionPenalty: 1 };

let ws: string;
const servers: TestServer[] = [];
const children: { kill(signal: NodeJS.Signals): boolean }[] = [];

function hoverText(hover: Hover | null): string {
  assert.ok(hover, 'a hover');
  return (hover.contents as MarkupContent).value;
}

async function track(server: Promise<TestServer>): Promise<TestServer> {
  const started = await server;
  servers.push(started);
  return started;
}

describe('server lifecycle', { timeout: 300_000 }, () => {
  before(() => {
    ws = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-life-'));
    for (const name of ['cat.png', 'coffee.png']) fs.copyFileSync(path.join(IMAGES, name), path.join(ws, name));
  });

  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    for (const server of servers) await server.dispose();
    if (ws) fs.rmSync(ws, { recursive: true, force: true });
  });

  it('without a model, says so in the hover, sends status noModel, fails requests with the NoModel code, and sets up with progress', async () => {
    const missing = path.join(ws, 'no-such-model');
    const server = await track(TestServer.start({ settings: { ...testSettings(), model: missing }, workspaceFolder: ws }));
    const text = '![](cat.png)\n';
    const uri = pathToFileURL(path.join(ws, 'doc.md')).href;
    await server.open(uri, 'markdown', text);
    const hover = hoverText(await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 0, character: 5 } }));
    assert.match(hover, /No BLIP-2 model is set up yet: .*\[Set Up Model…\]\(command:blip2\.setUpModel/);
    assert.ok(!/\n\s+at /.test(hover), 'no stack trace');
    await server.until('status noModel', () => server.statuses.find((s) => s.state === 'noModel'));
    assert.equal((await server.connection.sendRequest(ModelStatusRequest.type)).state, 'noModel');
    await assert.rejects(server.connection.sendRequest(CaptionRequest.type, { image: pathToFileURL(path.join(ws, 'cat.png')).href }), (e: { code?: number; message: string }) => {
      assert.equal(e.code, Blip2ErrorCodes.NoModel);
      assert.match(e.message, /^No BLIP-2 model is set up yet/);
      return true;
    });

    // Set-up with a folder the user picked: progress on the client's token, then the model is ready.
    const workDoneToken = 'set-up';
    const status = await server.connection.sendRequest(SetUpModelRequest.type, { model: tinyCheckpointDir, workDoneToken });
    assert.equal(status.state, 'ready');
    const reports = server.progress.filter((p) => p.token === workDoneToken).map((p) => p.value as { kind: string; message?: string });
    assert.equal(reports[0].kind, 'begin');
    assert.ok(reports.some((r) => r.kind === 'report' && /Converting|Loading/.test(r.message ?? '')), JSON.stringify(reports.slice(0, 5)));
    assert.equal(reports[reports.length - 1].kind, 'end');
    const captioned = hoverText(await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 0, character: 5 } }));
    assert.match(captioned, /Use as alt text/);
    assert.equal(await server.stop(), 0);
  });

  describe('remote images, with settings from initializationOptions', () => {
    let site: ImageSite;
    let base: string;
    const cat = fs.readFileSync(path.join(IMAGES, 'cat.png'));

    before(async () => {
      site = await startImageSite(() => ({ '/cat.png': cat, '/big.png': { png: Buffer.concat([cat, cat]), announceLength: false } }));
      base = site.base;
    });

    after(async () => {
      await site?.close();
    });

    it('fetches within the size limit and captions the bytes as the engine captions the file', async () => {
      const [expected] = (await engineCaptions([path.join(ws, 'cat.png')], GENERATION)).values();
      const server = await track(
        TestServer.start({
          settings: {},
          noConfiguration: true,
          workspaceFolder: ws,
          initializationOptions: {
            hoverWaitMs: 600_000,
            settings: testSettings({ generation: GENERATION, remoteImages: { enabled: true, maxBytes: cat.length + 100 } }),
          },
        }),
      );
      const text = `![](${base}/cat.png)\n\n![](${base}/big.png)\n\n![](${base}/gone.png)\n`;
      const uri = pathToFileURL(path.join(ws, 'remote.md')).href;
      await server.open(uri, 'markdown', text);
      const hoverLine = async (line: number) =>
        hoverText(await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line, character: 6 } }));
      const ok = await hoverLine(0);
      assert.ok(ok.includes(`**${escapeMarkdown(expected.text)}**`), ok);
      assert.match(await hoverLine(2), /big\.png is larger than the limit of .* for remote images\. Raise blip2\.remoteImages\.maxBytes/);
      assert.match(await hoverLine(4), /gone\.png answered 404/);
      assert.equal(await server.stop(), 0);
    });
  });

  it('captions the images of a document when it opens, so the hover after is served from the cache', async () => {
    const server = await track(
      TestServer.start({ settings: testSettings({ generation: GENERATION, altText: { captionOnOpen: true } }), workspaceFolder: ws, initializationOptions: { hoverWaitMs: 600_000 } }),
    );
    const text = '![](cat.png)\n\n<img src="coffee.png">\n\n![](cat.png)\n';
    const uri = pathToFileURL(path.join(ws, 'opened.md')).href;
    await server.open(uri, 'markdown', text);
    // Two images, two runs, each stored with its image encoding: four cache entries.
    for (;;) {
      const status = await server.connection.sendRequest(ModelStatusRequest.type);
      if (status.cache.entries >= 4) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const before = await server.connection.sendRequest(CountersRequest.type);
    assert.equal(before.generations, 2);
    const hover = hoverText(await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 2, character: 12 } }));
    assert.match(hover, /from the cache/);
    const after = await server.connection.sendRequest(CountersRequest.type);
    assert.deepEqual([after.generations, after.captionCacheHits], [2, before.captionCacheHits + 1]);
    assert.equal(await server.stop(), 0);
  });

  it('exits with code 0 after shutdown and exit even with the inference worker running, leaving no process', async () => {
    const server = await track(TestServer.start({ settings: testSettings({ generation: GENERATION }), workspaceFolder: ws }));
    await server.connection.sendRequest(CaptionRequest.type, { image: pathToFileURL(path.join(ws, 'cat.png')).href });
    const pid = server.pid;
    assert.equal(await server.stop(), 0);
    assert.equal(processExists(pid), false);
  });

  it('speaks over node IPC, as the VS Code client starts it', async () => {
    const child = fork(path.join(repoRoot, 'server/src/server.ts'), ['--node-ipc'], {
      cwd: repoRoot,
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, BLIP2_HOME: path.join(ws, 'ipc-store'), HF_HUB_OFFLINE: '1' },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    children.push(child);
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    const connection = createMessageConnection(new IPCMessageReader(child), new IPCMessageWriter(child));
    connection.listen();
    try {
      const result = await connection.sendRequest(InitializeRequest.type, { processId: process.pid, rootUri: null, capabilities: {}, workspaceFolders: null });
      assert.equal(result.capabilities.hoverProvider, true);
      await connection.sendNotification(InitializedNotification.type, {});
      assert.equal((await connection.sendRequest(ModelStatusRequest.type)).state, 'unloaded');
      await connection.sendRequest(ShutdownRequest.type);
      await connection.sendNotification(ExitNotification.type);
      assert.equal(await exited, 0);
    } finally {
      connection.dispose();
    }
  });

  it('exits by itself when its parent process dies', async () => {
    const parent = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    children.push(parent);
    const server = await track(
      TestServer.start({ settings: testSettings({ generation: GENERATION }), workspaceFolder: ws, parentPid: parent.pid }),
    );
    await server.connection.sendRequest(CaptionRequest.type, { image: pathToFileURL(path.join(ws, 'cat.png')).href });
    parent.kill('SIGKILL');
    // vscode-languageserver looks for the parent every 3 seconds; no shutdown came, so the exit code is 1.
    assert.equal(await server.waitForExit(), 1);
    assert.equal(processExists(server.pid), false);
  });

  it('exits when the client closes its end of the pipe', async () => {
    const server = await track(TestServer.start({ settings: testSettings({ generation: GENERATION }), workspaceFolder: ws }));
    await server.connection.sendRequest(CaptionRequest.type, { image: pathToFileURL(path.join(ws, 'cat.png')).href });
    server.child.stdin!.end();
    assert.equal(await server.waitForExit(), 1);
    assert.equal(processExists(server.pid), false);
  });
});
