import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { CancellationToken, type CodeAction, type TextDocumentEdit, type TextEdit } from 'vscode-languageserver-protocol';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { altCodeActions, isAltFixData, resolveAltAction, wants, type ResolveAltActionOptions } from '../../server/src/features/code-actions/alt-code-actions';
import { altTextDiagnostics } from '../../server/src/features/diagnostics/alt-diagnostics';
import { ClientCommands, GenerateAltTextActionKind, ServerCommands } from '../../server/src/protocol/messages';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/settings';
import { FakeInference } from '../helpers/fake-inference';

let dir: string;
let uri: string;

/** A document that can change while a resolve is running, like the server's TextDocuments. */
class LiveDocument {
  document: TextDocument;
  constructor(text: string, languageId = 'markdown') {
    this.document = TextDocument.create(uri, languageId, 1, text);
  }
  insert(offset: number, text: string): void {
    const at = this.document.positionAt(offset);
    this.document = TextDocument.update(this.document, [{ range: { start: at, end: at }, text }], this.document.version + 1);
  }
}

function resolveOptions(live: LiveDocument, vscodeClient = true): ResolveAltActionOptions {
  return {
    workspaceFolders: [pathToFileURL(dir).href],
    settings: DEFAULT_SETTINGS,
    editSupport: { documentChanges: true, changeAnnotations: true },
    documentNow: (u) => (u === uri ? live.document : undefined),
    vscodeClient,
  };
}

function quickFixes(live: LiveDocument, disabledSupport = false): CodeAction[] {
  const diagnostics = altTextDiagnostics(live.document, DEFAULT_SETTINGS.altText);
  const whole = { start: { line: 0, character: 0 }, end: live.document.positionAt(live.document.getText().length) };
  return altCodeActions(live.document, whole, { diagnostics, only: ['quickfix'] }, { workspaceFolders: [], settings: DEFAULT_SETTINGS, disabledSupport });
}

function applied(document: TextDocument, action: CodeAction): string {
  const change = action.edit?.documentChanges?.[0] as TextDocumentEdit;
  assert.ok(change, 'the action has an edit');
  return TextDocument.applyEdits(document, change.edits as TextEdit[]);
}

