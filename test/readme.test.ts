// The README shows commands and code that must keep working; these checks tie it to the files it quotes.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { it } from 'node:test';
import { parseCli } from '../server/src/cli/args';
import { checkAlts } from '../server/src/features/alt-text/rules';
import { PROJECT_SETTING_KEYS, validateSettings } from '../server/src/protocol/settings';
import { findImageElements } from '../server/src/features/images/find-images';
import { repoRoot } from './helpers/paths';

const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');

it('shows the Neovim module the end-to-end test loads, verbatim', () => {
  const lua = fs.readFileSync(path.join(repoRoot, 'test/e2e/nvim/blip2-lsp.lua'), 'utf8');
  assert.ok(readme.includes('```lua\n' + lua + '```'), 'README.md does not contain test/e2e/nvim/blip2-lsp.lua as is');
});

it('starts with the set-up command and the test command', () => {
  const firstBlock = /```bash\n([\s\S]*?)```/.exec(readme)![1].trim().split('\n');
  assert.match(firstBlock[0], /^npm ci && npm run build && node dist\/cli\.js caption /);
  assert.equal(firstBlock[1], 'npm test');
});

it('links images that exist, each with alt text', () => {
  // Our own finder: it knows that images inside code spans are not images.
  const images = findImageElements(readme, 'markdown');
  assert.ok(images.length >= 2);
  for (const image of images) {
    assert.ok(fs.existsSync(path.join(repoRoot, image.destination)), image.destination);
    assert.deepEqual(checkAlts([image]), [], image.destination);
  }
});

it('shows the nvim-lspconfig and eglot recipes the end-to-end tests run, verbatim', () => {
  const lspconfig = fs.readFileSync(path.join(repoRoot, 'test/e2e/nvim/lspconfig-init.lua'), 'utf8');
  assert.ok(readme.includes('```lua\n' + lspconfig + '```'), 'README.md does not contain test/e2e/nvim/lspconfig-init.lua as is');
  const eglot = fs.readFileSync(path.join(repoRoot, 'test/e2e/emacs/blip2-eglot.el'), 'utf8');
  assert.ok(readme.includes('```elisp\n' + eglot + '```'), 'README.md does not contain test/e2e/emacs/blip2-eglot.el as is');
});

it('gives a .blip2.json example that the settings module accepts without a problem', () => {
  const example = /### Project settings: `\.blip2\.json`[\s\S]*?```json\n([\s\S]*?)```/.exec(readme);
  assert.ok(example, 'no .blip2.json example');
  const { settings, problems } = validateSettings([{ value: JSON.parse(example[1]), strict: true, allowed: PROJECT_SETTING_KEYS, source: '.blip2.json' }]);
  assert.deepEqual(problems, []);
  assert.equal(settings.altText.rules['missing-alt'], 'error');
});

it('shows check and fix commands the CLI accepts, and a workflow that uploads check\'s SARIF', () => {
  const block = /## Alt text in CI[\s\S]*?```bash\n([\s\S]*?)```/.exec(readme)![1];
  const commands = block.trim().split('\n').map((line) => line.replace(/\s+#.*$/, '').replace(/\s*>.*$/, '').trim());
  assert.ok(commands.length >= 4);
  for (const command of commands) {
    const [node, cli, ...args] = command.split(/\s+/);
    assert.deepEqual([node, cli], ['node', 'dist/cli.js'], command);
    assert.ok(['check', 'fix'].includes(parseCli(args).command), command);
  }
  const workflow = /```yaml\n([\s\S]*?)```/.exec(readme)![1];
  assert.match(workflow, /^on: pull_request$/m);
  assert.match(workflow, /run: node \.blip2\/dist\/cli\.js check --format sarif > alt-text\.sarif/);
  assert.match(workflow, /if: always\(\)\n\s+uses: github\/codeql-action\/upload-sarif@v3\n\s+with:\n\s+sarif_file: alt-text\.sarif/);
  assert.match(workflow, /security-events: write/);
});
