// Neovim as a real client: its built-in LSP client (Debian's 0.7, headless) runs the server over stdio,
// configured as docs/editors.md says, once with its module (test/e2e/nvim/blip2-lsp.lua) and once with its
// nvim-lspconfig recipe (test/e2e/nvim/lspconfig-init.lua, run by nvim-lspconfig v0.1.6); drive.lua hovers, picks
// the quick fix from the code-action menu and records what Neovim showed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { e2eTools, referenceImagesDir, repoRoot, serverBundle, tinyModelDir } from './lib/env';
import { expectedCaptions, type Expected } from './lib/expected';

const DOC = ['# Notes', '', '![](images/astronaut.png)', '', '![A cat](images/cat.png)', ''].join('\n');
const HOVER = { line: 4, character: DOC.split('\n')[4].indexOf('cat.png') + 2 };
const ACTION_LINE = 2;

interface NvimResult {
  hover?: string;
  diagnostics?: { code: string; source: string; message: string; severity: number }[];
  menu: string[];
  fixedLine?: string;
  notifications: { message: string; level: number }[];
  messages: string;
  errors: string[];
}

/** Markdown backslash escapes removed: the hover escapes model text that markdown could read as markup. */
const unescape = (text: string) => text.replace(/\\(.)/g, '$1');
/** vim.log.levels.WARN */
const WARN = 3;
/** vim.diagnostic.severity */
const SEVERITY = { ERROR: 1, WARN: 2 };

describe('Neovim 0.7 built-in LSP client, configured as docs/editors.md says', { timeout: 6 * 60_000 }, () => {
  let root: string;
  let server: string;
  let expected: Map<string, Expected>;

  before(async () => {
    server = serverBundle();
    expected = await expectedCaptions(['astronaut.png', 'cat.png']);
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-nvim-'));
  });

  after(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  function drive(setup: 'module' | 'lspconfig'): NvimResult {
    const { nvim } = e2eTools();
    const run = path.join(root, setup);
    const workspace = path.join(run, 'workspace');
    fs.mkdirSync(path.join(workspace, 'images'), { recursive: true });
    fs.mkdirSync(path.join(workspace, '.git'));
    for (const image of ['astronaut.png', 'cat.png']) fs.copyFileSync(path.join(referenceImagesDir, image), path.join(workspace, 'images', image));
    const doc = path.join(workspace, 'doc.md');
    fs.writeFileSync(doc, DOC);
    const out = path.join(run, 'result.json');
    const xdg = path.join(run, 'xdg');
    execFileSync(nvim, ['--headless', '--clean', '-c', `luafile ${path.join(__dirname, 'nvim', 'drive.lua')}`], {
      cwd: workspace,
      timeout: 240_000,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: {
        ...process.env,
        XDG_CONFIG_HOME: path.join(xdg, 'config'),
        XDG_DATA_HOME: path.join(xdg, 'data'),
        XDG_STATE_HOME: path.join(xdg, 'state'),
        XDG_CACHE_HOME: path.join(xdg, 'cache'),
        // The lspconfig recipe names no store: the server's default folder, kept inside this test.
        BLIP2_HOME: path.join(run, 'store'),
        BLIP2_NVIM_OUT: out,
        BLIP2_NVIM_SETUP: setup,
        BLIP2_NODE: process.execPath,
        BLIP2_SERVER: server,
        BLIP2_MODEL: tinyModelDir,
        BLIP2_STORE: path.join(run, 'store'),
        BLIP2_DOC: doc,
        BLIP2_HOVER_LINE: String(HOVER.line),
        BLIP2_HOVER_CHAR: String(HOVER.character),
        BLIP2_ACTION_LINE: String(ACTION_LINE),
      },
    });
    const result = JSON.parse(fs.readFileSync(out, 'utf8')) as NvimResult;
    for (const key of ['errors', 'notifications', 'menu'] as const) result[key] = Object.values(result[key] ?? {}) as never;
    fs.mkdirSync(path.join(repoRoot, 'test-results'), { recursive: true });
    fs.writeFileSync(path.join(repoRoot, 'test-results', `nvim-${setup}-result.json`), JSON.stringify(result, null, 2));
    // What was saved, read back from disk.
    result.fixedLine = fs.readFileSync(doc, 'utf8').split('\n')[ACTION_LINE];
    return result;
  }

  for (const setup of ['module', 'lspconfig'] as const) {
    describe(setup === 'module' ? 'with the module docs/editors.md shows (vim.lsp.start_client)' : 'with the nvim-lspconfig recipe docs/editors.md shows', () => {
      let result: NvimResult;
      before(() => {
        result = drive(setup);
      });

      it('shows no error, no warning and no prompt', () => {
        assert.deepEqual(result.errors, []);
        assert.deepEqual(result.notifications.filter((n) => n.level >= WARN), []);
        assert.doesNotMatch(result.messages, /error|-32602|unknown command|Request Actions/i, result.messages);
      });

      it('the hover float carries the caption the engine gives', () => {
        assert.ok(result.hover, 'no hover');
        assert.ok(unescape(result.hover).includes(expected.get('cat.png')!.text), `hover: ${result.hover}`);
        assert.doesNotMatch(result.hover, /command:|Set Up Model/);
      });

      it('diagnoses the missing alt text with the configured severity and offers the quick fix in the menu', () => {
        const missing = result.diagnostics?.find((d) => d.code === 'missing-alt');
        assert.ok(missing, JSON.stringify(result.diagnostics));
        // The recipe's settings, which lspconfig pushes with workspace/didChangeConfiguration, make it an error.
        assert.equal(missing.severity, setup === 'lspconfig' ? SEVERITY.ERROR : SEVERITY.WARN);
        assert.ok(result.menu.includes('Generate alt text with BLIP-2'), JSON.stringify(result.menu));
      });

      it('picking it writes the caption as the alt text, saved to disk', () => {
        const m = /^!\[(.*)\]\(images\/astronaut\.png\)$/.exec(result.fixedLine ?? '');
        assert.ok(m, `line is: ${result.fixedLine}`);
        assert.equal(unescape(m[1]), expected.get('astronaut.png')!.text);
      });
    });
  }
});
