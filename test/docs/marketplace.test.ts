// The extension's Details page on the Marketplace (the VSIX's readme, packaged from media/marketplace/README.md; the
// end-to-end package test reads it inside the VSIX) and the manifest fields the Marketplace shows beside it.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { it } from 'node:test';
import { headings, readDoc, sectionOf } from '../helpers/markdown';
import { repoRoot } from '../helpers/paths';

const page = readDoc('media/marketplace/README.md');
const manifest = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8'));

it('opens with what the extension does, then its requirements, and shows no build commands', () => {
  const all = headings(page);
  assert.deepEqual(all[0], { depth: 1, text: manifest.displayName });
  const intro = page.text.slice(page.text.indexOf('\n'), page.text.indexOf('\n## ')).toLowerCase();
  for (const words of ['caption', 'alt text', 'your own machine']) assert.ok(intro.includes(words), words);
  assert.equal(all.find((h) => h.depth === 2)?.text, 'Requirements');
  assert.doesNotMatch(page.text, /\bnpm\b|```/);
});

it('states the same requirements as the README, word for word', () => {
  const readme = readDoc('README.md');
  assert.equal(sectionOf(page, 'Requirements'), sectionOf(readme, 'Requirements'));
  const requirements = sectionOf(page, 'Requirements');
  for (const what of ['Platform', 'Disk', 'Memory', 'Time', 'CPU']) assert.match(requirements, new RegExp(`\\*\\*${what}\\*\\*`), what);
});

it('has the manifest fields the Marketplace lists', () => {
  for (const field of ['displayName', 'description', 'qna', 'homepage']) assert.ok(typeof manifest[field] === 'string' && manifest[field].length > 5, field);
  assert.ok(manifest.description.length <= 200);
  assert.ok(manifest.keywords.length >= 5 && manifest.keywords.length <= 30, 'vsce takes at most 30 keywords');
  assert.ok(manifest.categories.length >= 1);
  assert.match(manifest.galleryBanner.color, /^#[0-9a-f]{6}$/i);
  assert.ok(['dark', 'light'].includes(manifest.galleryBanner.theme));
  const repository = manifest.repository.url.replace(/\.git$/, '');
  assert.match(repository, /^https:\/\/github\.com\//);
  assert.equal(manifest.bugs.url, `${repository}/issues`);
  assert.ok(manifest.homepage.startsWith(repository));
});
