/**
 * The real server over stdio with the tiny fixture as its model: hovers on every kind of image reference,
 * diagnostics, quick fixes and the workspace command, checked against what the engine itself answers.
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
  DidChangeConfigurationNotification,
  DidChangeTextDocumentNotification,
  ExecuteCommandRequest,
  HoverRequest,
  type CodeAction,
  type Hover,
  type MarkupContent,
  type Position,
  type TextDocumentEdit,
  type TextEdit,
  type WorkspaceEdit,
} from 'vscode-languageserver-protocol/node';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { escapeAltText } from '../../server/src/features/alt-text/alt-edit';
import { escapeMarkdown } from '../../server/src/features/hover/hover-markdown';
import { findImageElements } from '../../server/src/features/images/find-images';
import {
  AnswerPartialType,
  AskRequest,
  CaptionRequest,
  ClientCommands,
  CountersRequest,
  GenerateAltTextActionKind,
  ModelStatusRequest,
  ServerCommands,
  type AltTextCommandResult,
} from '../../server/src/protocol/messages';
import { engineCaptions, type EngineCaption } from '../helpers/engine-captions';
import { tinyCheckpointDir } from '../helpers/paths';
import { processExists, testSettings, TestServer } from '../helpers/lsp-server';

const IMAGES = path.join(tinyCheckpointDir, 'reference', 'images');
const GENERATION = { maxNewTokens: 20, numBeams: 3, alternatives: 2, noRepeatNgramSize: 3, repetitionPenalty: 1 };

let ws: string;
let server: TestServer;
let captions: Map<string, EngineCaption>;

const uriOf = (relative: string) => pathToFileURL(path.join(ws, relative)).href;
/** The engine's caption for an image of the workspace. */
const caption = (relative: string): EngineCaption => {
  const found = captions.get(path.join(ws, relative));
  assert.ok(found, `no engine caption for ${relative}`);
  return found;
};

function write(relative: string, text: string): string {
  const file = path.join(ws, relative);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return uriOf(relative);
}

/** The position of the `nth` occurrence of `needle` in `text`, plus `shift` characters. */
function positionOf(text: string, needle: string, shift = 1, nth = 0): Position {
  let at = -1;
  for (let i = 0; i <= nth; i++) at = text.indexOf(needle, at + 1);
  assert.ok(at >= 0, `"${needle}" not in the document`);
  return TextDocument.create('x:', 'x', 0, text).positionAt(at + shift);
}

function hoverText(hover: Hover | null): string {
  assert.ok(hover, 'a hover');
  return (hover.contents as MarkupContent).value;
}

/** The caption text a hover's "Use as alt text" link carries, exactly as the server has it. */
function useAsAltTextArgument(markdown: string): unknown[] {
  const link = /\(command:blip2\.useAsAltText\?([^ )]+)/.exec(markdown);
  assert.ok(link, `no "Use as alt text" link in\n${markdown}`);
  return JSON.parse(decodeURIComponent(link[1])) as unknown[];
}

function applyWorkspaceEdit(edit: WorkspaceEdit, texts: Map<string, string>): Map<string, string> {
  const out = new Map(texts);
  for (const change of (edit.documentChanges ?? []) as TextDocumentEdit[]) {
    const before = out.get(change.textDocument.uri);
    assert.ok(before !== undefined, `edit for an unexpected file ${change.textDocument.uri}`);
    out.set(change.textDocument.uri, TextDocument.applyEdits(TextDocument.create(change.textDocument.uri, 'x', 0, before), change.edits as TextEdit[]));
  }
  return out;
}

