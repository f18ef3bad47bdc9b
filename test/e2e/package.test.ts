// The platform VSIX: what ships in it, what does not, and that its bundles run from it with nothing else.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { headings, parseDoc } from '../helpers/markdown';
import { referenceImagesDir, repoRoot, tinyModelDir } from './lib/env';
import { listZip, packagedVsix, type ZipEntry } from './lib/vsix';

/** Measured 2026-11 for linux-x64: 26.0 MB (uncompressed: 44 MB onnxruntime, 18 MB libvips, 2 MB bundles). */
const MAX_VSIX_BYTES = 32 * 1024 * 1024;
const manifest = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8'));
const target = `${process.platform}-${process.arch}`;
const [os_, arch] = [process.platform, process.arch];

describe(`packaged VSIX (${target})`, () => {
  let vsix: string;
  let entries: ZipEntry[];
  let names: string[];
  let extracted: string;

  before(() => {
    vsix = packagedVsix();
    entries = listZip(vsix);
    names = entries.map((e) => e.name);
    extracted = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-vsix-'));
    execFileSync('unzip', ['-q', vsix, '-d', extracted]);
  });
  after(() => {
    if (extracted) fs.rmSync(extracted, { recursive: true, force: true });
  });

  it(`is named for its target and is under ${MAX_VSIX_BYTES / 1024 / 1024} MB`, (t) => {
    assert.equal(path.basename(vsix), `${manifest.name}-${manifest.version}-${target}.vsix`);
    const bytes = fs.statSync(vsix).size;
    t.diagnostic(`${path.basename(vsix)}: ${(bytes / 1024 / 1024).toFixed(1)} MB, ${entries.length} entries`);
    assert.ok(bytes < MAX_VSIX_BYTES, `${bytes} bytes`);
    const vsixManifest = fs.readFileSync(path.join(extracted, 'extension.vsixmanifest'), 'utf8');
    assert.match(vsixManifest, new RegExp(`TargetPlatform="${target}"`));
  });

  it('carries the production bundles, the manifest and media, and no sources or source maps', () => {
    for (const bundle of ['extension', 'server', 'worker', 'parse-worker', 'session-worker', 'stream-worker', 'cli']) {
      assert.ok(names.includes(`extension/dist/${bundle}.js`), `dist/${bundle}.js missing`);
      const text = fs.readFileSync(path.join(extracted, 'extension', 'dist', `${bundle}.js`), 'utf8');
      assert.doesNotMatch(text, /sourceMappingURL/, `dist/${bundle}.js points at a source map`);
    }
    assert.ok(names.includes('extension/package.json'));
    assert.ok(names.some((n) => n.startsWith('extension/media/')), 'media/ missing');
    const offending = names.filter((n) => /\.(map|ts|tsx|mts|cts)$/.test(n) || /^extension\/(client|server|test|scripts|out|\.ci)\//.test(n));
    assert.deepEqual(offending, []);
    const distFiles = names.filter((n) => n.startsWith('extension/dist/') && !n.startsWith('extension/dist/native/'));
    assert.deepEqual(distFiles.sort(), ['cli', 'extension', 'parse-worker', 'server', 'session-worker', 'stream-worker', 'worker'].map((b) => `extension/dist/${b}.js`));
    // The native decoder, compiled for this platform when the packaging machine has a C compiler (CI has).
    const native = names.filter((n) => n.startsWith('extension/dist/native/'));
    assert.deepEqual(native, fs.existsSync(path.join(repoRoot, 'dist/native/opt-decoder-linux-x64.so')) ? ['extension/dist/native/opt-decoder-linux-x64.so'] : []);
  });

  it('has a Details page for users: what the extension does and needs first, no build commands', () => {
    // One readme, the Marketplace page (vsce's --readme-path), not the repository's developer README beside it.
    assert.deepEqual(names.filter((n) => /^extension\/readme\.md$/i.test(n) || n.startsWith('extension/media/marketplace/')), ['extension/readme.md']);
    const vsixManifest = fs.readFileSync(path.join(extracted, 'extension.vsixmanifest'), 'utf8');
    assert.match(vsixManifest, /<Asset Type="Microsoft\.VisualStudio\.Services\.Content\.Details" Path="extension\/readme\.md"/);
    const text = fs.readFileSync(path.join(extracted, 'extension', 'readme.md'), 'utf8');
    assert.equal(text, fs.readFileSync(path.join(repoRoot, 'media', 'marketplace', 'README.md'), 'utf8'));
    const page = parseDoc('extension/readme.md', text);
    const [title, firstSection] = [headings(page)[0], headings(page).find((h) => h.depth === 2)];
    assert.deepEqual(title, { depth: 1, text: manifest.displayName });
    const intro = text.slice(text.indexOf('\n'), text.indexOf('\n## ')).toLowerCase();
    assert.ok(intro.includes('caption') && intro.includes('alt text'), intro);
    assert.equal(firstSection?.text, 'Requirements');
    assert.doesNotMatch(text, /\bnpm (ci|test|run)\b/);
    // Images the Marketplace can show: https, never relative to a VSIX it does not unpack.
    for (const image of text.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)) assert.match(image[1], /^https:\/\//);
    assert.ok(names.includes('extension/changelog.md'), 'the changelog ships for its Marketplace tab');
  });

  it('carries only the native runtime packages, for this platform only', () => {
    const packages = new Set(
      names
        .filter((n) => n.startsWith('extension/node_modules/'))
        .map((n) => n.split('/').slice(2, n.split('/')[2].startsWith('@') ? 4 : 3).join('/')),
    );
    const sharpDeps = Object.keys(JSON.parse(fs.readFileSync(path.join(repoRoot, 'node_modules/sharp/package.json'), 'utf8')).dependencies);
    const expected = new Set([
      'onnxruntime-node',
      'onnxruntime-common',
      'sharp',
      `@img/sharp-${os_}-${arch}`,
      ...(os_ === 'linux' || os_ === 'darwin' ? [`@img/sharp-libvips-${os_}-${arch}`] : []),
      ...sharpDeps,
      // madvise for the idle graph's weights: only Linux has the /proc files it reads.
      ...(os_ === 'linux' ? ['koffi', `@koromix/koffi-${os_}-${arch}`] : []),
    ]);
    assert.deepEqual([...packages].sort(), [...expected].sort());

    const ortBinaries = names.filter((n) => n.startsWith('extension/node_modules/onnxruntime-node/bin/'));
    const platforms = new Set(ortBinaries.map((n) => n.split('/').slice(5, 7).join('/')));
    assert.deepEqual([...platforms], [`${os_}/${arch}`], 'onnxruntime-node binaries of other platforms shipped');
    assert.ok(ortBinaries.some((n) => n.endsWith('/onnxruntime_binding.node')));
    assert.ok(names.some((n) => new RegExp(`^extension/node_modules/@img/sharp-${os_}-${arch}/lib/.*\\.node$`).test(n)));
  });

  it('carries a koffi that loads from it alone and reaches libc', { skip: os_ !== 'linux' && 'koffi ships for Linux only' }, () => {
    const out = execFileSync(
      process.execPath,
      ['-e', "const k = require('koffi'); const f = k.load('libc.so.6').func('int getpagesize()'); process.stdout.write(String(f()))"],
      { cwd: path.join(extracted, 'extension'), encoding: 'utf8', env: { ...process.env, NODE_PATH: '' } },
    );
    assert.equal(Number(out), Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' })));
  });

  it('runs from the unpacked VSIX alone: the CLI bundle loads onnxruntime-node and sharp from it and captions', () => {
    const store = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-vsix-store-'));
    try {
      // NODE_PATH empty and the folder outside the repository: nothing resolves from the repo's node_modules.
      const out = execFileSync(
        process.execPath,
        [path.join(extracted, 'extension', 'dist', 'cli.js'), 'caption', path.join(referenceImagesDir, 'cat.png'),
          '--model', tinyModelDir, '--precision', 'fp32', '--store', store, '--offline', '--max-new-tokens', '5', '--json'],
        { cwd: extracted, encoding: 'utf8', env: { ...process.env, NODE_PATH: '' } },
      );
      const record = JSON.parse(out.trim().split('\n').at(-1)!);
      assert.equal(typeof record.text, 'string');
      assert.ok(record.text.length > 0);
      assert.equal(record.precision, 'fp32');
    } finally {
      fs.rmSync(store, { recursive: true, force: true });
    }
  });
});
