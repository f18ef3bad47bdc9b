// The extension's bundle loads on its own: every dependency it needs is inside it (the VSIX ships no node_modules
// for them), so a package whose build esbuild cannot follow fails here rather than at activation in VS Code.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import Module from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { it } from 'node:test';
import { repoRoot } from '../helpers/paths';

it('the bundled client loads with nothing but vscode from outside, and exports activate', async () => {
  const config = (await import(pathToFileURL(path.join(repoRoot, 'esbuild.config.mjs')).href)) as { common: object; entries: { entryPoints: string[]; outfile: string }[] };
  const esbuild = await import('esbuild');
  const entry = config.entries.find((e) => e.outfile === 'dist/extension.js')!;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-bundle-'));
  try {
    const outfile = path.join(dir, 'extension.js');
    await esbuild.build({ ...config.common, entryPoints: entry.entryPoints.map((e) => path.join(repoRoot, e)), outfile, sourcemap: false, logLevel: 'silent' });
    // Only `vscode` comes from outside the bundle; anything else it asks for is missing from the VSIX.
    const asked: string[] = [];
    const load = (Module as unknown as { _load: (request: string, ...rest: unknown[]) => unknown })._load;
    (Module as unknown as { _load: typeof load })._load = function (request: string, ...rest: unknown[]) {
      if (request === 'vscode') return new Proxy({}, { get: () => new Proxy(function () {}, { get: () => () => ({}) }) });
      if (request !== outfile && !request.startsWith('node:') && !Module.isBuiltin(request)) asked.push(request);
      return load.call(this, request, ...rest);
    };
    try {
      const extension = (await import(pathToFileURL(outfile).href)) as { activate?: unknown; default?: { activate?: unknown } };
      assert.equal(typeof (extension.activate ?? extension.default?.activate), 'function');
    } finally {
      (Module as unknown as { _load: typeof load })._load = load;
    }
    assert.deepEqual(asked, []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
