import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { CancellationToken, CancellationTokenSource } from 'vscode-languageserver-protocol';
import { UserError } from '../../server/src/engine/errors';
import { EMPTY_CAPTION, generateMissingAltText, type AltTextFile, type GenerateAltTextOptions } from '../../server/src/features/alt-text/generate-alt-text';
import { globToRegExp } from '../../server/src/features/workspace/glob-excludes';
import { findWorkspaceFiles } from '../../server/src/features/workspace/workspace-files';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/settings';
import { FakeInference } from '../helpers/fake-inference';

let dir: string;
const uriOf = (name: string) => pathToFileURL(path.join(dir, name)).href;

function options(current: Map<string, AltTextFile>, progress: [number, number][] = []): GenerateAltTextOptions {
  return {
    workspaceFolders: [pathToFileURL(dir).href],
    settingsFor: async () => DEFAULT_SETTINGS,
    current: async (file) => current.get(file.uri) ?? file,
    onProgress: (done, total) => progress.push([done, total]),
    priority: 'interactive',
    editSupport: { documentChanges: true, changeAnnotations: true },
  };
}

describe('generating missing alt text for files', () => {
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-batch-'));
    for (const name of ['a.png', 'b.png', 'sub/c.png']) {
      fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
      fs.writeFileSync(path.join(dir, name), 'png');
    }
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('captions each image once, reports n of m, and returns one annotated edit over the files as they are now', async () => {
    const md: AltTextFile = { uri: uriOf('a.md'), languageId: 'markdown', text: '![](a.png)\n![](b.png)\n![ok alt](b.png)\n![](missing.png)\n', version: 3 };
    const tsx: AltTextFile = { uri: uriOf('sub/App.tsx'), languageId: 'typescriptreact', text: 'export const A = () => <img src="../a.png" />;\n', version: null };
    const fine: AltTextFile = { uri: uriOf('fine.html'), languageId: 'html', text: '<img src="a.png" alt="">\n', version: null };
    const inference = new FakeInference({ 'a.png': 'a kite', 'b.png': 'a boat' });
    const progress: [number, number][] = [];
    // The markdown file gained a line while the model ran.
    const current = new Map([[md.uri, { ...md, text: `# Title\n${md.text}`, version: 4 }]]);
    const result = await generateMissingAltText([md, tsx, fine], inference, options(current, progress), CancellationToken.None);

    assert.deepEqual(inference.calls.map((c) => c.image).sort(), ['a.png', 'b.png']);
    assert.deepEqual(progress[progress.length - 1], [4, 4]);
    assert.equal(result.images, 3);
    assert.equal(result.files, 2);
    assert.deepEqual(result.failures.map((f) => [f.image, /does not exist/.test(f.reason)]), [['missing.png', true]]);
    assert.equal(result.edit.changeAnnotations?.['blip2.altText']?.needsConfirmation, true);
    const changes = result.edit.documentChanges as { textDocument: { uri: string; version: number | null }; edits: { range: unknown; newText: string; annotationId?: string }[] }[];
    assert.deepEqual(changes.map((c) => [c.textDocument.uri, c.textDocument.version, c.edits.map((e) => [e.newText, e.annotationId])]), [
      [md.uri, 4, [['a kite', 'blip2.altText'], ['a boat', 'blip2.altText']]],
      [tsx.uri, null, [[' alt="a kite"', 'blip2.altText']]],
    ]);
    assert.deepEqual(changes[0].edits[0].range, { start: { line: 1, character: 2 }, end: { line: 1, character: 2 } });
  });

  it('reports an empty caption as a failure rather than writing alt="" (which would mark the image as decoration)', async () => {
    const md: AltTextFile = { uri: uriOf('e.md'), languageId: 'markdown', text: '![](a.png)\n<img src="b.png">\n', version: 1 };
    const html: AltTextFile = { uri: uriOf('e.html'), languageId: 'html', text: '<img src="a.png">\n', version: 1 };
    const result = await generateMissingAltText([md, html], new FakeInference({ 'a.png': ' ', 'b.png': 'a bird' }), options(new Map()), CancellationToken.None);
    assert.deepEqual(result.failures.map((f) => [f.uri, f.image, f.reason]), [
      [md.uri, 'a.png', EMPTY_CAPTION],
      [html.uri, 'a.png', EMPTY_CAPTION],
    ]);
    assert.equal(result.images, 1, 'only the image with a caption is edited');
  });

  it('stops when cancelled', async () => {
    const inference = new FakeInference({ 'a.png': 'a kite' });
    inference.hold();
    const source = new CancellationTokenSource();
    const file: AltTextFile = { uri: uriOf('a.md'), languageId: 'markdown', text: '![](a.png)', version: 1 };
    const running = generateMissingAltText([file], inference, options(new Map()), source.token);
    while (inference.calls.length === 0) await new Promise((r) => setImmediate(r));
    source.cancel();
    await assert.rejects(running, { name: 'CancelledError' });
    assert.equal(inference.cancelled, 1);
  });

  it('fails once with the no-model error instead of listing every image as a failure', async () => {
    const inference = new FakeInference({ 'a.png': 'a kite', 'b.png': 'a boat' });
    inference.failure = Object.assign(new UserError('The model m is not on this machine yet.'), { kind: 'noModel' });
    const file: AltTextFile = { uri: uriOf('a.md'), languageId: 'markdown', text: '![](a.png) ![](b.png)', version: 1 };
    await assert.rejects(generateMissingAltText([file], inference, options(new Map()), CancellationToken.None), /not on this machine yet/);
  });

  it('walks markdown, HTML, JSX and TSX files, skipping node_modules, dot-folders and files.exclude', async () => {
    for (const name of ['x.md', 'y.html', 'z.tsx', 'w.jsx', 'n.ts', 'node_modules/p/r.md', '.hidden/s.md', 'dist/t.md', 'docs/u.markdown']) {
      fs.mkdirSync(path.dirname(path.join(dir, 'walk', name)), { recursive: true });
      fs.writeFileSync(path.join(dir, 'walk', name), '');
    }
    const files = await findWorkspaceFiles([pathToFileURL(path.join(dir, 'walk')).href], { excludes: { '**/dist': true, '**/*.jsx': false } }, CancellationToken.None);
    assert.deepEqual(files.map((f) => [path.relative(path.join(dir, 'walk'), f.path), f.languageId]), [
      ['w.jsx', 'javascriptreact'],
      ['x.md', 'markdown'],
      ['y.html', 'html'],
      ['z.tsx', 'typescriptreact'],
      ['docs/u.markdown', 'markdown'],
    ]);
  });

  it('reads files.exclude globs as VS Code does', () => {
    assert.ok(globToRegExp('**/.git').test('a/.git'));
    assert.ok(globToRegExp('**/*.{md,html}').test('x/y.md'));
    assert.ok(globToRegExp('build').test('src/build/x.md'));
    assert.ok(globToRegExp('out/**').test('out/a/b.md'));
    assert.ok(!globToRegExp('out/**').test('src/out/b.md'));
    assert.ok(!globToRegExp('*.md').test('a.mdx'));
  });
});
