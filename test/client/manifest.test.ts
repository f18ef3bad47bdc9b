import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { CHAT_VIEW_TYPE } from '../../client/src/chat-messages';
import { COMMANDS, LINK_ONLY_COMMANDS } from '../../client/src/command-ids';
import { IMAGE_EXTENSIONS } from '../../server/src/features/images/path-strings';
import { ClientCommands, HOVER_COMMANDS } from '../../server/src/protocol/messages';
import { clientSource, manifest, ROOT } from './manifest';

const contributed = manifest.contributes.commands.map((c) => c.command);
const registered: string[] = Object.values(COMMANDS);

describe('contributes.commands', () => {
  it('are all registered by the extension, and every palette command is contributed', () => {
    for (const command of contributed) assert.ok(registered.includes(command), `${command} is registered`);
    for (const command of registered) {
      if (!LINK_ONLY_COMMANDS.includes(command)) assert.ok(contributed.includes(command), `${command} is contributed`);
    }
  });

  it('have a handler each in commands.ts, registered through COMMANDS', () => {
    const source = clientSource('commands.ts');
    assert.match(source, /registerCommand\(COMMANDS\[key\], handlers\[key\]\)/);
    const table = source.slice(source.indexOf('const handlers: Record<CommandKey, Handler> = {'));
    for (const key of Object.keys(COMMANDS)) assert.match(table, new RegExp(`\\n\\s+${key}: `), `handler for ${key}`);
  });

  it('include every command the server links to, and hover links may run only those', () => {
    for (const command of Object.values(ClientCommands)) assert.ok(registered.includes(command), command);
    for (const command of HOVER_COMMANDS) assert.ok(registered.includes(command), command);
    assert.match(clientSource('client.ts'), /isTrusted: \{ enabledCommands: HOVER_COMMANDS \}/);
  });

  it('are in the BLIP-2 category, with the titles the issue names', () => {
    const titles = Object.fromEntries(manifest.contributes.commands.map((c) => [c.command, c.title]));
    for (const c of manifest.contributes.commands) assert.equal(c.category, 'BLIP-2', c.command);
    assert.equal(titles[COMMANDS.captionImage], 'Caption Image');
    assert.equal(titles[COMMANDS.askAboutImage], 'Ask About Image…');
    assert.equal(titles[COMMANDS.openImageChat], 'Open Image Chat');
    assert.equal(titles[COMMANDS.generateMissingAltTextInFile], 'Generate Missing Alt Text (File)');
    assert.equal(titles[COMMANDS.generateMissingAltTextInWorkspace], 'Generate Missing Alt Text (Workspace)');
    assert.equal(titles[COMMANDS.setUpModel], 'Set Up Model…');
    assert.equal(titles[COMMANDS.showModelStatus], 'Show Model Status');
    assert.equal(titles[COMMANDS.restartServer], 'Restart Server');
  });
});

describe('contributes.menus', () => {
  const items = Object.entries(manifest.contributes.menus).flatMap(([menu, entries]) => entries.map((entry) => ({ menu, ...entry })));

  it('name only contributed commands', () => {
    for (const item of items) assert.ok(contributed.includes(item.command), `${item.menu}: ${item.command}`);
  });

  it('put the image commands on image files in the explorer, for exactly the image extensions', () => {
    const explorer = manifest.contributes.menus['explorer/context'];
    for (const command of [COMMANDS.captionImage, COMMANDS.askAboutImage, COMMANDS.openImageChat]) {
      const item = explorer.find((i) => i.command === command);
      assert.ok(item?.when, `${command} in the explorer`);
      const match = /resourceExtname =~ \/(.+)\/(i?)$/.exec(item.when);
      assert.ok(match, item.when);
      const pattern = new RegExp(match[1], match[2]);
      for (const extension of IMAGE_EXTENSIONS) {
        assert.ok(pattern.test(`.${extension}`), `.${extension}`);
        assert.ok(pattern.test(`.${extension.toUpperCase()}`), `.${extension.toUpperCase()}`);
      }
      for (const other of ['.txt', '.md', '.pngx', '.svgz', 'png', '.jp']) assert.ok(!pattern.test(other), other);
    }
  });

  it("put them in the built-in image preview's title bar, with icons", () => {
    const title = manifest.contributes.menus['editor/title'];
    for (const command of [COMMANDS.captionImage, COMMANDS.openImageChat]) {
      const item = title.find((i) => i.command === command);
      assert.match(item?.when ?? '', /activeCustomEditorId == '?imagePreview\.previewEditor'?/);
      assert.match(item?.group ?? '', /^navigation/);
      assert.ok(manifest.contributes.commands.find((c) => c.command === command)?.icon, `${command} has an icon`);
    }
  });
});

describe('the rest of the manifest', () => {
  it('starts dist/extension.js, which esbuild builds from client/src/extension.ts', async () => {
    assert.equal(path.normalize(manifest.main), path.normalize('./dist/extension.js'));
    const { entries } = (await import(pathToFileURL(path.join(ROOT, 'esbuild.config.mjs')).href)) as {
      entries: { entryPoints: string[]; outfile: string }[];
    };
    const client = entries.find((e) => e.entryPoints.includes('client/src/extension.ts'));
    assert.equal(path.normalize(client?.outfile ?? ''), path.normalize(manifest.main));
  });

  it('activates for the image chat panel, to restore it after a reload', () => {
    assert.ok(manifest.activationEvents.includes(`onWebviewPanel:${CHAT_VIEW_TYPE}`));
    assert.ok(manifest.activationEvents.includes('onLanguage:markdown'));
  });

  it('asks for the VS Code that vscode-languageclient needs', () => {
    const client = JSON.parse(readFileSync(path.join(ROOT, 'node_modules/vscode-languageclient/package.json'), 'utf8'));
    const minor = (range: string) => Number(/1\.(\d+)/.exec(range)?.[1]);
    assert.ok(minor(manifest.engines.vscode) >= minor(client.engines.vscode), `${manifest.engines.vscode} vs ${client.engines.vscode}`);
  });

  it('has a 128x128 PNG icon and a license', () => {
    const png = readFileSync(path.join(ROOT, manifest.icon));
    assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
    assert.equal(png.readUInt32BE(16), 128);
    assert.equal(png.readUInt32BE(20), 128);
    assert.match(readFileSync(path.join(ROOT, 'LICENSE'), 'utf8'), /MIT License/);
  });

  it('has a walkthrough whose media exist and whose command links name real commands', () => {
    const [walkthrough] = manifest.contributes.walkthroughs;
    assert.ok(walkthrough.steps.length >= 3);
    for (const step of walkthrough.steps) {
      const media = step.media.markdown ?? step.media.image;
      assert.ok(media && existsSync(path.join(ROOT, media)), `${step.id}: ${media}`);
      for (const [, command] of step.description.matchAll(/\(command:([\w.]+)/g)) {
        assert.ok(contributed.includes(command) || command.startsWith('workbench.'), `${step.id} links ${command}`);
      }
      for (const event of step.completionEvents ?? []) {
        const command = /^onCommand:(.+)$/.exec(event)?.[1];
        if (command) assert.ok(contributed.includes(command) || command.startsWith('workbench.'), `${step.id} completes on ${command}`);
      }
    }
  });
});
