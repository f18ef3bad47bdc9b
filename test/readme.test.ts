// The README shows commands and code that must keep working; these checks tie it to the files it quotes.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { it } from 'node:test';
import { checkAlts } from '../server/src/features/alt-text/rules';
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
