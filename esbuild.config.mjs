// Bundles the extension client, the language server, its inference worker and the blip2 CLI.
// Native addons (onnxruntime-node, sharp) stay external: they ship as node_modules for one platform.
import * as esbuild from 'esbuild';

const watch = process.argv.includes('--watch');
const production = process.argv.includes('--production');

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: !production,
  minify: production,
  external: ['vscode', 'onnxruntime-node', 'onnxruntime-common', 'sharp'],
  logLevel: 'warning',
  // Some ESM-only dependencies read import.meta.url; in a CommonJS bundle it is the file's own URL.
  define: { 'import.meta.url': 'importMetaUrl' },
  banner: { js: "const importMetaUrl = require('url').pathToFileURL(__filename).href;" },
};

const entries = [
  { entryPoints: ['server/src/cli/blip2.ts'], outfile: 'dist/cli.js', banner: { js: '#!/usr/bin/env node\n' + common.banner.js } },
];
for (const [src, out] of [
  ['client/src/extension.ts', 'dist/extension.js'],
  ['server/src/server.ts', 'dist/server.js'],
  ['server/src/inference/inference-worker.ts', 'dist/worker.js'],
]) {
  try {
    (await import('node:fs')).accessSync(src);
    entries.push({ entryPoints: [src], outfile: out });
  } catch {
    // Not written yet.
  }
}

const contexts = await Promise.all(entries.map((e) => esbuild.context({ ...common, ...e, banner: e.banner ?? common.banner })));
if (watch) {
  await Promise.all(contexts.map((c) => c.watch()));
} else {
  await Promise.all(contexts.map((c) => c.rebuild()));
  await Promise.all(contexts.map((c) => c.dispose()));
}
