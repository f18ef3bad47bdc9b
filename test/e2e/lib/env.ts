// Where the end-to-end tools are: the same paths scripts/e2e-setup.sh installs to (it must run first).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '..', '..', '..');
export const tinyModelDir = path.join(repoRoot, 'test', 'fixtures', 'tiny-blip2');
export const referenceImagesDir = path.join(tinyModelDir, 'reference', 'images');
/** Screenshots, logs and other evidence; gitignored. */
export const resultsDir = path.join(repoRoot, 'test-results');

const cacheDir = process.env.BLIP2_E2E_CACHE ?? path.join(os.homedir(), '.cache', 'blip2-e2e');
const nodeVersion = process.env.BLIP2_E2E_NODE ?? '24.21.0';
const codeServerVersion = process.env.BLIP2_E2E_CODE_SERVER ?? '4.139.1';
const arch = process.arch === 'arm64' ? 'arm64' : 'x64';

export interface E2eTools {
  /** Node 24: code-server needs it, and the extension host (hence the language server) runs on it. */
  node: string;
  /** code-server's entry script, run with `node`. */
  codeServer: string;
  chromium: string;
  nvim: string;
  /** Emacs (Debian's emacs-nox) with eglot and markdown-mode from Debian's elpa packages. */
  emacs: string;
}

function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const file = path.join(dir, name);
    if (dir && fs.existsSync(file)) return file;
  }
  return undefined;
}

/** The installed tools, or an error that says to run the set-up script. */
export function e2eTools(): E2eTools {
  const tools = {
    node: path.join(cacheDir, `node-${nodeVersion}`, 'node_modules', `node-linux-${arch}`, 'bin', 'node'),
    codeServer: path.join(cacheDir, `code-server-${codeServerVersion}`, 'node_modules', 'code-server', 'out', 'node', 'entry.js'),
    chromium: process.env.BLIP2_E2E_CHROMIUM ?? which('chromium') ?? '/usr/bin/chromium',
    nvim: process.env.BLIP2_E2E_NVIM ?? which('nvim') ?? '/usr/bin/nvim',
    emacs: process.env.BLIP2_E2E_EMACS ?? which('emacs') ?? '/usr/bin/emacs',
  };
  const missing = Object.entries(tools).filter(([, file]) => !fs.existsSync(file));
  if (missing.length) {
    throw new Error(`End-to-end tools missing (${missing.map(([k, f]) => `${k}: ${f}`).join(', ')}); run scripts/e2e-setup.sh first.`);
  }
  return tools;
}

/**
 * The language server's bundle, dist/server.js, for the editors that start it themselves: under `npm run test:e2e`
 * the packaging step has just built it; a test run alone builds it now.
 */
export function serverBundle(): string {
  const server = path.join(repoRoot, 'dist', 'server.js');
  if (!process.env.BLIP2_E2E_VSIX || !fs.existsSync(server)) execFileSync(process.execPath, ['esbuild.config.mjs'], { cwd: repoRoot, stdio: 'inherit' });
  return server;
}
