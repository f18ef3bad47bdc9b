// The packaged extension in a real VS Code (code-server), driven through headless Chromium as a person would:
// hover, Problems view and quick fix, the explorer's context menu, the image chat, the status bar, and the
// language server killed mid-session. Screenshots of each step go to test-results/e2e/; on failure, the
// code-server and extension-host logs too.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { CodeServer } from './lib/code-server';
import { e2eTools, referenceImagesDir, repoRoot, resultsDir, tinyModelDir } from './lib/env';
import { EngineOracle, type Expected } from './lib/expected';
import { packagedVsix } from './lib/vsix';
import { closeCodeServer, openInCodeServer, QUIET_WINDOW_SETTINGS, squash, Steps, type Workbench } from './lib/workbench';

const outDir = path.join(resultsDir, 'e2e');
const IMAGES = ['astronaut.png', 'rocket.jpg', 'cat.png', 'horse-rgba.png'];
/** The markdown the tests open: an image without alt text, one with a placeholder, one described. */
const DOC = [
  '# Holiday photos',
  '',
  '![](images/astronaut.png)',
  '',
  '![image](images/rocket.jpg)',
  '',
  '![A grey cat sitting on a sofa](images/cat.png)',
  '',
].join('\n');
const QUESTION = 'what is in the picture?';
const FOLLOW_UP = 'what color is it?';

/**
 * The blip2 settings, split as VS Code applies them: `machine`-scoped ones count only in user settings, the
 * rest go in the workspace's .vscode/settings.json (as a user of this extension would write them).
 */
function splitSettings(settings: Record<string, unknown>): { user: Record<string, unknown>; workspace: Record<string, unknown> } {
  const manifest = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8'));
  const configuration = [manifest.contributes?.configuration ?? []].flat();
  const scopes = new Map<string, string | undefined>();
  for (const block of configuration) for (const [key, schema] of Object.entries<{ scope?: string }>(block.properties ?? {})) scopes.set(key, schema.scope);
  const user: Record<string, unknown> = {};
  const workspace: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(settings)) {
    const scope = scopes.get(key);
    (scope === 'machine' || scope === 'application' ? user : workspace)[key] = value;
  }
  return { user, workspace };
}

