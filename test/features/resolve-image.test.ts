import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { existingImageFile, resolveImage, type ResolveContext } from '../../server/src/features/images/resolve-image';

const workspace = path.resolve('/work/ws');
const docsDir = path.join(workspace, 'docs');
const context: ResolveContext = {
  documentUri: pathToFileURL(path.join(docsDir, 'guide.md')).href,
  workspaceFolders: [pathToFileURL(workspace).href],
  allowRemote: false,
};

function filePath(destination: string, ctx: ResolveContext = context): string | undefined {
  const resolved = resolveImage(destination, ctx);
  return resolved.kind === 'file' ? resolved.path : undefined;
}

describe('resolveImage', () => {
  it('resolves relative paths against the document, dropping query and fragment, decoding percent-encoding', () => {
    assert.equal(filePath('img/a.png'), path.join(docsDir, 'img', 'a.png'));
    assert.equal(filePath('./img/a.png'), path.join(docsDir, 'img', 'a.png'));
    assert.equal(filePath('../assets/sun%20set.png?raw=1#top'), path.join(workspace, 'assets', 'sun set.png'));
  });

  it('gives the file URI of what it resolved', () => {
    const resolved = resolveImage('img/a b.png', context);
    assert.equal(resolved.kind === 'file' && resolved.uri, pathToFileURL(path.join(docsDir, 'img', 'a b.png')).href);
  });

  it('reads /x.png from the workspace folder holding the document, with the file system root as the fallback', () => {
    const resolved = resolveImage('/assets/x.png', context);
    assert.equal(resolved.kind, 'file');
    assert.equal(resolved.kind === 'file' && resolved.path, path.join(workspace, 'assets', 'x.png'));
    assert.deepEqual(resolved.kind === 'file' && resolved.alternatives, [path.resolve('/assets/x.png')]);

    const nested = { ...context, workspaceFolders: [pathToFileURL('/elsewhere').href, pathToFileURL(workspace).href, pathToFileURL(docsDir).href] };
    assert.equal(filePath('/x.png', nested), path.join(docsDir, 'x.png'));

    const noWorkspace = { ...context, workspaceFolders: [] };
    assert.equal(filePath('/assets/x.png', noWorkspace), path.resolve('/assets/x.png'));
  });

  it('accepts file: URIs, percent-encoded', () => {
    const uri = pathToFileURL(path.join(workspace, 'p q.png')).href;
    assert.ok(uri.includes('%20'));
    assert.equal(filePath(uri), path.join(workspace, 'p q.png'));
  });

  it('reports http(s) images as remote only when the setting allows them', () => {
    assert.deepEqual(resolveImage('https://example.test/a.png', context), { kind: 'remote-disallowed', url: 'https://example.test/a.png' });
    assert.deepEqual(resolveImage('HTTP://example.test/a.png', { ...context, allowRemote: true }), { kind: 'remote', url: 'HTTP://example.test/a.png' });
    assert.deepEqual(resolveImage('//cdn.test/a.png', { ...context, allowRemote: true }), { kind: 'remote', url: 'https://cdn.test/a.png' });
  });

  it('decodes data: URIs holding images, base64 or percent-encoded', () => {
    const png = resolveImage('data:image/png;base64,iVBORw0KGgo=', context);
    assert.equal(png.kind, 'inline');
    assert.equal(png.kind === 'inline' && png.mimeType, 'image/png');
    assert.deepEqual(png.kind === 'inline' && [...png.bytes], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

    const svg = resolveImage('data:image/svg+xml,%3Csvg%2F%3E', context);
    assert.equal(svg.kind === 'inline' && Buffer.from(svg.bytes).toString('utf8'), '<svg/>');

    assert.equal(resolveImage('data:text/plain,hello', context).kind, 'unresolved');
    assert.equal(resolveImage('data:image/png;base64', context).kind, 'unresolved');
  });

  it('never throws for odd destinations', () => {
    for (const odd of ['', '   ', '#section', '?q=1', 'mailto:a@b.test', 'file://server/share/x.png', 'data:image/png,%E0%A4%A', 'img/100%.png', '%']) {
      const resolved = resolveImage(odd, context);
      assert.ok(['file', 'unresolved'].includes(resolved.kind), `${odd}: ${resolved.kind}`);
    }
    assert.equal(filePath('img/100%.png'), path.join(docsDir, 'img', '100%.png'));
    assert.equal(resolveImage('mailto:a@b.test', context).kind, 'unresolved');
  });

  it('needs a folder for relative paths in an unsaved document', () => {
    const untitled = { documentUri: 'untitled:Untitled-1', allowRemote: false };
    assert.equal(resolveImage('a.png', untitled).kind, 'unresolved');
    assert.equal(filePath('a.png', { ...untitled, workspaceFolders: [pathToFileURL(workspace).href] }), path.join(workspace, 'a.png'));
  });
});

describe('existingImageFile', () => {
  it('picks the candidate that exists on disk: the workspace-relative reading first, then the absolute one', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-resolve-'));
    try {
      const ws = path.join(root, 'ws');
      fs.mkdirSync(path.join(ws, 'docs'), { recursive: true });
      const outside = path.join(root, 'outside.png');
      fs.writeFileSync(outside, 'x');
      const ctx: ResolveContext = { documentUri: pathToFileURL(path.join(ws, 'docs', 'a.md')).href, workspaceFolders: [pathToFileURL(ws).href], allowRemote: false };
      const absolute = resolveImage(outside, ctx);
      assert.ok(absolute.kind === 'file');
      assert.equal(existingImageFile(absolute), outside);

      fs.mkdirSync(path.dirname(path.join(ws, outside)), { recursive: true });
      fs.writeFileSync(path.join(ws, outside), 'y');
      assert.equal(existingImageFile(absolute), path.join(ws, outside));

      const missing = resolveImage('nope.png', ctx);
      assert.ok(missing.kind === 'file');
      assert.equal(existingImageFile(missing), undefined);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
