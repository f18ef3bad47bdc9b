/**
 * Protocol abuse, as a hostile or broken client would send it: requests before `initialize`, a second
 * `initialize`, params of the wrong shape for every custom request, and a byte stream whose framing breaks.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import {
  CodeActionResolveRequest,
  ErrorCodes,
  ExecuteCommandRequest,
  HoverRequest,
  InitializedNotification,
  ShutdownRequest,
} from 'vscode-languageserver-protocol/node';
import { AskRequest, CaptionRequest, ModelStatusRequest, ServerCommands, SetUpModelRequest } from '../../server/src/protocol/messages';
import { testSettings, TestServer } from '../helpers/lsp-server';
import { tinyCheckpointDir } from '../helpers/paths';

interface RpcError {
  code: number;
  message: string;
}

async function rpcError(request: Promise<unknown>): Promise<RpcError> {
  try {
    await request;
  } catch (e) {
    return { code: (e as RpcError).code, message: (e as RpcError).message };
  }
  assert.fail('expected the request to fail');
}

/** One JSON-RPC frame as raw bytes, with the Content-Length given (the true one unless it lies). */
function frame(message: unknown, contentLength?: number): Buffer {
  const body = Buffer.from(JSON.stringify(message));
  return Buffer.concat([Buffer.from(`Content-Length: ${contentLength ?? body.length}\r\n\r\n`), body]);
}

