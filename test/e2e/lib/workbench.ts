// Driving VS Code's workbench (code-server, in headless Chromium) the way a person does: clicks, keys, menus.
// Every wait is for something on the page (a selector, a text), never for a fixed time.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type FrameLocator, type Locator, type Page } from 'playwright-core';
import type { CodeServer } from './code-server';
import type { E2eTools } from './env';

/** The flags measured to work with Debian's Chromium here (see docs/environment.md); playwright adds --headless. */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/** User settings for a quiet, predictable window: no welcome page, no AI chat side bar, no tips, no git scanning. */
export const QUIET_WINDOW_SETTINGS: Readonly<Record<string, unknown>> = {
  'workbench.startupEditor': 'none',
  'workbench.secondarySideBar.defaultVisibility': 'hidden',
  'chat.disableAIFeatures': true,
  'workbench.tips.enabled': false,
  'extensions.ignoreRecommendations': true,
  'git.enabled': false,
  'telemetry.telemetryLevel': 'off',
};

/** code-server started with `vsix` installed, and a Chromium page on `folder`; the caller closes the browser. */
export async function openInCodeServer(server: CodeServer, tools: E2eTools, vsix: string, folder: string, screenshotsDir: string): Promise<{ browser: Browser; wb: Workbench }> {
  await server.installExtension(vsix);
  const url = await server.start();
  const browser = await launchChromium(tools);
  const wb = new Workbench(await browser.newPage({ viewport: { width: 1400, height: 900 } }), screenshotsDir);
  await wb.open(url, folder);
  return { browser, wb };
}

/** Closes what `openInCodeServer` opened, keeping code-server's logs under `logsDir` when asked (a failed run). */
export async function closeCodeServer(browser: Browser | undefined, server: CodeServer | undefined, logsDir: string, keepLogs: boolean): Promise<void> {
  try {
    await browser?.close();
  } finally {
    if (keepLogs || process.env.BLIP2_E2E_KEEP_LOGS) server?.copyLogs(logsDir);
    await server?.stop();
  }
}

export async function launchChromium(tools: E2eTools): Promise<Browser> {
  // Playwright gives each launch a fresh temporary profile (user-data-dir) and removes it on close.
  return chromium.launch({ executablePath: tools.chromium, headless: true, args: CHROMIUM_ARGS });
}

/** Spaces, line breaks and control characters removed: how model text compares with what a page renders. */
export function squash(text: string): string {
  return text.replace(/[\s\u0000-\u001f\u007f-\u009f]+/g, '');
}

/** The steps of an end-to-end test: a step that fails leaves a screenshot of that moment and marks the run failed. */
export class Steps {
  failed = false;
  workbench: Workbench | undefined;

  async run(name: string, body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (e) {
      this.failed = true;
      await this.workbench?.screenshot(`${name}-FAILED`).catch(() => undefined);
      throw e;
    }
  }
}

export class Workbench {
  private shot = 0;

  constructor(
    readonly page: Page,
    private readonly screenshotsDir: string,
  ) {
    fs.mkdirSync(screenshotsDir, { recursive: true });
  }

  /** Opens `folder` and waits until the explorer shows it. */
  async open(baseUrl: string, folder: string): Promise<void> {
    await this.page.goto(`${baseUrl}/?folder=${encodeURIComponent(folder)}`);
    await this.page.locator('.monaco-workbench').waitFor({ timeout: 60_000 });
    await this.page.locator('.explorer-folders-view .monaco-list-row').first().waitFor({ timeout: 60_000 });
  }

  /** A numbered PNG of the whole window under the screenshots folder; returns its path. */
  async screenshot(name: string): Promise<string> {
    const file = path.join(this.screenshotsDir, `${String(++this.shot).padStart(2, '0')}-${name}.png`);
    // Let fade-ins and other finite animations finish (spinners run forever and are left alone).
    await this.page
      .evaluate(
        `Promise.all(document.getAnimations()
          .filter((a) => a.effect && a.effect.getComputedTiming().endTime !== Infinity)
          .map((a) => a.finished.catch(() => undefined)))`,
      )
      .catch(() => undefined);
    await this.page.screenshot({ path: file });
    return file;
  }

  // ---- explorer ----

  /** The explorer row of a file or folder, by its path relative to the workspace root (parents expanded). */
  async explorerItem(relativePath: string): Promise<Locator> {
    const parts = relativePath.split('/');
    for (let i = 0; i < parts.length - 1; i++) {
      const folder = this.explorerRow(parts[i]);
      await folder.waitFor();
      if ((await folder.getAttribute('aria-expanded')) !== 'true') await folder.click();
      await this.page.locator(`.explorer-folders-view .monaco-list-row[aria-expanded="true"][aria-label="${parts[i]}"]`).waitFor();
    }
    const row = this.explorerRow(parts.at(-1)!);
    await row.waitFor();
    return row;
  }

  private explorerRow(name: string): Locator {
    return this.page.locator(`.explorer-folders-view .monaco-list-row[aria-label="${name}"]`);
  }

  /** Opens a text file from the explorer and waits for its editor to have focus. */
  async openFile(relativePath: string): Promise<Locator> {
    const row = await this.explorerItem(relativePath);
    await row.click();
    const group = this.page.locator('.editor-group-container.active');
    await group.locator(`.tab.active[data-resource-name="${path.basename(relativePath)}"]`).waitFor();
    const editor = group.locator('.editor-instance .monaco-editor').first();
    await editor.locator('.view-lines').waitFor();
    return editor;
  }

