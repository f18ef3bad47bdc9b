// Emacs as a real client: Debian's emacs-nox with eglot 1.9 (no codeAction/resolve, workspace/configuration
// answered from eglot-workspace-configuration), configured with the recipe in docs/editors.md (test/e2e/emacs/blip2-eglot.el);
// drive.el shows the hover, runs M-x eglot-code-actions and picks the quick fix, and records what Emacs showed.
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

interface EmacsResult {
  hover?: string;
  diagnostics?: { type: string; text: string }[];
  menu: string[];
  prompts: string[];
  fixedLine?: string;
  messages: string;
  errors: string[];
}

const unescape = (text: string) => text.replace(/\\(.)/g, '$1');

describe('Emacs with eglot 1.9, configured as docs/editors.md says', { timeout: 5 * 60_000 }, () => {
  let root: string;
  let result: EmacsResult;
  let doc: string;
  let expected: Map<string, Expected>;

  before(async () => {
    const { emacs } = e2eTools();
    const server = serverBundle();
    expected = await expectedCaptions(['astronaut.png', 'cat.png']);

    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-emacs-'));
    const workspace = path.join(root, 'workspace');
    fs.mkdirSync(path.join(workspace, 'images'), { recursive: true });
    // A project root for eglot (project.el finds it by its version control).
    fs.mkdirSync(path.join(workspace, '.git'));
    for (const image of ['astronaut.png', 'cat.png']) fs.copyFileSync(path.join(referenceImagesDir, image), path.join(workspace, 'images', image));
    doc = path.join(workspace, 'doc.md');
    fs.writeFileSync(doc, DOC);
    const out = path.join(root, 'result.json');
    execFileSync(emacs, ['--batch', '-l', path.join(__dirname, 'emacs', 'drive.el')], {
      cwd: workspace,
      timeout: 240_000,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: {
        ...process.env,
        HOME: path.join(root, 'home'),
        BLIP2_HOME: path.join(root, 'store'),
        BLIP2_EMACS_OUT: out,
        BLIP2_NODE: process.execPath,
        BLIP2_SERVER: server,
        BLIP2_MODEL: tinyModelDir,
        BLIP2_DOC: doc,
        BLIP2_HOVER_LINE: String(HOVER.line),
        BLIP2_HOVER_CHAR: String(HOVER.character),
        BLIP2_ACTION_LINE: String(ACTION_LINE),
      },
    });
    result = JSON.parse(fs.readFileSync(out, 'utf8'));
    fs.mkdirSync(path.join(repoRoot, 'test-results'), { recursive: true });
    fs.writeFileSync(path.join(repoRoot, 'test-results', 'emacs-result.json'), JSON.stringify(result, null, 2));
  });

  after(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('shows no error: no failed request, no "No code actions here", no server error message', () => {
    assert.deepEqual(result.errors, []);
    assert.doesNotMatch(result.messages, /error|No code actions|unknown command|type=1\)/i, result.messages);
  });

  it('the hover carries the caption the engine gives, without VS Code-only links', () => {
    assert.ok(result.hover, 'no hover');
    assert.ok(unescape(result.hover).includes(expected.get('cat.png')!.text), `hover: ${result.hover}`);
    assert.doesNotMatch(result.hover, /command:|Set Up Model/);
  });

  it('lists the missing alt text in flymake and offers the quick fix in the code-action menu', () => {
    assert.ok(result.diagnostics?.some((d) => /no alt text/.test(d.text)), JSON.stringify(result.diagnostics));
    assert.ok(result.menu.includes('Generate alt text with BLIP-2'), JSON.stringify(result.menu));
  });

  it('picking it writes the caption as the alt text, after eglot asks to apply the server\'s edit; saved to disk', () => {
    assert.ok(result.prompts.some((p) => /Server wants to edit/.test(p)), JSON.stringify(result.prompts));
    const saved = fs.readFileSync(doc, 'utf8').split('\n')[ACTION_LINE];
    assert.equal(saved, result.fixedLine);
    const m = /^!\[(.*)\]\(images\/astronaut\.png\)$/.exec(saved);
    assert.ok(m, `line is: ${saved}`);
    assert.equal(unescape(m[1]), expected.get('astronaut.png')!.text);
  });
});