describe('BLIP-2 in VS Code (code-server + headless Chromium)', { timeout: 10 * 60_000 }, () => {
  let root: string;
  let workspace: string;
  let server: CodeServer;
  let browser: Browser | undefined;
  let wb: Workbench;
  let oracle: EngineOracle;
  const expected = new Map<string, Expected>();
  const steps = new Steps();
  const step = (name: string, body: () => Promise<void>) => steps.run(name, body);

  before(async () => {
    try {
      await setUp();
    } catch (e) {
      steps.failed = true;
      throw e;
    }
  });

  async function setUp(): Promise<void> {
    const tools = e2eTools();
    fs.rmSync(outDir, { recursive: true, force: true });
    fs.mkdirSync(outDir, { recursive: true });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-e2e-'));
    const vsix = packagedVsix();

    oracle = await EngineOracle.open();
    for (const image of IMAGES) expected.set(image, await oracle.caption(path.join(referenceImagesDir, image)));

    workspace = path.join(root, 'workspace');
    fs.mkdirSync(path.join(workspace, 'images'), { recursive: true });
    fs.mkdirSync(path.join(workspace, '.vscode'));
    for (const image of IMAGES) fs.copyFileSync(path.join(referenceImagesDir, image), path.join(workspace, 'images', image));
    fs.writeFileSync(path.join(workspace, 'doc.md'), DOC);
    const blip2 = splitSettings({
      'blip2.model': tinyModelDir,
      'blip2.precision': 'fp32',
      'blip2.modelStore': path.join(root, 'model-store'),
    });
    fs.writeFileSync(path.join(workspace, '.vscode', 'settings.json'), JSON.stringify(blip2.workspace, null, 2));

    server = new CodeServer({
      tools,
      root: path.join(root, 'code-server'),
      userSettings: {
        ...blip2.user,
        ...QUIET_WINDOW_SETTINGS,
        // The first run has its own test (vscode-first-run.test.ts); this window starts without the walkthrough.
        'workbench.welcomePage.walkthroughs.openOnInstall': false,
        'editor.hover.delay': 300,
        // Lines stay whole, so the text a test hovers is on one rendered line.
        '[markdown]': { 'editor.wordWrap': 'off' },
        'blip2.trace.server': 'messages',
      },
    });
    ({ browser, wb } = await openInCodeServer(server, tools, vsix, workspace, outDir));
    steps.workbench = wb;
  }

  after(async () => {
    try {
      await closeCodeServer(browser, server, path.join(outDir, 'logs'), steps.failed);
    } finally {
      await oracle?.dispose();
      if (root) fs.rmSync(root, { recursive: true, force: true });
    }
    assert.deepEqual(server?.processes() ?? [], [], 'code-server left processes behind');
  });

  it('hovering an image link shows the caption the engine gives', () =>
    step('hover', async () => {
      const editor = await wb.openFile('doc.md');
      const want = expected.get('astronaut.png')!.text;
      const hover = await wb.hoverUntil(editor, 'images/astronaut.png', async (h) =>
        (await h.locator('strong').allInnerTexts()).some((t) => squash(t) === squash(want)),
      );
      assert.match(await hover.innerText(), /fp32/);
      await wb.screenshot('hover-caption');
    }));

  it('the status bar shows the model as ready', () =>
    step('status-bar', async () => {
      const item = wb.page.locator('.part.statusbar .statusbar-item', { hasText: 'BLIP-2 ready' });
      await item.waitFor({ timeout: 60_000 });
      await wb.page.mouse.move(0, 0);
      await wb.screenshot('status-bar-ready');
    }));

  it('lists the alt-text diagnostics in Problems; the quick fix writes the caption into the file', () =>
    step('quick-fix', async () => {
      const rows = await wb.problems();
      const missing = rows.filter({ hasText: 'missing-alt' });
      const placeholder = rows.filter({ hasText: /Ln 5|\[Ln 5/ }).filter({ hasText: 'BLIP-2' });
      await missing.first().waitFor({ timeout: 60_000 });
      await placeholder.first().waitFor({ timeout: 60_000 });
      // The described image (line 7) has none.
      assert.equal(await rows.filter({ hasText: /Ln 7\b/ }).count(), 0);
      await wb.screenshot('problems');

      // The placeholder's row shows a light bulb once its quick fixes are known; it opens them in a menu.
      await placeholder.first().click();
      const bulb = placeholder.first().locator('.codicon-lightbulb, .codicon-light-bulb, .codicon-lightbulb-autofix').first();
      await bulb.waitFor({ timeout: 30_000 });
      await bulb.click();
      await wb.page.getByRole('menuitem', { name: 'Generate alt text with BLIP-2' }).waitFor();
      await wb.screenshot('quick-fix-menu');
      await wb.pickMenuItem('Generate alt text with BLIP-2');

      // The other beams are offered right after; keep the best one.
      const want = expected.get('rocket.jpg')!;
      const docFile = path.join(workspace, 'doc.md');
      if (want.alternatives.length) {
        const picker = wb.page.locator('.quick-input-widget', { hasText: 'other captions' });
        await picker.waitFor();
        const offered = await picker.locator('.monaco-list-row').allInnerTexts();
        assert.deepEqual(offered.map(squash), want.alternatives.map(squash));
        await wb.page.keyboard.press('Escape');
        await picker.waitFor({ state: 'hidden' });
      }
      await wb.page.keyboard.press('Control+s');
      // Saving may truncate before it writes: wait for the whole new text, not for any change.
      const rocketLine = /^!\[(.*)\]\(images\/rocket\.jpg\)$/;
      const saved = await waitForFile(docFile, (text) => text.endsWith('\n') && rocketLine.exec(text.split('\n')[4] ?? '')?.[1] !== 'image');
      const line = saved.split('\n')[4];
      const m = rocketLine.exec(line);
      assert.ok(m, `line 5 is now: ${line}`);
      assert.equal(m[1].replace(/\\(.)/g, '$1'), want.text);
      // Nothing else in the file changed.
      assert.deepEqual(saved.split('\n').filter((_, i) => i !== 4), DOC.split('\n').filter((_, i) => i !== 4));
      await wb.screenshot('quick-fix-applied');
    }));

  it('"Caption Image" from the explorer context menu shows the caption', () =>
    step('caption-command', async () => {
      await wb.explorerContextMenu('images/horse-rgba.png', 'Caption Image');
      const want = expected.get('horse-rgba.png')!.text;
      const toast = wb.notification('Caption of horse-rgba.png');
      await toast.first().waitFor({ timeout: 60_000 });
      const message = await toast.first().locator('.notification-list-item-message').innerText();
      assert.ok(squash(message).includes(squash(want)), `notification: ${message}`);
      await wb.notification('captioning horse-rgba.png').waitFor({ state: 'hidden' });
      await wb.screenshot('caption-command');
      await toast.first().hover();
      await toast.first().locator('.codicon-notifications-clear, .codicon-close').first().click();
    }));

  it('the image chat answers a question and a follow-up about the image', () =>
    step('chat', async () => {
      // Room for the conversation: the Problems panel from the earlier step goes away.
      await wb.runCommand('View: Hide Panel');
      await wb.page.locator('.part.panel').waitFor({ state: 'hidden' });
      await wb.explorerContextMenu('images/cat.png', 'Open Image Chat');
      const chat = wb.webview('Chat: cat.png');
      const question = chat.locator('#question');
      await question.waitFor({ timeout: 30_000 });
      const image = path.join(workspace, 'images', 'cat.png');

      const first = await oracle.answer(image, QUESTION);
      await question.fill(QUESTION);
      await chat.locator('#ask').click();
      const done = chat.locator('#conversation .turn:not(.pending):not(.failed)');
      await done.nth(0).waitFor({ timeout: 60_000 });
      assert.equal(squash(await done.nth(0).locator('.answer').innerText()), squash(first.text));
      await wb.screenshot('chat-first-answer');

      const second = await oracle.answer(image, FOLLOW_UP, [{ question: QUESTION, answer: first.text }]);
      await question.fill(FOLLOW_UP);
      await chat.locator('#ask').click();
      await done.nth(1).waitFor({ timeout: 60_000 });
      assert.equal(squash(await done.nth(1).locator('.answer').innerText()), squash(second.text));
      assert.equal(await chat.locator('#conversation .turn.failed').count(), 0);
      await wb.screenshot('chat-follow-up');
    }));

  it('killing the language server: the extension restarts it and the next hover works', () =>
    step('server-restart', async () => {
      const serverProcess = () => server.processes().filter((p) => p.cmdline.includes(path.join('dist', 'server.js')));
      const [old] = serverProcess();
      assert.ok(old, 'no language server process found in code-server\'s process group');
      // It runs from the installed VSIX, not from the repository.
      assert.ok(old.cmdline.includes(server.extensionsDir), old.cmdline);
      process.kill(old.pid, 'SIGKILL');
      // A new server process appears (the client restarts it)...
      const deadline = Date.now() + 60_000;
      while (!serverProcess().some((p) => p.pid !== old.pid)) {
        if (Date.now() > deadline) throw new Error('the language server was not restarted within 60 s');
        await new Promise((r) => setTimeout(r, 200));
      }
      // ...and answers: a hover on another image shows its caption.
      await wb.runCommand('View: Close All Editor Groups');
      const editor = await wb.openFile('doc.md');
      // Back to the start of the file (the quick fix left the view scrolled to the end of a long line).
      await editor.locator('.view-line').first().click();
      await wb.page.keyboard.press('Control+Home');
      const want = expected.get('cat.png')!.text;
      await wb.hoverUntil(editor, 'images/cat.png', async (h) =>
        (await h.locator('strong').allInnerTexts()).some((t) => squash(t) === squash(want)),
      );
      await wb.screenshot('hover-after-restart');
    }));
});

/** Resolves with the file's text once `accept` holds for it (checked on every change, and polled as a fallback). */
async function waitForFile(file: string, accept: (text: string) => boolean, timeoutMs = 30_000): Promise<string> {
  const read = () => fs.readFileSync(file, 'utf8');
  if (accept(read())) return read();
  return await new Promise<string>((resolve, reject) => {
    const check = () => {
      const text = read();
      if (accept(text)) {
        cleanup();
        resolve(text);
      }
    };
    const watcher = fs.watch(path.dirname(file), check);
    const poll = setInterval(check, 250);
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${file} did not change as expected within ${timeoutMs} ms; it is:\n${read()}`));
    }, timeoutMs);
    const cleanup = () => {
      watcher.close();
      clearInterval(poll);
      clearTimeout(timer);
    };
  });
}
