/**
 * The real server with clients that are not VS Code: what Neovim 0.7, eglot and Helix declare (no
 * `workspace/configuration` in Neovim 0.7, no `codeAction/resolve` in eglot), settings given bare in
 * initializationOptions or pushed with `workspace/didChangeConfiguration`, and a repository's `.blip2.json`.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import {
  CodeActionRequest,
  DidChangeConfigurationNotification,
  DidChangeWatchedFilesNotification,
  ExecuteCommandRequest,
  FileChangeType,
  HoverRequest,
  type ClientCapabilities,
  type CodeAction,
  type MarkupContent,
  type TextDocumentEdit,
  type TextEdit,
} from 'vscode-languageserver-protocol/node';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { escapeAltText } from '../../server/src/features/alt-text/alt-edit';
import { GenerateAltTextActionKind, ServerCommands } from '../../server/src/protocol/messages';
import { engineCaptions, type EngineCaption } from '../helpers/engine-captions';
import { testSettings, TestServer } from '../helpers/lsp-server';
import { tinyCheckpointDir } from '../helpers/paths';

const IMAGES = path.join(tinyCheckpointDir, 'reference', 'images');
const GENERATION = { maxNewTokens: 20, numBeams: 3, alternatives: 2, noRepeatNgramSize: 3, repetitionPenalty: 1 };

/** What eglot 1.9 and Neovim 0.7 have in common: edits applied on request, no configuration requests, no resolve. */
const PLAIN_CLIENT: ClientCapabilities = {
  workspace: { applyEdit: true, workspaceEdit: { documentChanges: true }, executeCommand: { dynamicRegistration: false } },
  textDocument: {
    hover: { contentFormat: ['markdown', 'plaintext'] },
    publishDiagnostics: {},
    codeAction: { codeActionLiteralSupport: { codeActionKind: { valueSet: ['quickfix', 'source'] } }, isPreferredSupport: true },
  },
};

let ws: string;
let cat: EngineCaption;
const servers: TestServer[] = [];

async function start(options: Parameters<typeof TestServer.start>[0]): Promise<TestServer> {
  const server = await TestServer.start(options);
  servers.push(server);
  return server;
}

async function hoverText(server: TestServer, uri: string, character = 5): Promise<string> {
  const hover = await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position: { line: 0, character } });
  return hover ? (hover.contents as MarkupContent).value : '';
}

/** Hovers until the caption is there (the first one may still be computing, or the settings still arriving). */
async function captionHover(server: TestServer, uri: string): Promise<string> {
  for (let attempt = 0; attempt < 120; attempt++) {
    const text = await hoverText(server, uri);
    if (text.startsWith('**') && !/No BLIP-2 model|Captioning/.test(text)) return text;
    await server.until('a moment', () => undefined, 500).catch(() => undefined);
  }
  throw new Error('no caption in the hover');
}

function applyTo(text: string, uri: string, edit: TextDocumentEdit): string {
  assert.equal(edit.textDocument.uri, uri);
  return TextDocument.applyEdits(TextDocument.create(uri, 'markdown', 1, text), edit.edits as TextEdit[]);
}

