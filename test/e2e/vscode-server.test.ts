// The packaged extension in a real VS Code (code-server) with `blip2.server.url` naming a real `blip2 serve` on
// loopback (the tiny model at fp32, an API key required): a workspace that names another server is ignored with a
// warning, the key is set through "BLIP-2: Set Server API Key…", hovers, the quick fix and the image chat show the
// texts the engine gives locally, the status bar names the server, and a server that goes away is one sentence
// with "Use the Local Model". The local model is a folder that does not exist, so nothing can come from it.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { isolatedEnv } from '../helpers/cli';
import { startServe, type RunningServe } from '../helpers/serve';
import { CodeServer } from './lib/code-server';
import { e2eTools, referenceImagesDir, resultsDir } from './lib/env';
import { EngineOracle, type Expected } from './lib/expected';
import { packagedVsix } from './lib/vsix';
import { closeCodeServer, openInCodeServer, poll, QUIET_WINDOW_SETTINGS, squash, Steps, type Workbench } from './lib/workbench';

const outDir = path.join(resultsDir, 'e2e-server');
const IMAGES = ['astronaut.png', 'rocket.jpg', 'cat.png'];
const DOC = ['# Holiday photos', '', '![](images/astronaut.png)', '', '![image](images/rocket.jpg)', ''].join('\n');
const KEY = 'e2e-server-key-0b7d61';
const QUESTION = 'what is in the picture?';

