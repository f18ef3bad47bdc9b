// Bundles the extension client, the language server, its inference, session, checkpoint-reading and image-parsing workers
// and the blip2 CLI.
// Native addons (onnxruntime-node, sharp, koffi) stay external: they ship as node_modules for one platform.
import * as esbuild from 'esbuild';
import { pathToFileURL } from 'node:url';

const watch = process.argv.includes('--watch');
const production = process.argv.includes('--production');

export const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: !production,
  minify: production,
  // tsx is only resolved when the server runs from source (startWorkerThread's fallback), never from a bundle.
  external: ['vscode', 'onnxruntime-node', 'onnxruntime-common', 'sharp', 'koffi', 'tsx'],
  logLevel: 'warning',
  // jsonc-parser's main build is UMD, whose relative requires esbuild cannot follow; its ES module build bundles.
  alias: { 'jsonc-parser': 'jsonc-parser/lib/esm/main.js' },
  // Some ESM-only dependencies read import.meta.url; in a CommonJS bundle it is the file's own URL.
  define: { 'import.meta.url': 'importMetaUrl' },
  banner: { js: "const importMetaUrl = require('url').pathToFileURL(__filename).href;" },
};

export const entries = [
  { entryPoints: ['client/src/extension.ts'], outfile: 'dist/extension.js' },
  { entryPoints: ['server/src/server.ts'], outfile: 'dist/server.js' },
  // Beside server.js, where the inference host and the image parser look for them.
  { entryPoints: ['server/src/inference/inference-worker.ts'], outfile: 'dist/worker.js' },
  { entryPoints: ['server/src/features/images/parse-worker.ts'], outfile: 'dist/parse-worker.js' },
  // The vision encoder's own thread (engine/runtime/session-thread.ts).
  { entryPoints: ['server/src/engine/runtime/session-worker.ts'], outfile: 'dist/session-worker.js' },
  // The checkpoint reader's thread (engine/checkpoint/tensor-stream.ts): downloads or reads and hashes while converting.
  { entryPoints: ['server/src/engine/checkpoint/stream-worker.ts'], outfile: 'dist/stream-worker.js' },
  { entryPoints: ['server/src/cli/blip2.ts'], outfile: 'dist/cli.js', banner: { js: '#!/usr/bin/env node\n' + common.banner.js } },
];

// Builds only when run (`node esbuild.config.mjs`), so tests can import the entry list.
if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const contexts = await Promise.all(entries.map((e) => esbuild.context({ ...common, ...e, banner: e.banner ?? common.banner })));
  if (watch) {
    await Promise.all(contexts.map((c) => c.watch()));
  } else {
    await Promise.all(contexts.map((c) => c.rebuild()));
    await Promise.all(contexts.map((c) => c.dispose()));
  }
}