describe('the server in editors other than VS Code', { timeout: 300_000 }, () => {
  before(async () => {
    ws = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-editors-'));
    fs.copyFileSync(path.join(IMAGES, 'cat.png'), path.join(ws, 'cat.png'));
    [cat] = (await engineCaptions([path.join(ws, 'cat.png')], GENERATION)).values();
  });

  after(async () => {
    for (const server of servers) await server.dispose();
    if (ws) fs.rmSync(ws, { recursive: true, force: true });
  });

  it('takes bare initializationOptions, and without codeAction/resolve its quick fix is a command that applies the caption', async () => {
    const server = await start({ settings: {}, workspaceFolder: ws, clientName: 'Neovim', capabilities: PLAIN_CLIENT, initializationOptions: testSettings() });
    const text = '![](cat.png)\n';
    const uri = pathToFileURL(path.join(ws, 'plain.md')).href;
    await server.open(uri, 'markdown', text);

    const hover = await captionHover(server, uri);
    assert.ok(hover.includes(cat.text.replace(/[\\`*_[\]<>|~#&]/g, '\\$&')), hover);
    assert.ok(!/command:|\|height=/.test(hover), `no VS Code-only markup: ${hover}`);

    const { diagnostics } = await server.diagnosticsFor(uri);
    assert.deepEqual(diagnostics.map((d) => d.code), ['missing-alt']);
    const actions = (await server.connection.sendRequest(CodeActionRequest.type, {
      textDocument: { uri },
      range: diagnostics[0].range,
      context: { diagnostics },
    })) as CodeAction[];
    assert.deepEqual(actions.map((a) => [a.title, a.command?.command, a.edit]), [['Generate alt text with BLIP-2', ServerCommands.fixAltText, undefined]]);

    // What eglot and Neovim do with an action that has a command: workspace/executeCommand.
    const result = await server.connection.sendRequest(ExecuteCommandRequest.type, { command: actions[0].command!.command, arguments: actions[0].command!.arguments });
    assert.equal(result, null, 'answered at once; the edit follows');
    await server.until('the edit', () => (server.appliedEdits.length > 0 ? true : undefined));
    assert.equal(server.appliedEdits.length, 1);
    const [change] = server.appliedEdits[0].edit.documentChanges as TextDocumentEdit[];
    assert.equal(applyTo(text, uri, change), `![${escapeAltText(cat.text, { kind: 'markdown' })}](cat.png)\n`);

    // Asked for `source` (eglot's and Helix's source-action menus), the file action comes as a command too.
    const source = (await server.connection.sendRequest(CodeActionRequest.type, {
      textDocument: { uri },
      range: diagnostics[0].range,
      context: { diagnostics: [], only: ['source'] },
    })) as CodeAction[];
    assert.deepEqual(source.map((a) => [a.kind, a.command?.command]), [[GenerateAltTextActionKind, ServerCommands.generateMissingAltText]]);
    assert.deepEqual(server.messageRequests, [], 'no prompts');
  });

  it('uses the settings a client pushes with workspace/didChangeConfiguration, and names the setting, not a VS Code command, while there is no model', async () => {
    const missing = { ...testSettings(), model: path.join(ws, 'no-such-model') };
    const server = await start({ settings: {}, workspaceFolder: ws, clientName: 'helix', capabilities: PLAIN_CLIENT, initializationOptions: { blip2: missing } });
    const uri = pathToFileURL(path.join(ws, 'pushed.md')).href;
    await server.open(uri, 'markdown', '![a cat](cat.png)\n');
    const before = await hoverText(server, uri);
    assert.match(before, /No BLIP-2 model is set up yet: .*Set the "model" setting/);
    assert.ok(!/Set Up Model|command:/.test(before), before);

    await server.connection.sendNotification(DidChangeConfigurationNotification.type, { settings: { blip2: testSettings() } });
    const hover = await captionHover(server, uri);
    assert.ok(hover.includes(cat.text.replace(/[\\`*_[\]<>|~#&]/g, '\\$&')), hover);
  });

  it('reads the repository\'s .blip2.json where the editor\'s settings are silent, and the editor\'s settings over it', async () => {
    const repo = path.join(ws, 'repo');
    fs.mkdirSync(path.join(repo, 'docs'), { recursive: true });
    fs.writeFileSync(path.join(repo, '.blip2.json'), JSON.stringify({ altText: { rules: { 'missing-alt': 'error' }, maxLength: 10 } }));
    const server = await start({ settings: testSettings(), workspaceFolder: repo });
    const uri = pathToFileURL(path.join(repo, 'docs', 'guide.md')).href;
    await server.open(uri, 'markdown', '![](cat.png)\n\n![a cat sitting on a sofa](cat.png)\n');
    const first = await server.diagnosticsFor(uri);
    assert.deepEqual(first.diagnostics.map((d) => [d.code, d.severity]), [['missing-alt', 1], ['alt-too-long', 3]]);

    server.diagnostics.clear();
    server.settings = testSettings({ altText: { rules: { 'missing-alt': 'hint' } } });
    await server.connection.sendNotification(DidChangeConfigurationNotification.type, { settings: null });
    const second = await server.diagnosticsFor(uri);
    assert.deepEqual(second.diagnostics.map((d) => [d.code, d.severity]), [['missing-alt', 4], ['alt-too-long', 3]]);

    // The file changes (the server asked to be told): the next diagnostics follow it.
    server.diagnostics.clear();
    const projectFile = path.join(repo, '.blip2.json');
    fs.writeFileSync(projectFile, JSON.stringify({ altText: { maxLength: 200 } }));
    await server.connection.sendNotification(DidChangeWatchedFilesNotification.type, { changes: [{ uri: pathToFileURL(projectFile).href, type: FileChangeType.Changed }] });
    const third = await server.diagnosticsFor(uri);
    assert.deepEqual(third.diagnostics.map((d) => [d.code, d.severity]), [['missing-alt', 4]]);
  });

  it('says what is wrong with a .blip2.json in one notice, and checks with the rest', async () => {
    const repo = path.join(ws, 'broken');
    fs.mkdirSync(repo, { recursive: true });
    fs.writeFileSync(path.join(repo, '.blip2.json'), JSON.stringify({ model: '/elsewhere', altText: { rules: { 'missing-alt': 'loud' } } }));
    const server = await start({ settings: testSettings(), workspaceFolder: repo });
    const uri = pathToFileURL(path.join(repo, 'a.md')).href;
    await server.open(uri, 'markdown', '![](cat.png)\n');
    const { diagnostics } = await server.diagnosticsFor(uri);
    assert.deepEqual(diagnostics.map((d) => [d.code, d.severity]), [['missing-alt', 2]]);
    const messages = await server.until('two notices', () => (server.messages.length >= 2 ? server.messages : undefined));
    const file = path.join(repo, '.blip2.json');
    assert.deepEqual([...messages].sort(), [
      `BLIP-2: ${file}: "model" cannot be set here; it was ignored.`,
      `BLIP-2: ${file}: blip2.altText.rules["missing-alt"] must be one of error, warning, information, hint, off (got "loud"); using "warning".`,
    ]);
    assert.deepEqual(server.messageRequests, []);
  });

  it('starts and checks under a hostile .blip2.json, with a short notice: deep nesting, a huge value, a link to /etc/passwd', async () => {
    const cases: [string, (file: string) => void, RegExp][] = [
      ['arrays 30,000 deep', (f) => fs.writeFileSync(f, `{"altText":{"maxLength":${'['.repeat(30_000)}${']'.repeat(30_000)}}}`), /blip2\.altText\.maxLength must be a number \(got \[\[\[/],
      ['a 60 KB string', (f) => fs.writeFileSync(f, JSON.stringify({ altText: { maxLength: 'x'.repeat(60_000) } })), /\(got "x{40}…" \(60000 characters\)\)/],
      ['a link to /etc/passwd', (f) => fs.symlinkSync('/etc/passwd', f), /is a symbolic link to a file outside the repository; its settings were not used/],
    ];
    for (const [name, write, pattern] of cases) {
      const repo = fs.mkdtempSync(path.join(ws, 'hostile-'));
      fs.mkdirSync(path.join(repo, '.git'));
      write(path.join(repo, '.blip2.json'));
      // initialize read the project file too: it failed with -32603 on deep nesting, leaving the folder unusable.
      const server = await start({ settings: testSettings(), workspaceFolder: repo });
      const uri = pathToFileURL(path.join(repo, 'a.md')).href;
      await server.open(uri, 'markdown', '![](cat.png)\n');
      const { diagnostics } = await server.diagnosticsFor(uri);
      assert.deepEqual(diagnostics.map((d) => d.code), ['missing-alt'], name);
      const [message] = await server.until(`a notice (${name})`, () => (server.messages.length > 0 ? server.messages : undefined));
      assert.match(message, pattern, name);
      assert.ok(message.length < 300 + repo.length, `${name}: ${message.length} characters`);
      assert.doesNotMatch(message, /root:/, name);
    }
  });
});