describe('BLIP-2 in VS Code with a BLIP-2 server (blip2 serve on loopback)', { timeout: 10 * 60_000 }, () => {
  let root: string;
  let workspace: string;
  let server: CodeServer;
  let serve: RunningServe;
  let iso: ReturnType<typeof isolatedEnv>;
  let browser: Browser | undefined;
  let wb: Workbench;
  let oracle: EngineOracle;
  const expected = new Map<string, Expected>();
  const steps = new Steps();
  const step = (name: string, body: () => Promise<void>) => steps.run(name, body);

  before(async () => {
    try {
      const tools = e2eTools();
      fs.rmSync(outDir, { recursive: true, force: true });
      fs.mkdirSync(outDir, { recursive: true });
      root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-e2e-server-'));
      const vsix = packagedVsix();
      oracle = await EngineOracle.open();
      for (const image of IMAGES) expected.set(image, await oracle.caption(path.join(referenceImagesDir, image)));

      iso = isolatedEnv();
      serve = await startServe({ ...iso.env, BLIP2_API_KEY: KEY });

      workspace = path.join(root, 'workspace');
      fs.mkdirSync(path.join(workspace, 'images'), { recursive: true });
      fs.mkdirSync(path.join(workspace, '.vscode'));
      for (const image of IMAGES) fs.copyFileSync(path.join(referenceImagesDir, image), path.join(workspace, 'images', image));
      fs.writeFileSync(path.join(workspace, 'doc.md'), DOC);
      // A repository asking for the images: ignored, with a warning.
      fs.writeFileSync(path.join(workspace, '.vscode', 'settings.json'), JSON.stringify({ 'blip2.server.url': 'http://127.0.0.1:9' }, null, 2));

      server = new CodeServer({
        tools,
        root: path.join(root, 'code-server'),
        userSettings: {
          ...QUIET_WINDOW_SETTINGS,
          'workbench.welcomePage.walkthroughs.openOnInstall': false,
          'editor.hover.delay': 300,
          '[markdown]': { 'editor.wordWrap': 'off' },
          'blip2.server.url': serve.url,
          'blip2.model': path.join(root, 'no-such-model'),
          'blip2.offline': true,
          'blip2.modelStore': path.join(root, 'model-store'),
          'blip2.trace.server': 'messages',
        },
      });
      ({ browser, wb } = await openInCodeServer(server, tools, vsix, workspace, outDir));
      steps.workbench = wb;
    } catch (e) {
      steps.failed = true;
      throw e;
    }
  });

  after(async () => {
    try {
      await closeCodeServer(browser, server, path.join(outDir, 'logs'), steps.failed);
    } finally {
      // Each let go whatever the one before it did.
      await serve?.stop().catch(() => undefined);
      await oracle?.dispose().catch(() => undefined);
      iso?.cleanup();
      if (root) fs.rmSync(root, { recursive: true, force: true });
    }
    assert.deepEqual(server?.processes() ?? [], [], 'code-server left processes behind');
  });

  it("warns that the workspace's server setting is ignored", () =>
    step('workspace-setting-ignored', async () => {
      const warning = wb.notification(/\.vscode\/settings\.json sets blip2\.server\.url; it is ignored/);
      await warning.first().waitFor({ timeout: 60_000 });
      await wb.screenshot('workspace-server-ignored');
    }));

  it('takes the API key through "Set Server API Key…" and shows the server and its model in the status bar', () =>
    step('api-key', async () => {
      await wb.runCommand('BLIP-2: Set Server API Key…');
      // The palette's own input gives way to the key's, which hides what is typed.
      const input = wb.page.locator('.quick-input-widget .quick-input-box input[type="password"]');
      await input.waitFor();
      await input.fill(KEY);
      await wb.page.keyboard.press('Enter');
      const host = new URL(serve.url).host;
      const item = wb.page.locator('.part.statusbar .statusbar-item', { hasText: `BLIP-2 ready · ${host}` });
      await item.waitFor({ timeout: 60_000 });
      await wb.screenshot('status-bar-server');
    }));

  it('hovering an image link shows the caption the engine gives, computed by the server', () =>
    step('hover', async () => {
      const editor = await wb.openFile('doc.md');
      const want = expected.get('astronaut.png')!.text;
      const hover = await wb.hoverUntil(editor, 'images/astronaut.png', async (h) => (await h.locator('strong').allInnerTexts()).some((t) => squash(t) === squash(want)));
      assert.ok((await hover.innerText()).includes(new URL(serve.url).host), 'the hover names the server');
      await wb.screenshot('hover-caption-server');
    }));

  it('the quick fix writes the caption the engine gives and offers its other beams', () =>
    step('quick-fix', async () => {
      const rows = await wb.problems();
      const placeholder = rows.filter({ hasText: /Ln 5|\[Ln 5/ }).filter({ hasText: 'BLIP-2' });
      await placeholder.first().waitFor({ timeout: 60_000 });
      await placeholder.first().click();
      const bulb = placeholder.first().locator('.codicon-lightbulb, .codicon-light-bulb, .codicon-lightbulb-autofix').first();
      await bulb.waitFor({ timeout: 30_000 });
      await bulb.click();
      await wb.pickMenuItem('Generate alt text with BLIP-2');
      const want = expected.get('rocket.jpg')!;
      if (want.alternatives.length) {
        const picker = wb.page.locator('.quick-input-widget', { hasText: 'other captions' });
        await picker.waitFor();
        assert.deepEqual((await picker.locator('.monaco-list-row').allInnerTexts()).map(squash), want.alternatives.map(squash));
        await wb.page.keyboard.press('Escape');
        await picker.waitFor({ state: 'hidden' });
      }
      const line = wb.page.locator('.view-line', { hasText: 'images/rocket.jpg' }).first();
      await poll(async () => squash(await line.innerText()).includes(squash(want.text)), 30_000);
      assert.ok(squash(await line.innerText()).includes(squash(want.text)), await line.innerText());
      await wb.screenshot('quick-fix-server');
    }));

  it('the image chat streams the answer the engine gives', () =>
    step('chat', async () => {
      await wb.runCommand('View: Hide Panel');
      await wb.explorerContextMenu('images/cat.png', 'Open Image Chat');
      const chat = wb.webview('Chat: cat.png');
      const question = chat.locator('#question');
      await question.waitFor({ timeout: 30_000 });
      const want = await oracle.answer(path.join(workspace, 'images', 'cat.png'), QUESTION);
      await question.fill(QUESTION);
      await chat.locator('#ask').click();
      const done = chat.locator('#conversation .turn:not(.pending):not(.failed)');
      await done.nth(0).waitFor({ timeout: 60_000 });
      assert.equal(squash(await done.nth(0).locator('.answer').innerText()), squash(want.text));
      await wb.screenshot('chat-server');
    }));

  it('a server that goes away: one sentence, "Use the Local Model", and then the local model is asked', () =>
    step('server-gone', async () => {
      await serve.stop();
      await wb.runCommand('View: Close All Editor Groups');
      await wb.explorerContextMenu('images/cat.png', 'Caption Image');
      const toast = wb.notification(/cannot be reached/);
      await toast.first().waitFor({ timeout: 60_000 });
      const message = await toast.first().locator('.notification-list-item-message').innerText();
      assert.match(message, new RegExp(`The BLIP-2 server at ${serve.url.replace(/\./g, '\\.')} cannot be reached`));
      assert.equal(await wb.notification(/cannot be reached/).count(), 1, 'one notification for the failure');
      await wb.screenshot('server-gone');
      await toast.first().getByRole('button', { name: 'Use the Local Model' }).click();
      // The user's setting is emptied (code-server's window is a remote one: VS Code writes the machine-scoped
      // setting into the machine's settings); the status is the local model's (which does not exist here).
      await wb.page.locator('.part.statusbar .statusbar-item', { hasText: /BLIP-2: no model|BLIP-2$/ }).first().waitFor({ timeout: 60_000 });
      const written = ['User', 'Machine'].map((scope) => path.join(server.userDataDir, scope, 'settings.json')).filter((f) => fs.existsSync(f)).map((f) => JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, unknown>);
      assert.ok(written.some((s) => s['blip2.server.url'] === ''), JSON.stringify(written));
      await wb.screenshot('local-model-again');
    }));
});
