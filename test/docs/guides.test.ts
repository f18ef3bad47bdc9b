// docs/editors.md and docs/cli.md show recipes, commands and settings files that must keep working: the editor
// recipes are the files the end-to-end tests run, the commands are parsed by the CLI's own parser, and the
// .blip2.json example goes through the settings validator.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { parseCli, USAGE } from '../../server/src/cli/args';
import { PROJECT_SETTING_KEYS, validateSettings } from '../../server/src/protocol/settings';
import { codeBlock, readDoc, sectionOf } from '../helpers/markdown';
import { repoRoot } from '../helpers/paths';

const recipe = (file: string) => fs.readFileSync(path.join(repoRoot, file), 'utf8');

describe('docs/editors.md', () => {
  const editors = readDoc('docs/editors.md').text;

  it('shows the Neovim module the end-to-end test loads, verbatim', () => {
    assert.ok(editors.includes('```lua\n' + recipe('test/e2e/nvim/blip2-lsp.lua') + '```'), 'docs/editors.md does not contain test/e2e/nvim/blip2-lsp.lua as is');
  });

  it('shows the nvim-lspconfig and eglot recipes the end-to-end tests run, verbatim', () => {
    assert.ok(editors.includes('```lua\n' + recipe('test/e2e/nvim/lspconfig-init.lua') + '```'), 'docs/editors.md does not contain test/e2e/nvim/lspconfig-init.lua as is');
    assert.ok(editors.includes('```elisp\n' + recipe('test/e2e/emacs/blip2-eglot.el') + '```'), 'docs/editors.md does not contain test/e2e/emacs/blip2-eglot.el as is');
  });
});

describe('docs/cli.md', () => {
  const cli = readDoc('docs/cli.md');

  /** The commands of a ```bash block, without comments and redirections. */
  const commandsOf = (block: string) => block.trim().split('\n').map((line) => line.replace(/\s+#.*$/, '').replace(/\s*>.*$/, '').trim());
  const parsed = (command: string) => {
    const words = command.match(/"[^"]*"|\S+/g)!.map((w) => w.replace(/^"|"$/g, ''));
    assert.deepEqual(words.slice(0, 2), ['node', 'dist/cli.js'], command);
    return parseCli(words.slice(2));
  };

  it('names every command and option the CLI takes', () => {
    const commands = [...USAGE.matchAll(/^ {2}blip2 (\w+)/gm)].map((m) => m[1]);
    assert.ok(commands.length >= 7);
    const table = sectionOf(cli, 'Commands');
    for (const command of commands) assert.match(table, new RegExp(`\\| \`${command}[ \`]`), command);
    const options = [...new Set([...USAGE.matchAll(/--[a-z][a-z-]+/g)].map((m) => m[0]))];
    assert.ok(options.length >= 20);
    for (const option of [...options, '--block-size']) assert.match(cli.text, new RegExp(`[\` ]${option}(?![\\w-])`), option);
  });

  it('shows caption, ask, chat, convert and verify commands the CLI accepts', () => {
    const commands = commandsOf(codeBlock(sectionOf(cli, 'Captioning, questions and chat'), 'bash'));
    assert.deepEqual(new Set(commands.map((c) => parsed(c).command)), new Set(['caption', 'ask', 'chat', 'convert', 'verify']));
  });

  it('gives a .blip2.json example that the settings module accepts without a problem', () => {
    const example = JSON.parse(codeBlock(sectionOf(cli, 'Project settings: .blip2.json'), 'json'));
    const { settings, problems } = validateSettings([{ value: example, strict: true, allowed: PROJECT_SETTING_KEYS, source: '.blip2.json' }]);
    assert.deepEqual(problems, []);
    assert.equal(settings.altText.rules['missing-alt'], 'error');
  });

  it('shows check and fix commands the CLI accepts, and a workflow that uploads check\'s SARIF', () => {
    const commands = commandsOf(codeBlock(sectionOf(cli, 'Alt text in CI: blip2 check and blip2 fix'), 'bash'));
    assert.ok(commands.length >= 4);
    for (const command of commands) assert.ok(['check', 'fix'].includes(parsed(command).command), command);
    const workflow = codeBlock(sectionOf(cli, 'A GitHub Actions workflow'), 'yaml');
    assert.match(workflow, /^on: pull_request$/m);
    assert.match(workflow, /run: node \.blip2\/dist\/cli\.js check --format sarif > alt-text\.sarif/);
    assert.match(workflow, /if: always\(\)\n\s+uses: github\/codeql-action\/upload-sarif@v3\n\s+with:\n\s+sarif_file: alt-text\.sarif/);
    assert.match(workflow, /security-events: write/);
  });
});

it('README.md shows command-line examples the CLI accepts', () => {
  const readme = readDoc('README.md');
  const block = codeBlock(sectionOf(readme, 'Command line and CI'), 'bash');
  const commands = block.trim().split('\n').map((line) => line.replace(/\s+#.*$/, '').replace(/\s*>.*$/, '').trim());
  assert.deepEqual(commands.map((c) => parseCli(c.split(/\s+/).slice(2)).command), ['caption', 'check', 'fix']);
});
