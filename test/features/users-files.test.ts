// What the server writes into people's documents: edits only for the version they were computed for, nothing from a
// run cancelled half-way, and never an empty alt (which would mark an image as decorative).
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { CancellationToken, CancellationTokenSource, type CodeAction, type TextDocumentEdit, type TextEdit } from 'vscode-languageserver-protocol';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { altEditFor } from '../../server/src/features/alt-text/alt-edit';
import { EMPTY_CAPTION, generateMissingAltText, type AltTextFile } from '../../server/src/features/alt-text/generate-alt-text';
import { altCodeActions, resolveAltAction } from '../../server/src/features/code-actions/alt-code-actions';
import { captionHoverMarkdown } from '../../server/src/features/hover/hover-markdown';
import { findImageElements } from '../../server/src/features/images/find-images';
import type { CaptionOptions, ImageSource } from '../../server/src/inference/types';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/settings';
import { FakeInference } from '../helpers/fake-inference';

let dir: string;
const uriOf = (name: string) => pathToFileURL(path.join(dir, name)).href;
const editSupport = { documentChanges: true, changeAnnotations: true };

function quickFix(document: TextDocument): CodeAction {
  const whole = { start: { line: 0, character: 0 }, end: document.positionAt(document.getText().length) };
  const [action] = altCodeActions(document, whole, { diagnostics: [], only: ['quickfix'] }, { workspaceFolders: [pathToFileURL(dir).href], settings: DEFAULT_SETTINGS });
  return action;
}

describe("users' files", () => {
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-users-'));
    for (const name of ['a.png', 'b.png', 'c.png']) fs.writeFileSync(path.join(dir, name), 'png');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a quick fix edit carries the version it was computed for, with its image found again after the user typed', async () => {
    let live = TextDocument.create(uriOf('doc.md'), 'markdown', 1, 'Intro\n\n<img src="a.png">\n');
    const inference = new FakeInference({ 'a.png': 'a kite' });
    inference.alternatives = ['a bird'];
    inference.hold();
    const options = { workspaceFolders: [pathToFileURL(dir).href], settings: DEFAULT_SETTINGS, editSupport, documentNow: () => live, vscodeClient: true };
    const resolving = resolveAltAction(quickFix(live), inference, options, CancellationToken.None);
    while (inference.calls.length === 0) await new Promise((r) => setImmediate(r));
    live = TextDocument.update(live, [{ range: { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } }, text: 'New line\n' }], 2);
    inference.release();
    const { action } = await resolving;
    const change = action.edit!.documentChanges![0] as TextDocumentEdit;
    // An editor with any other version refuses it instead of writing at stale offsets.
    assert.equal(change.textDocument.version, 2);
    const after = TextDocument.applyEdits(live, change.edits as TextEdit[]);
    assert.equal(after, 'New line\nIntro\n\n<img alt="a kite" src="a.png">\n');
    // "Choose another caption" replaces exactly the alt text written.
    const [, range] = action.command!.arguments! as [string, { start: { line: number; character: number }; end: { line: number; character: number } }];
    const written = TextDocument.create(live.uri, 'html', 3, after);
    assert.equal(after.slice(written.offsetAt(range.start), written.offsetAt(range.end)), 'a kite');
  });

  it('a workspace run cancelled half-way returns no edit at all, so every file stays as it was', async () => {
    const source = new CancellationTokenSource();
    // The first image is captioned at once; the others are still running when the user cancels.
    class HalfWay extends FakeInference {
      override async caption(image: ImageSource, options: CaptionOptions, token: CancellationToken) {
        if (image.kind === 'file' && image.path.endsWith('a.png')) {
          const result = await super.caption(image, options, token);
          setImmediate(() => source.cancel());
          return result;
        }
        return new Promise<never>((_, reject) => token.onCancellationRequested(() => reject(Object.assign(new Error('Cancelled.'), { name: 'CancelledError' }))));
      }
    }
    const inference = new HalfWay({ 'a.png': 'a kite', 'b.png': 'a boat', 'c.png': 'a car' });
    const files: AltTextFile[] = ['a', 'b', 'c'].map((n) => ({ uri: uriOf(`${n}.md`), languageId: 'markdown', text: `![](${n}.png)\n`, version: null }));
    const progress: number[] = [];
    await assert.rejects(
      generateMissingAltText(files, inference, {
        workspaceFolders: [pathToFileURL(dir).href],
        settingsFor: async () => DEFAULT_SETTINGS,
        current: async (f) => f,
        onProgress: (done) => progress.push(done),
        priority: 'interactive',
        editSupport,
      }, source.token),
      /Cancelled/,
    );
    assert.ok(progress.includes(1), 'one image was captioned before the cancel');
  });

  it('never writes an empty caption as alt text: the quick fix, the file and workspace runs, and the hover say so instead', async () => {
    const document = TextDocument.create(uriOf('empty.md'), 'markdown', 1, '![](a.png) ![](b.png)\n');
    const inference = new FakeInference({ 'a.png': '   ', 'b.png': 'a boat' });
    const { action, failure } = await resolveAltAction(quickFix(document), inference, { workspaceFolders: [pathToFileURL(dir).href], settings: DEFAULT_SETTINGS, editSupport, documentNow: () => document }, CancellationToken.None);
    assert.equal(action.edit, undefined);
    assert.equal(failure, EMPTY_CAPTION);

    const result = await generateMissingAltText([{ uri: document.uri, languageId: 'markdown', text: document.getText(), version: 1 }], inference, {
      workspaceFolders: [pathToFileURL(dir).href],
      settingsFor: async () => DEFAULT_SETTINGS,
      current: async (f) => f,
      priority: 'interactive',
      editSupport,
    }, CancellationToken.None);
    assert.equal(result.images, 1);
    assert.deepEqual(result.failures, [{ uri: document.uri, image: 'a.png', reason: EMPTY_CAPTION }]);
    const edits = (result.edit.documentChanges![0] as TextDocumentEdit).edits as TextEdit[];
    assert.equal(TextDocument.applyEdits(document, edits), '![](a.png) ![a boat](b.png)\n');

    const [image] = findImageElements('<img src="a.png">', 'html');
    assert.equal(altEditFor(image, ' \n '), undefined);
    const hover = captionHoverMarkdown({
      caption: { text: '', alternatives: [], model: 'm', precision: 'fp32', device: 'cpu', durationMs: 1, cached: false },
      thumbnail: { sized: true },
      useAsAltText: { uri: document.uri, range: { start: { line: 0, character: 0 }, end: { line: 0, character: 10 } } },
      askImage: 'file:///a.png',
      links: true,
    });
    assert.doesNotMatch(hover, /Use as alt text/);
    assert.match(hover, /Ask a question/);
  });
});