  /** Right-clicks a file in the explorer and picks `item` from its context menu. */
  async explorerContextMenu(relativePath: string, item: string): Promise<void> {
    const row = await this.explorerItem(relativePath);
    await row.click({ button: 'right' });
    await this.pickMenuItem(item);
  }

  /**
   * Picks an item of the open context menu. A click right after the menu opens can be swallowed (the menu
   * ignores the mouse until it settles), so: point at the item, wait until the menu has focused it, press Enter.
   */
  async pickMenuItem(item: string): Promise<void> {
    const entry = this.page.getByRole('menuitem', { name: item, exact: true });
    await entry.waitFor();
    await entry.hover();
    await this.page.locator('.monaco-menu .action-item.focused', { has: entry }).waitFor();
    await this.page.keyboard.press('Enter');
    await entry.waitFor({ state: 'hidden' });
  }

  // ---- commands ----

  /** Runs a command from the palette by its full title ("BLIP-2: Caption Image"). */
  async runCommand(title: string): Promise<void> {
    await this.page.keyboard.press('F1');
    const input = this.page.locator('.quick-input-widget .quick-input-box input');
    await input.waitFor();
    await input.fill(`>${title}`);
    const row = this.page.locator('.quick-input-widget .monaco-list-row', { hasText: title }).first();
    await row.waitFor();
    await row.click();
  }

  // ---- editor ----

  /**
   * Hovers the middle of `text` in the editor's rendered lines until the editor hover satisfies `accept` (a
   * caption may take a moment: the hover then says so, and a person hovers again). Returns the hover.
   */
  async hoverUntil(editor: Locator, text: string, accept: (hover: Locator) => Promise<boolean>, timeoutMs = 60_000): Promise<Locator> {
    const hover = this.page.locator('.monaco-hover:not(.hidden)').filter({ has: this.page.locator('.monaco-hover-content') }).first();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.moveMouseTo(editor, text);
      // No hover at all while no provider is registered yet (the extension still activating): try again.
      const shown = await hover.waitFor({ timeout: 5_000 }).then(() => true, () => false);
      // The hover fills in as each provider answers: look again until it is accepted.
      if (shown && (await poll(() => accept(hover), 10_000))) return hover;
      if (Date.now() > deadline) {
        throw new Error(`the hover never showed what was expected; last: ${shown ? await hover.innerText().catch(() => '(gone)') : '(no hover)'}`);
      }
      // Move away so the hover closes, then hover again (what a person does).
      await this.page.mouse.move(0, 0);
      await this.page.keyboard.press('Escape');
      await hover.waitFor({ state: 'hidden', timeout: 15_000 });
    }
  }

  /**
   * Moves the mouse onto the middle of `text` in a rendered line (monospace: by character offset), once that
   * point is inside the editor (lines re-render and scroll while the editor settles).
   */
  private async moveMouseTo(editor: Locator, text: string): Promise<void> {
    const line = editor.locator('.view-line > span', { hasText: text }).first();
    await line.waitFor();
    let point: { x: number; y: number; charWidth: number } | undefined;
    const found = await poll(async () => {
      const [box, area, content] = [await line.boundingBox(), await editor.boundingBox(), await line.innerText()];
      const at = content.indexOf(text);
      if (!box || !area || at < 0) return false;
      const charWidth = box.width / content.length;
      point = { x: box.x + charWidth * (at + text.length / 2), y: box.y + box.height / 2, charWidth };
      return point.x > area.x && point.x < area.x + area.width - 100;
    }, 10_000);
    if (!found || !point) throw new Error(`"${text}" is not on screen in the editor`);
    // Enter the editor, then move within the word: the hover controller reacts to mouse moves.
    await this.page.mouse.move(point.x - point.charWidth, point.y);
    await this.page.mouse.move(point.x, point.y, { steps: 2 });
  }

  // ---- panels and chrome ----

  /** The rows of the Problems view, opened. */
  async problems(): Promise<Locator> {
    await this.runCommand('View: Focus Problems');
    const rows = this.page.locator('.markers-panel .monaco-list-row');
    await this.page.locator('.markers-panel').waitFor();
    return rows;
  }

  /** Notification toasts containing `text` (or any, without). */
  notification(text?: string | RegExp): Locator {
    const toasts = this.page.locator('.notifications-toasts .notification-toast');
    return text === undefined ? toasts : toasts.filter({ hasText: text });
  }

  /** The status bar item whose accessible label matches. */
  statusBarItem(label: string | RegExp): Locator {
    return this.page.locator('.part.statusbar .statusbar-item').filter({ has: this.page.getByRole('button', { name: label }) }).or(
      this.page.locator('.part.statusbar .statusbar-item').getByRole('button', { name: label }),
    ).first();
  }

  /** The content frame of the webview panel titled `title` (VS Code nests it: iframe.webview > #active-frame). */
  webview(title: string): FrameLocator {
    void title;
    return this.page.frameLocator('iframe.webview.ready').last().frameLocator('iframe#active-frame');
  }
}

/** Checks `condition` every 100 ms until it holds (true) or `timeoutMs` passes (false). */
export async function poll(condition: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition().catch(() => false)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}
