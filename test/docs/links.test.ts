// Every link in the repository's documents leads somewhere: relative links to files that exist, anchors to headings
// that exist (by GitHub's rules), and the Marketplace page's absolute links to files of this repository. The user
// docs speak to users: no issue numbers.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { anchorsOf, linksOf, readDoc, repositoryDocs, type MarkdownDoc } from '../helpers/markdown';
import { repoRoot } from '../helpers/paths';

const docs = repositoryDocs();
const EXTERNAL = /^[a-z][a-z0-9+.-]*:/i;

/** Why `url`, relative to `doc`, leads nowhere; undefined when it resolves. */
function brokenTarget(doc: MarkdownDoc, url: string): string | undefined {
  const [pathPart, anchor] = url.split('#', 2) as [string, string | undefined];
  const target = pathPart === '' ? doc.file : path.posix.normalize(path.posix.join(path.posix.dirname(doc.file), decodeURI(pathPart)));
  if (target.startsWith('..')) return `${url} leaves the repository`;
  const full = path.join(repoRoot, target);
  if (!fs.existsSync(full)) return `${url}: ${target} does not exist`;
  if (anchor !== undefined && target.endsWith('.md') && !anchorsOf(readDoc(target)).has(anchor)) return `${url}: ${target} has no heading #${anchor}`;
  return undefined;
}

describe('links in the repository\'s documents', () => {
  it('reads the documents a reader follows', () => {
    assert.deepEqual(
      docs.map((d) => d.file).filter((f) => !f.startsWith('docs/')),
      ['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md'],
    );
    for (const f of ['architecture', 'cli', 'editors', 'performance', 'reliability']) assert.ok(docs.some((d) => d.file === `docs/${f}.md`), f);
  });

  for (const doc of docs) {
    it(`${doc.file}: every relative link and anchor resolves`, () => {
      const links = linksOf(doc).filter((l) => !EXTERNAL.test(l.url));
      const broken = links.map((l) => brokenTarget(doc, l.url) && `line ${l.line}: ${brokenTarget(doc, l.url)}`).filter(Boolean);
      assert.deepEqual(broken, []);
    });
  }

  it('finds a broken file link and a broken anchor (the check itself)', () => {
    const readme = readDoc('README.md');
    assert.equal(brokenTarget(readme, 'docs/cli.md#project-settings-blip2json'), undefined);
    assert.match(brokenTarget(readme, 'docs/nothing.md')!, /does not exist/);
    assert.match(brokenTarget(readme, 'docs/cli.md#no-such-heading')!, /has no heading/);
    assert.match(brokenTarget(readme, '#no-such-heading')!, /has no heading/);
  });

  it('user docs carry no issue numbers', () => {
    for (const doc of docs.filter((d) => d.file === 'README.md' || d.file.startsWith('docs/'))) {
      assert.doesNotMatch(doc.text, /issue [0-9]/i, doc.file);
    }
  });
});

describe('the Marketplace page (media/marketplace/README.md)', () => {
  const page = readDoc('media/marketplace/README.md');
  const manifest = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8'));
  const repository = String(manifest.repository?.url ?? manifest.repository).replace(/\.git$/, '');

  it('links only by absolute https addresses, each into this repository at a file or heading that exists', () => {
    const links = linksOf(page);
    assert.ok(links.length >= 5);
    assert.match(repository, /^https:\/\/github\.com\/[^/]+\/[^/]+$/);
    for (const { url, line, kind } of links) {
      assert.match(url, /^https:\/\//, `line ${line}: ${url}`);
      if (!url.startsWith(repository)) continue;
      const rest = url.slice(repository.length);
      const file = kind === 'image' ? /^\/raw\/HEAD\/(.+)$/.exec(rest)?.[1] : /^\/blob\/HEAD\/([^#]+)$/.exec(rest)?.[1];
      if (file) {
        assert.ok(fs.existsSync(path.join(repoRoot, file)), `line ${line}: ${file} does not exist`);
      } else {
        // The repository's front page is its README.
        assert.match(rest, /^(#.*)?$/, `line ${line}: ${url}`);
        if (rest) assert.equal(brokenTarget(readDoc('README.md'), rest), undefined, `line ${line}: ${url}`);
      }
    }
  });
});