describe('protocol edges', { timeout: 120_000 }, () => {
  let ws: string;
  const servers: TestServer[] = [];
  const start = async (options: Parameters<typeof TestServer.start>[0]): Promise<TestServer> => {
    const server = await TestServer.start(options);
    servers.push(server);
    return server;
  };

  before(() => {
    ws = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-protocol-'));
    fs.copyFileSync(path.join(tinyCheckpointDir, 'reference', 'images', 'cat.png'), path.join(ws, 'cat.png'));
  });
  after(async () => {
    for (const server of servers) await server.dispose();
    fs.rmSync(ws, { recursive: true, force: true });
  });

  it('answers -32002 before initialize, refuses a second initialize, and keeps the first one\'s settings', async () => {
    const server = await start({ settings: testSettings(), workspaceFolder: ws, skipInitialize: true });
    const uri = pathToFileURL(path.join(ws, 'doc.md')).href;
    for (const [request, method] of [
      [server.connection.sendRequest(ModelStatusRequest.type), 'blip2/modelStatus'],
      [server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 0, character: 0 } }), 'textDocument/hover'],
      [server.connection.sendRequest('blip2/noSuchMethod', {}), 'blip2/noSuchMethod'],
    ] as const) {
      assert.deepEqual(await rpcError(request), {
        code: ErrorCodes.ServerNotInitialized,
        message: `The server is not initialized yet: send "initialize" before "${method}".`,
      });
    }
    // A notification before initialize is dropped, not half-handled.
    await server.open(uri, 'markdown', '![](cat.png)\n');

    const first = { settings: testSettings(), workspaceFolder: ws, initializationOptions: { settings: { model: tinyCheckpointDir } } };
    const result = await server.initialize(first);
    assert.equal(result.serverInfo?.name, 'blip2-language-server');
    await server.connection.sendNotification(InitializedNotification.type, {});
    assert.deepEqual(await rpcError(server.initialize({ ...first, initializationOptions: { settings: { model: '/somewhere/else' } } })), {
      code: ErrorCodes.InvalidRequest,
      message: 'The server is already initialized: "initialize" may be sent only once.',
    });
    assert.equal((await server.connection.sendRequest(ModelStatusRequest.type)).model, tinyCheckpointDir);

    await server.connection.sendRequest(ShutdownRequest.type);
    assert.equal((await rpcError(server.connection.sendRequest(ModelStatusRequest.type))).code, ErrorCodes.InvalidRequest);
    assert.doesNotMatch(server.log, /Cannot read properties|TypeError/);
  });

  it('answers -32602 with a sentence for params of the wrong shape, and keeps serving', async () => {
    const server = await start({ settings: testSettings(), workspaceFolder: ws });
    const image = pathToFileURL(path.join(ws, 'cat.png')).href;
    const cases: [Promise<unknown>, string][] = [
      [server.connection.sendRequest(CaptionRequest.method, { image: 123 }), 'Invalid params for blip2/caption: "image" must be a string, not 123.'],
      [server.connection.sendRequest(CaptionRequest.method, {}), 'Invalid params for blip2/caption: "image" is missing.'],
      [server.connection.sendRequest(CaptionRequest.method, { image, prompt: ['a'] }), 'Invalid params for blip2/caption: "prompt" must be a string, not ["a"].'],
      [server.connection.sendRequest(AskRequest.method, { image, question: 'why?', history: 'nope' }), 'Invalid params for blip2/ask: "history" must be an array, not "nope".'],
      [server.connection.sendRequest(AskRequest.method, { image, question: 'why?', history: [{ question: 'a' }] }), 'Invalid params for blip2/ask: "history.0.answer" is missing.'],
      [server.connection.sendRequest(AskRequest.method, { image }), 'Invalid params for blip2/ask: "question" is missing.'],
      [server.connection.sendRequest(SetUpModelRequest.method, { model: false }), 'Invalid params for blip2/setUpModel: "model" must be a string, not false.'],
      [server.connection.sendRequest(HoverRequest.method, { textDocument: { uri: image } }), 'Invalid params for textDocument/hover: "position" is missing.'],
      [server.connection.sendRequest(HoverRequest.method, { textDocument: { uri: image }, position: { line: -1, character: 0 } }), 'Invalid params for textDocument/hover: "position.line" must be at least 0, not -1.'],
      [
        server.connection.sendRequest(ExecuteCommandRequest.method, { command: ServerCommands.generateMissingAltText, arguments: [{ uri: 5 }] }),
        'Invalid params for workspace/executeCommand: "arguments.0.uri" must be a string, not 5.',
      ],
      [
        server.connection.sendRequest(CodeActionResolveRequest.method, { title: 'x', data: { kind: 'blip2.altFix', uri: image, version: 1 } }),
        'Invalid params for codeAction/resolve: "data.anchor" is missing.',
      ],
    ];
    for (const [request, message] of cases) assert.deepEqual(await rpcError(request), { code: ErrorCodes.InvalidParams, message });
    // Still serving: a well-formed request is answered.
    const caption = await server.connection.sendRequest(CaptionRequest.type, { image });
    assert.ok(caption.text.length > 0);
    assert.doesNotMatch(server.log, /TypeError|Cannot read properties/);
  });

  it('answers a whole frame that holds no JSON object with -32700 or -32600 (id null), and keeps serving', async () => {
    const server = await start({ settings: testSettings(), workspaceFolder: ws });
    let raw = '';
    server.child.stdout!.on('data', (d) => (raw += d));
    for (const body of ['{"jsonrpc":"2.0","id":2,"method":', 'not json at all', '[1,2]', '42', 'null']) {
      server.child.stdin!.write(Buffer.concat([Buffer.from(`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`), Buffer.from(body)]));
    }
    // The next frame is read where the broken one said it ends, and answered.
    const status = await server.connection.sendRequest(ModelStatusRequest.type);
    assert.equal(typeof status.state, 'string');
    const errors = [...raw.matchAll(/Content-Length: \d+\r\n\r\n(\{"jsonrpc":"2\.0","id":null,"error":\{[^}]*\}\})/g)].map((m) => JSON.parse(m[1]).error as RpcError);
    assert.deepEqual(errors.map((e) => e.code), [ErrorCodes.ParseError, ErrorCodes.ParseError, ErrorCodes.InvalidRequest, ErrorCodes.InvalidRequest, ErrorCodes.InvalidRequest]);
    assert.match(errors[0].message, /^Parse error: the message is not JSON \(.+\)\.$/);
    assert.equal(server.exitCode, undefined, 'still running');
  });

  it('a header that never ends (no blank line before the body, or no more bytes) ends the process with a line saying why', async () => {
    // The body right after the header line, as a client that forgets the blank line sends it: nothing else follows
    // (the servers are left uninitialized, so that the test's own client writes nothing after these bytes).
    const server = await start({ settings: testSettings(), workspaceFolder: ws, skipInitialize: true });
    server.child.stdin!.write('Content-Length: 51\r\n{"jsonrpc":"2.0","id":7,"method":"blip2/modelStatus"}');
    assert.equal(await server.waitForExit(), 1);
    assert.match(server.log, /the message stream from the client is broken \(a header line is not "Name: value" \(it begins "\{\\"jsonrpc\\":\\"2\.0\\",\\"id"\)\); exiting/);
    // A header cut short, then silence: given up after the partial-message time-out (shortened here).
    const stalled = await start({ settings: testSettings(), workspaceFolder: ws, skipInitialize: true, env: { BLIP2_DEBUG_PARTIAL_MESSAGE_MS: '1000' } });
    stalled.child.stdin!.write('Content-Length: 4');
    assert.equal(await stalled.waitForExit(), 1);
    assert.match(stalled.log, /broken \(a message begun has not continued in 1 second\)/);
  });

  it('runs the model with onnxruntime\'s telemetry off: nothing written under HOME', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-home-'));
    try {
      const server = await start({ settings: testSettings(), workspaceFolder: ws, env: { HOME: home } });
      const caption = await server.connection.sendRequest(CaptionRequest.type, { image: pathToFileURL(path.join(ws, 'cat.png')).href });
      assert.ok(caption.text.length > 0);
      assert.deepEqual(fs.readdirSync(home), [], 'onnxruntime keeps its telemetry under ~/.cache/Microsoft');
    } finally {
      fs.rmSync(home, { recursive: true, force: true });
    }
  });

  it('a frame whose Content-Length lies ends the process with a line saying why', async () => {
    for (const [name, bytes] of [
      ['a Content-Length shorter than the message', frame({ jsonrpc: '2.0', id: 7, method: 'blip2/modelStatus' }, 10)],
      ['a Content-Length that is not a number', Buffer.from('Content-Length: lots\r\n\r\n{}')],
    ] as const) {
      const server = await start({ settings: testSettings(), workspaceFolder: ws });
      server.child.stdin!.write(bytes);
      // What follows the broken frame is lost in it; a server that survived would answer nothing for ever.
      server.child.stdin!.write(frame({ jsonrpc: '2.0', id: 8, method: 'blip2/modelStatus' }));
      assert.equal(await server.waitForExit(), 1, name);
      assert.match(server.log, /blip2-language-server: the message stream from the client is broken \(.+\); exiting so that the client can start a new server\./, name);
    }
  });
});
