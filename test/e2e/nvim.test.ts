// Neovim as a second real client: its built-in LSP client (Debian's 0.7, headless) runs the server over stdio
// through test/e2e/nvim/blip2-lsp.lua, the README's snippet, unchanged; drive.lua records what it saw.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { e2eTools, referenceImagesDir, repoRoot, tinyModelDir } from './lib/env';
import { EngineOracle, type Expected } from './lib/expected';

const DOC = ['# Notes', '', '![](images/astronaut.png)', '', '![A cat](images/cat.png)', ''].join('\n');
const HOVER = { line: 4, character: DOC.split('\n')[4].indexOf('cat.png') + 2 };
const ACTION_LINE = 2;

interface NvimResult {
  hover?: string;
  diagnostics?: { code: string; source: string; message: string }[];
  actions?: string[];
  fixedLine?: string;
  errors: string[];
}

/** Markdown backslash escapes removed: the hover escapes model text that markdown could read as markup. */
const unescape = (text: string) => text.replace(/\\(.)/g, '$1');

describe('Neovim 0.7 built-in LSP client', { timeout: 5 * 60_000 }, () => {
  let root: string;
  let result: NvimResult;
  const expected = new Map<string, Expected>();

  before(async () => {
    const { nvim } = e2eTools();
    // Under `npm run test:e2e` the packaging step has just built the bundles; run alone, build them now.
    const server = path.join(repoRoot, 'dist', 'server.js');
    if (!process.env.BLIP2_E2E_VSIX || !fs.existsSync(server)) execFileSync(process.execPath, ['esbuild.config.mjs'], { cwd: repoRoot, stdio: 'inherit' });

    const oracle = await EngineOracle.open();
    try {
      for (const image of ['astronaut.png', 'cat.png']) expected.set(image, await oracle.caption(path.join(referenceImagesDir, image)));
    } finally {
      await oracle.dispose();
    }

    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-nvim-'));
    const workspace = path.join(root, 'workspace');
    fs.mkdirSync(path.join(workspace, 'images'), { recursive: true });
    for (const image of ['astronaut.png', 'cat.png']) fs.copyFileSync(path.join(referenceImagesDir, image), path.join(workspace, 'images', image));
    fs.writeFileSync(path.join(workspace, 'doc.md'), DOC);
    const out = path.join(root, 'result.json');
    const xdg = path.join(root, 'xdg');
    execFileSync(nvim, ['--headless', '--clean', '-c', `luafile ${path.join(__dirname, 'nvim', 'drive.lua')}`], {
      cwd: workspace,
      timeout: 180_000,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: {
        ...process.env,
        XDG_CONFIG_HOME: path.join(xdg, 'config'),
        XDG_DATA_HOME: path.join(xdg, 'data'),
        XDG_STATE_HOME: path.join(xdg, 'state'),
        XDG_CACHE_HOME: path.join(xdg, 'cache'),
        BLIP2_NVIM_OUT: out,
        BLIP2_NODE: process.execPath,
        BLIP2_SERVER: server,
        BLIP2_MODEL: tinyModelDir,
        BLIP2_STORE: path.join(root, 'store'),
        BLIP2_DOC: path.join(workspace, 'doc.md'),
        BLIP2_HOVER_LINE: String(HOVER.line),
        BLIP2_HOVER_CHAR: String(HOVER.character),
        BLIP2_ACTION_LINE: String(ACTION_LINE),
      },
    });
    result = JSON.parse(fs.readFileSync(out, 'utf8'));
    result.errors = Object.values(result.errors ?? {});
    fs.mkdirSync(path.join(repoRoot, 'test-results'), { recursive: true });
    fs.writeFileSync(path.join(repoRoot, 'test-results', 'nvim-result.json'), JSON.stringify(result, null, 2));
  });

  after(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('runs without errors in the Lua script', () => {
    assert.deepEqual(result.errors, []);
  });

  it('the hover on an image link carries the caption the engine gives', () => {
    assert.ok(result.hover, 'no hover');
    assert.ok(unescape(result.hover).includes(expected.get('cat.png')!.text), `hover: ${result.hover}`);
  });

  it('the missing alt text is diagnosed and "Generate alt text with BLIP-2" is offered for it', () => {
    assert.ok(result.diagnostics?.some((d) => d.code === 'missing-alt'), JSON.stringify(result.diagnostics));
    assert.ok(result.actions?.includes('Generate alt text with BLIP-2'), JSON.stringify(result.actions));
  });

  it('resolving that action writes the caption as the alt text', () => {
    const m = /^!\[(.*)\]\(images\/astronaut\.png\)$/.exec(result.fixedLine ?? '');
    assert.ok(m, `line is: ${result.fixedLine}`);
    assert.equal(unescape(m[1]), expected.get('astronaut.png')!.text);
  });
});
