// The first run of the packaged extension in a real VS Code (code-server, headless Chromium) on a machine with no
// model: opening a markdown file with an image brings the set-up offer as a toast a person sees (not only in the
// notification centre) and, on first install, the walkthrough; the set-up picker shows no internal names.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser } from 'playwright-core';
import { CodeServer } from './lib/code-server';
import { e2eTools, referenceImagesDir, resultsDir } from './lib/env';
import { packagedVsix } from './lib/vsix';
import { closeCodeServer, openInCodeServer, QUIET_WINDOW_SETTINGS, Steps, type Workbench } from './lib/workbench';

const outDir = path.join(resultsDir, 'e2e-first-run');

describe('BLIP-2 in VS Code, first run without a model', { timeout: 6 * 60_000 }, () => {
  let root: string;
  let server: CodeServer;
  let browser: Browser | undefined;
  let wb: Workbench;
  const steps = new Steps();
  const step = (name: string, body: () => Promise<void>) => steps.run(name, body);

  before(async () => {
    const tools = e2eTools();
    fs.rmSync(outDir, { recursive: true, force: true });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-first-run-'));
    const workspace = path.join(root, 'workspace');
    fs.mkdirSync(path.join(workspace, 'images'), { recursive: true });
    fs.copyFileSync(path.join(referenceImagesDir, 'cat.png'), path.join(workspace, 'images', 'cat.png'));
    fs.writeFileSync(path.join(workspace, 'doc.md'), '# Notes\n\n![](images/cat.png)\n');
    server = new CodeServer({
      tools,
      root: path.join(root, 'code-server'),
      // A machine that has never seen the model: empty Hugging Face cache and model store, nothing downloadable.
      env: { HF_HOME: path.join(root, 'hf'), BLIP2_HOME: path.join(root, 'store'), HF_HUB_OFFLINE: '1' },
      // Walkthroughs on install are left on, as they are for a new user.
      userSettings: { ...QUIET_WINDOW_SETTINGS },
    });
    ({ browser, wb } = await openInCodeServer(server, tools, packagedVsix(), workspace, outDir));
    steps.workbench = wb;
  });

  after(async () => {
    try {
      await closeCodeServer(browser, server, path.join(outDir, 'logs'), steps.failed);
    } finally {
      if (root) fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('opening a markdown file brings the set-up offer as a toast, with the download named and sized', () =>
    step('offer', async () => {
      await wb.openFile('doc.md');
      const toast = wb.notification(/BLIP-2 needs a model/);
      await toast.first().waitFor({ state: 'visible', timeout: 60_000 });
      await wb.screenshot('offer-toast');
      const text = await toast.first().innerText();
      assert.match(text, /Download blip2-opt-2\.7b \(about 15 GB\)/);
      assert.match(text, /Choose Local Folder/);
      assert.doesNotMatch(text, /noModel|unloaded|\(now:/);
    }));

  it('and, the first time after install, the walkthrough beside the document', () =>
    step('walkthrough', async () => {
      await wb.page.getByText('Get Started with BLIP-2').first().waitFor({ timeout: 60_000 });
      // The document stays open in its own group.
      await wb.page.locator('.tab[data-resource-name="doc.md"]').waitFor();
      await wb.screenshot('walkthrough');
      const toast = wb.notification(/BLIP-2 needs a model/).first();
      await toast.hover();
      await toast.locator('.codicon-notifications-clear, .codicon-close').first().click();
    }));

  it('"Set Up Model…" shows the choices under a title in words, not internal state names', () =>
    step('picker', async () => {
      await wb.runCommand('BLIP-2: Set Up Model…');
      const widget = wb.page.locator('.quick-input-widget');
      await widget.locator('.monaco-list-row').first().waitFor();
      await wb.screenshot('set-up-picker');
      const title = await widget.locator('.quick-input-title').innerText();
      assert.equal(title, 'Set Up the BLIP-2 Model (now: no model set up)');
      const rows = await widget.locator('.monaco-list-row').allInnerTexts();
      assert.ok(rows.some((r) => /Choose Local Folder/.test(r)), rows.join(' | '));
      await wb.page.keyboard.press('Escape');
    }));
});