describe('alt-text code actions', () => {
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-actions-'));
    uri = pathToFileURL(path.join(dir, 'doc.md')).href;
    for (const name of ['a.png', 'b.png']) fs.writeFileSync(path.join(dir, name), 'png');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('offers one unresolved quick fix per alt diagnostic, and nothing runs until resolve', () => {
    const live = new LiveDocument('![](a.png) ![image](b.png) ![fine](a.png) <img src="b.png" alt="">\n');
    const inference = new FakeInference({});
    const actions = quickFixes(live);
    assert.deepEqual(actions.map((a) => [a.title, a.kind, a.diagnostics?.[0].code, a.edit]), [
      ['Generate alt text with BLIP-2', 'quickfix', 'missing-alt', undefined],
      ['Generate alt text with BLIP-2', 'quickfix', 'default-alt', undefined],
    ]);
    assert.equal(inference.calls.length, 0);
  });

  it('finds the problems within the range itself when the client sends no diagnostics', () => {
    const live = new LiveDocument('![](a.png)\n\n![](b.png)\n');
    const range = { start: { line: 2, character: 3 }, end: { line: 2, character: 3 } };
    const actions = altCodeActions(live.document, range, { diagnostics: [], only: ['quickfix'] }, { workspaceFolders: [], settings: DEFAULT_SETTINGS });
    assert.deepEqual(actions.map((a) => [a.diagnostics?.[0].range.start.line, (a.data as { anchor: { destination: string } }).anchor.destination]), [[2, 'b.png']]);
  });

  it('leaves out, or disables with the reason, fixes that cannot work', () => {
    const live = new LiveDocument('![](gone.png)\n\n![](https://example.com/x.png)\n\n![](a.png)\n');
    assert.equal(quickFixes(live).length, 1);
    const actions = quickFixes(live, true);
    assert.equal(actions.length, 3);
    assert.match(actions[0].disabled!.reason, /does not exist: .*gone\.png/);
    assert.match(actions[1].disabled!.reason, /Remote images are off/);
    assert.equal(actions[2].disabled, undefined);
  });

  it('inserts the caption at the image as it is after edits made while the model ran, and offers the other beams', async () => {
    const live = new LiveDocument('Intro\n\n![](a.png "A")\n');
    const inference = new FakeInference({ 'a.png': 'a [red] kite' });
    inference.alternatives = ['a kite', 'a bird'];
    inference.hold();
    const [action] = quickFixes(live);
    const resolving = resolveAltAction(action, inference, resolveOptions(live), CancellationToken.None);
    while (inference.calls.length === 0) await new Promise((r) => setImmediate(r));
    live.insert(0, 'A new first line with ![](b.png)\n');
    inference.release();
    const { action: resolved, failure } = await resolving;
    assert.equal(failure, undefined);
    const text = applied(live.document, resolved);
    assert.equal(text, 'A new first line with ![](b.png)\nIntro\n\n![a \\[red\\] kite](a.png "A")\n');
    assert.deepEqual(resolved.command?.command, ClientCommands.chooseAltText);
    const [commandUri, range, alternatives] = resolved.command!.arguments!;
    assert.equal(commandUri, uri);
    assert.deepEqual(range, { start: { line: 3, character: 2 }, end: { line: 3, character: 16 } });
    assert.deepEqual(alternatives, ['a kite', 'a bird']);
  });

  it('offers the other beams only to VS Code, the one client that implements the command', async () => {
    const live = new LiveDocument('![](a.png)\n');
    const inference = new FakeInference({ 'a.png': 'a kite' });
    inference.alternatives = ['a bird'];
    const [action] = quickFixes(live);
    const { action: resolved } = await resolveAltAction(action, inference, resolveOptions(live, false), CancellationToken.None);
    assert.equal(applied(live.document, resolved), '![a kite](a.png)\n');
    assert.equal(resolved.command, undefined);
  });

  it('reports an empty caption instead of writing alt text nobody can use', async () => {
    const live = new LiveDocument('![](a.png)\n');
    const [action] = quickFixes(live);
    const { action: resolved, failure } = await resolveAltAction(action, new FakeInference({ 'a.png': '  ' }), resolveOptions(live), CancellationToken.None);
    assert.equal(resolved.edit, undefined);
    assert.match(failure ?? '', /empty caption/);
  });

  it('adds a missing HTML alt after <img and leaves the destination alone', async () => {
    const live = new LiveDocument('<p><img src="a.png"></p>\n', 'html');
    const [action] = quickFixes(live);
    const { action: resolved } = await resolveAltAction(action, new FakeInference({ 'a.png': 'say "hi"' }), resolveOptions(live), CancellationToken.None);
    assert.equal(applied(live.document, resolved), '<p><img alt="say &quot;hi&quot;" src="a.png"></p>\n');
  });

  it('gives no edit, and says why, when the user wrote an alt meanwhile', async () => {
    const live = new LiveDocument('![](a.png)\n');
    const inference = new FakeInference({ 'a.png': 'a kite' });
    inference.hold();
    const [action] = quickFixes(live);
    const resolving = resolveAltAction(action, inference, resolveOptions(live), CancellationToken.None);
    while (inference.calls.length === 0) await new Promise((r) => setImmediate(r));
    live.insert(2, 'my own words');
    inference.release();
    const { action: resolved, failure } = await resolving;
    assert.equal(resolved.edit, undefined);
    assert.match(failure!, /changed while BLIP-2 was captioning/);
  });

  it('offers "Generate missing alt text in this file" only when asked for source actions, and fills every image', async () => {
    const live = new LiveDocument('![](a.png)\n\n![photo](b.png)\n\n![a good one](a.png)\n');
    const range = { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } };
    const settingsOnly = { workspaceFolders: [], settings: DEFAULT_SETTINGS };
    assert.deepEqual(altCodeActions(live.document, range, { diagnostics: [] }, settingsOnly).map((a) => a.kind), ['quickfix']);
    const [action] = altCodeActions(live.document, range, { diagnostics: [], only: ['source'] }, settingsOnly);
    assert.equal(action.kind, GenerateAltTextActionKind);
    const { action: resolved } = await resolveAltAction(action, new FakeInference({ 'a.png': 'a kite', 'b.png': 'a boat' }), resolveOptions(live), CancellationToken.None);
    assert.equal(applied(live.document, resolved), '![a kite](a.png)\n\n![a boat](b.png)\n\n![a good one](a.png)\n');
    assert.equal(resolved.edit?.changeAnnotations?.['blip2.altText']?.needsConfirmation, true);
  });

  it('for clients that cannot resolve actions, offers each fix as a server command that carries its image', () => {
    const live = new LiveDocument('![](a.png)\n');
    const diagnostics = altTextDiagnostics(live.document, DEFAULT_SETTINGS.altText);
    const range = { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } };
    const actions = altCodeActions(live.document, range, { diagnostics, only: ['quickfix', 'source'] }, { workspaceFolders: [], settings: DEFAULT_SETTINGS, resolveSupport: false });
    assert.deepEqual(actions.map((a) => [a.kind, a.command?.command, a.data]), [
      ['quickfix', ServerCommands.fixAltText, undefined],
      [GenerateAltTextActionKind, ServerCommands.generateMissingAltText, undefined],
    ]);
    const [fixArgs] = actions[0].command!.arguments!;
    assert.ok(isAltFixData(fixArgs));
    assert.equal(fixArgs.uri, uri);
    assert.equal(fixArgs.anchor.destination, 'a.png');
    assert.deepEqual(actions[1].command!.arguments, [{ uri, apply: true }]);
  });

  it('matches the kinds a client asks for hierarchically, as LSP defines them', () => {
    const fileAction = GenerateAltTextActionKind;
    assert.ok(wants({ only: ['source'] }, fileAction, true));
    assert.ok(wants({ only: [''] }, fileAction, true));
    assert.ok(wants({ only: ['source.blip2'] }, fileAction, true));
    assert.ok(!wants({ only: ['source.organizeImports'] }, fileAction, true));
    assert.ok(!wants({ only: ['sourc'] }, fileAction, true));
    assert.ok(!wants({}, fileAction, true), 'source actions only when asked for');
    assert.ok(wants({}, 'quickfix'));
    assert.ok(!wants({ only: ['refactor'] }, 'quickfix'));
  });
});
