import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fixturesDir, referenceDir } from './paths';

export const DOCS_SITE_FIXTURE = path.join(fixturesDir, 'docs-site');
/** The images the docs site names, from the tiny checkpoint's reference images. */
export const DOCS_SITE_IMAGES = ['astronaut.png', 'cat.png', 'coffee.png', 'horse-rgba.png', 'rocket.jpg'];

/**
 * A copy of test/fixtures/docs-site as a repository of its own (a `.git` folder, so its `.gitignore` files
 * count from its root), with the images and a `node_modules` folder that must never be walked.
 */
export function docsSiteCopy(root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-docs-'))): string {
  const site = path.join(root, 'site');
  fs.cpSync(DOCS_SITE_FIXTURE, site, { recursive: true });
  fs.rmSync(path.join(site, 'expected-check.json'));
  fs.mkdirSync(path.join(site, '.git'));
  fs.mkdirSync(path.join(site, 'images'));
  for (const image of DOCS_SITE_IMAGES) fs.copyFileSync(path.join(referenceDir, 'images', image), path.join(site, 'images', image));
  fs.mkdirSync(path.join(site, 'node_modules', 'pkg'), { recursive: true });
  fs.writeFileSync(path.join(site, 'node_modules', 'pkg', 'README.md'), '![](logo.png)\n');
  return site;
}