describe('language server over stdio', { timeout: 300_000 }, () => {
  before(async () => {
    ws = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-ws-'));
    for (const name of fs.readdirSync(IMAGES)) fs.copyFileSync(path.join(IMAGES, name), path.join(ws, name));
    fs.copyFileSync(path.join(IMAGES, 'rocket.jpg'), path.join(ws, 'my rocket.jpg'));
    fs.mkdirSync(path.join(ws, 'img'));
    fs.copyFileSync(path.join(IMAGES, 'camera-gray.png'), path.join(ws, 'img', 'camera.png'));
    captions = await engineCaptions(
      ['cat.png', 'my rocket.jpg', 'coffee.png', 'astronaut.png', 'horse-rgba.png', 'noise-palette.gif', 'wide-alpha.png', 'img/camera.png'].map((n) => path.join(ws, n)),
      GENERATION,
    );
    server = await TestServer.start({
      settings: testSettings({ generation: GENERATION }),
      workspaceFolder: ws,
      // Long enough that every hover here gets its caption; the "Captioning…" answer has its own test.
      initializationOptions: { hoverWaitMs: 600_000 },
      clientName: 'Visual Studio Code',
    });
  });

  after(async () => {
    await server?.dispose();
    if (ws) fs.rmSync(ws, { recursive: true, force: true });
  });

  describe('hover', () => {
    const markdown = [
      '# Images',
      '',
      'Inline: ![](cat.png "A cat")',
      '',
      'Angle brackets: ![](<my rocket.jpg>)',
      '',
      'Reference: ![][cup]',
      '',
      '<img src="astronaut.png" width="40">',
      '',
      '[cup]: coffee.png',
      '',
    ].join('\n');
    let docUri: string;

    before(async () => {
      docUri = write('hover.md', markdown);
      await server.open(docUri, 'markdown', markdown);
    });

    const hoverAt = (uri: string, position: Position) => server.connection.sendRequest(HoverRequest.type, { textDocument: { uri }, position });

    for (const [kind, needle, image] of [
      ['a markdown inline image', 'cat.png', 'cat.png'],
      ['an angle-bracket destination', 'my rocket', 'my rocket.jpg'],
      ['a reference-style image', '![][cup]', 'coffee.png'],
      ['a reference definition', 'coffee.png', 'coffee.png'],
      ['an HTML img in markdown', 'astronaut', 'astronaut.png'],
    ] as const) {
      it(`on ${kind}: the engine's caption, a thumbnail and the command links`, async () => {
        const value = hoverText(await hoverAt(docUri, positionOf(markdown, needle, 2)));
        const expected = caption(image);
        assert.ok(value.includes(`**${escapeMarkdown(expected.text)}**`), value);
        assert.equal(useAsAltTextArgument(value)[2], expected.text);
        assert.ok(value.includes(`![thumbnail](${pathToFileURL(path.join(ws, image)).href.replace(/[()]/g, encodeURIComponent)}|height=`), value);
        assert.match(value, /\[Ask a question…\]\(command:blip2\.askAboutImage\?/);
        assert.match(value, /fp32 · cpu · /);
      });
    }

    it('in an HTML file, a TSX file and a CSS url(): the engine caption of each', async () => {
      const html = '<!doctype html>\n<html><body>\n  <img src="horse-rgba.png">\n</body></html>\n';
      const tsx = "import React from 'react';\nexport const App = () => <div><img src='./noise-palette.gif' /></div>;\n";
      const css = '.hero {\n  background: url("wide-alpha.png") no-repeat;\n}\n';
      for (const [name, languageId, text, needle, image] of [
        ['page.html', 'html', html, 'horse', 'horse-rgba.png'],
        ['App.tsx', 'typescriptreact', tsx, 'noise', 'noise-palette.gif'],
        ['style.css', 'css', css, 'wide-alpha', 'wide-alpha.png'],
      ] as const) {
        const uri = write(name, text);
        await server.open(uri, languageId, text);
        const value = hoverText(await hoverAt(uri, positionOf(text, needle, 2)));
        assert.ok(value.includes(`**${escapeMarkdown(caption(image).text)}**`), `${name}: ${value}`);
        // A path in a stylesheet has no alt text to fill in.
        assert.equal(value.includes('useAsAltText'), languageId !== 'css', name);
      }
    });

    it('a second hover on the same image is served from the cache', async () => {
      const position = positionOf(markdown, 'cat.png', 2);
      await hoverAt(docUri, position);
      const before = await server.connection.sendRequest(CountersRequest.type);
      const value = hoverText(await hoverAt(docUri, position));
      const after = await server.connection.sendRequest(CountersRequest.type);
      assert.equal(after.captionCacheHits, before.captionCacheHits + 1);
      assert.equal(after.generations, before.generations);
      assert.equal(after.visionRuns, before.visionRuns);
      assert.match(value, /from the cache/);
      assert.ok(value.includes(`**${escapeMarkdown(caption('cat.png').text)}**`));
    });

    it('says in one sentence why a missing file or a remote image has no caption', async () => {
      const text = '![](nowhere.png)\n\n![](https://example.com/photo.png)\n\n![](notes.png)\n';
      write('notes.png', 'These are notes, not pixels.\n');
      const uri = write('problems.md', text);
      await server.open(uri, 'markdown', text);
      const missing = hoverText(await hoverAt(uri, positionOf(text, 'nowhere')));
      assert.match(missing, /The image file does not exist: .*nowhere\.png\./);
      const remote = hoverText(await hoverAt(uri, positionOf(text, 'example')));
      assert.match(remote, /Remote images are off.*"blip2\.remoteImages\.enabled"/);
      const unreadable = hoverText(await hoverAt(uri, positionOf(text, 'notes')));
      assert.match(unreadable, /\*\*BLIP-2:\*\* .*notes\.png is not a readable image \(.*\)\. Supported formats: /);
      assert.ok(!/\n\s+at /.test(missing + remote + unreadable), 'no stack trace');
    });

    it('returns nothing where there is no image', async () => {
      assert.equal(await hoverAt(docUri, { line: 0, character: 2 }), null);
    });
  });

  describe('diagnostics', () => {
    const lines = [
      '![](cat.png)',
      '![image](cat.png)',
      '![photo](cat.png)',
      '![A picture of a cat](cat.png)',
      '![cat.png](cat.png)',
      '![A grey cat asleep on a mat](cat.png)',
      '<img src="cat.png" alt="">',
      '<img src="cat.png" aria-hidden="true">',
      '<img src="cat.png">',
      '![  ][ref]',
      '',
      '[ref]: cat.png',
    ];
    const text = lines.join('\n');

    it('flag missing and unhelpful alt text, not good or decorative images', async () => {
      const uri = write('lint.md', text);
      await server.open(uri, 'markdown', text);
      const published = await server.diagnosticsFor(uri, 1);
      assert.deepEqual(
        published.diagnostics.map((d) => [d.range.start.line, d.code, d.source]),
        [
          [0, 'missing-alt', 'BLIP-2'],
          [1, 'default-alt', 'BLIP-2'],
          [2, 'placeholder-alt', 'BLIP-2'],
          [3, 'redundant-phrase', 'BLIP-2'],
          [4, 'file-name-alt', 'BLIP-2'],
          [8, 'missing-alt', 'BLIP-2'],
          [9, 'missing-alt', 'BLIP-2'],
        ],
      );
      assert.deepEqual(published.diagnostics.map((d) => d.severity), [2, 2, 2, 3, 2, 2, 2]);
    });

    it('follow edits', async () => {
      const uri = uriOf('lint.md');
      await server.connection.sendNotification(DidChangeTextDocumentNotification.type, {
        textDocument: { uri, version: 2 },
        contentChanges: [{ range: { start: { line: 0, character: 2 }, end: { line: 0, character: 2 } }, text: 'A cat' }],
      });
      const published = await server.diagnosticsFor(uri, 2);
      assert.deepEqual(published.diagnostics.map((d) => d.range.start.line), [1, 2, 3, 4, 8, 9]);
    });

    it('follow the settings: severity per rule, rules off, the length limit', async () => {
      const uri = uriOf('lint.md');
      const original = server.settings;
      try {
        server.settings = testSettings({ generation: GENERATION, altText: { rules: { 'missing-alt': 'error', 'default-alt': 'off', 'alt-too-long': 'hint' }, maxLength: 10 } });
        server.diagnostics.delete(uri);
        await server.connection.sendNotification(DidChangeConfigurationNotification.type, { settings: null });
        const published = await server.diagnosticsFor(uri, 2);
        assert.deepEqual(
          published.diagnostics.map((d) => [d.range.start.line, d.code, d.severity]),
          [
            // Line 0 got its alt text in the previous test; "image" is a placeholder word besides GitHub's default.
            [1, 'placeholder-alt', 2],
            [2, 'placeholder-alt', 2],
            [3, 'redundant-phrase', 3],
            [3, 'alt-too-long', 4],
            [4, 'file-name-alt', 2],
            [5, 'alt-too-long', 4],
            [8, 'missing-alt', 1],
            [9, 'missing-alt', 1],
          ],
        );
      } finally {
        server.settings = original;
        server.diagnostics.delete(uri);
        await server.connection.sendNotification(DidChangeConfigurationNotification.type, { settings: null });
        await server.diagnosticsFor(uri, 2);
      }
    });
  });

  describe('code actions', () => {
    const original = 'Intro\n\nA photo: ![](img/camera.png "Camera") and more.\n\n![fine alt](cat.png)\n';
    let uri: string;

    before(async () => {
      uri = write('fix.md', original);
      await server.open(uri, 'markdown', original);
    });

    it('resolving the quick fix inserts exactly the caption at the alt, also after the document changed', async () => {
      const published = await server.diagnosticsFor(uri, 1);
      assert.equal(published.diagnostics.length, 1);
      const actions = (await server.connection.sendRequest(CodeActionRequest.type, {
        textDocument: { uri },
        range: published.diagnostics[0].range,
        context: { diagnostics: published.diagnostics, only: ['quickfix'] },
      })) as CodeAction[];
      assert.equal(actions.length, 1);
      const [action] = actions;
      assert.equal(action.title, 'Generate alt text with BLIP-2');
      assert.equal(action.edit, undefined, 'the edit is computed only on resolve');

      // The user types above the image before picking the fix.
      const inserted = 'A new line typed meanwhile, with ![x](other.png).\n';
      await server.connection.sendNotification(DidChangeTextDocumentNotification.type, {
        textDocument: { uri, version: 2 },
        contentChanges: [{ range: { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } }, text: inserted }],
      });
      const now = inserted + original;

      const resolved = await server.connection.sendRequest(CodeActionResolveRequest.type, action);
      const change = resolved.edit?.documentChanges?.[0] as TextDocumentEdit;
      assert.deepEqual(change.textDocument, { uri, version: 2 });
      assert.equal(change.edits.length, 1);
      const [edit] = change.edits as TextEdit[];
      const expected = caption('img/camera.png');
      assert.equal(edit.newText, escapeAltText(expected.text, { kind: 'markdown' }));
      const altAt = positionOf(now, '![](img/camera.png', 2);
      assert.deepEqual(edit.range, { start: altAt, end: altAt });

      const after = TextDocument.applyEdits(TextDocument.create(uri, 'markdown', 2, now), [edit]);
      const image = findImageElements(after, 'markdown').find((i) => i.destination === 'img/camera.png');
      assert.equal(image?.alt, expected.text.replace(/\s+/g, ' ').trim());
      assert.equal(after.replace(edit.newText, ''), now, 'nothing but the alt text changed');

      assert.equal(resolved.command?.command, ClientCommands.chooseAltText);
      assert.deepEqual(resolved.command?.arguments?.[2], expected.alternatives);
    });

    it('offers "Generate missing alt text in this file" as a source action', async () => {
      const actions = (await server.connection.sendRequest(CodeActionRequest.type, {
        textDocument: { uri },
        range: { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } },
        context: { diagnostics: [], only: ['source'] },
      })) as CodeAction[];
      assert.deepEqual(actions.map((a) => [a.title, a.kind]), [['Generate missing alt text in this file', GenerateAltTextActionKind]]);
      const resolved = await server.connection.sendRequest(CodeActionResolveRequest.type, actions[0]);
      const [edit] = (resolved.edit?.documentChanges?.[0] as TextDocumentEdit).edits as TextEdit[];
      assert.equal(edit.newText, escapeAltText(caption('img/camera.png').text, { kind: 'markdown' }));
      assert.equal(resolved.edit?.changeAnnotations?.['blip2.altText']?.needsConfirmation, true);
    });
  });

  describe('the workspace command', () => {
    const files: Record<string, [string, string]> = {
      'docs/guide.md': ['markdown', '# Guide\n\n![](../cat.png)\n\n![screenshot](../coffee.png "Cup")\n\n![Already described well](../cat.png)\n'],
      'site/index.html': ['html', '<main>\n  <img src="../horse-rgba.png" class="hero">\n  <img src="../wide-alpha.png" alt="">\n</main>\n'],
      'src/Card.tsx': ['typescriptreact', "export function Card() {\n  return <img src={'../astronaut.png'} alt='' />;\n}\nexport const Logo = () => <img src=\"../noise-palette.gif\" />;\n"],
      'docs/fine.md': ['markdown', '![A rocket on its pad](../rocket.jpg)\n'],
      'node_modules/pkg/readme.md': ['markdown', '![](../../cat.png)\n'],
      '.github/notes.md': ['markdown', '![](../cat.png)\n'],
    };

    before(() => {
      for (const [name, [, text]] of Object.entries(files)) write(name, text);
    });

    it('edits every file that needs it, with progress, as one edit to review', async () => {
      const progressToken = 'alt-text-progress';
      const result = (await server.connection.sendRequest(ExecuteCommandRequest.type, {
        command: ServerCommands.generateMissingAltText,
        arguments: [{}],
        workDoneToken: progressToken,
      })) as AltTextCommandResult;

      const texts = new Map(Object.entries(files).map(([name, [, text]]) => [uriOf(name), text]));
      const edited = new Set(((result.edit.documentChanges ?? []) as TextDocumentEdit[]).map((c) => c.textDocument.uri));
      for (const name of ['docs/guide.md', 'site/index.html', 'src/Card.tsx']) assert.ok(edited.has(uriOf(name)), `${name} is edited`);
      for (const name of ['docs/fine.md', 'node_modules/pkg/readme.md', '.github/notes.md']) assert.ok(!edited.has(uriOf(name)), `${name} is left alone`);
      assert.equal(result.edit.changeAnnotations?.['blip2.altText']?.needsConfirmation, true);
      for (const change of (result.edit.documentChanges ?? []) as TextDocumentEdit[]) {
        for (const e of change.edits) assert.equal((e as { annotationId?: string }).annotationId, 'blip2.altText');
      }

      // Documents the earlier tests opened are in the workspace too; only this test's files are checked here.
      const onlyOurs = { ...result.edit, documentChanges: ((result.edit.documentChanges ?? []) as TextDocumentEdit[]).filter((c) => Object.keys(files).some((n) => uriOf(n) === c.textDocument.uri)) };
      const after = applyWorkspaceEdit(onlyOurs, texts);
      const altOf = (name: string, destination: string, nth = 0) =>
        findImageElements(after.get(uriOf(name))!, files[name][0]).filter((i) => i.destination === destination)[nth]?.alt;
      const normal = (image: string) => caption(image).text.replace(/\s+/g, ' ').trim();
      assert.equal(altOf('docs/guide.md', '../cat.png'), normal('cat.png'));
      assert.equal(altOf('docs/guide.md', '../coffee.png'), normal('coffee.png'));
      assert.equal(altOf('docs/guide.md', '../cat.png', 1), 'Already described well');
      assert.equal(altOf('site/index.html', '../horse-rgba.png'), normal('horse-rgba.png'));
      assert.equal(altOf('site/index.html', '../wide-alpha.png'), '', 'decorative images keep alt=""');
      assert.equal(altOf('src/Card.tsx', '../noise-palette.gif'), normal('noise-palette.gif'));
      assert.equal(altOf('src/Card.tsx', '../astronaut.png'), '');

      const reports = server.progress.filter((p) => p.token === progressToken).map((p) => p.value as { kind: string; message?: string });
      assert.equal(reports[0].kind, 'begin');
      assert.equal(reports[reports.length - 1].kind, 'end');
      assert.ok(reports.some((r) => /^\d+ of \d+ images$/.test(r.message ?? '')), JSON.stringify(reports));
    });

    it('with apply, sends the edit to the client itself', async () => {
      const uri = uriOf('site/index.html');
      const result = (await server.connection.sendRequest(ExecuteCommandRequest.type, {
        command: ServerCommands.generateMissingAltText,
        arguments: [{ uri, apply: true }],
      })) as AltTextCommandResult;
      assert.deepEqual([result.images, result.files, result.failures], [1, 1, []]);
      const applied = await server.until('workspace/applyEdit', () => server.appliedEdits.at(-1));
      assert.deepEqual(applied.edit, result.edit);
    });
  });

  describe('custom requests', () => {
    it('blip2/caption and blip2/ask answer, streaming the answer as partial results', async () => {
      const image = pathToFileURL(path.join(ws, 'cat.png')).href;
      const captioned = await server.connection.sendRequest(CaptionRequest.type, { image });
      assert.equal(captioned.text, caption('cat.png').text);
      assert.deepEqual(captioned.alternatives, [], 'other captions cost a beam search of their own: only when asked for');
      const withOthers = await server.connection.sendRequest(CaptionRequest.type, { image, alternatives: true });
      assert.equal(withOthers.text, caption('cat.png').text);
      assert.deepEqual(withOthers.alternatives, caption('cat.png').alternatives);

      const partials: string[] = [];
      const partialResultToken = 'answer-stream';
      const subscription = server.connection.onProgress(AnswerPartialType, partialResultToken, (p) => void partials.push(p.textSoFar));
      const answer = await server.connection.sendRequest(AskRequest.type, { image, question: 'What is this?', partialResultToken });
      subscription.dispose();
      // With beam search the stream follows the leading beam, which the best finished beam may not be.
      assert.ok(partials.length > 1, 'partial answers arrive token by token');
      assert.ok(answer.text.length > 0 && !answer.cached);

      const status = await server.connection.sendRequest(ModelStatusRequest.type);
      assert.equal(status.state, 'ready');
      assert.ok(server.statuses.some((s) => s.state === 'ready'), 'blip2/modelStatusChanged was sent');
    });

    it('a caption request for a missing file fails with one sentence', async () => {
      await assert.rejects(
        server.connection.sendRequest(CaptionRequest.type, { image: pathToFileURL(path.join(ws, 'gone.png')).href }),
        (e: { message: string }) => /^The image file does not exist: .*gone\.png\.$/.test(e.message),
      );
    });
  });

  it('exits with code 0 on shutdown and exit, leaving no process behind', async () => {
    const pid = server.pid;
    assert.ok(processExists(pid));
    assert.equal(await server.stop(), 0);
    assert.equal(processExists(pid), false);
  });
});
