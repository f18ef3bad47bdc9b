// `blip2 fix` on the docs folder with the tiny checkpoint: the captions the engine itself gives end up as the alt
// text of exactly the images `check` flags, read back by the reference parsers (commonmark.js, htmlparser2);
// a rerun is served from the cache; --dry-run prints a diff that applies to the originals.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as commonmark from 'commonmark';
import { applyPatch, parsePatch } from 'diff';
import { parseDocument, DomUtils } from 'htmlparser2';
import { escapeAltText } from '../../server/src/features/alt-text/alt-edit';
import { isolatedEnv, runCli } from '../helpers/cli';
import { DOCS_SITE_IMAGES, docsSiteCopy } from '../helpers/docs-site';
import { engineCaptions } from '../helpers/engine-captions';
import { tinyCheckpointDir } from '../helpers/paths';

const GENERATION = { maxNewTokens: 12, numBeams: 1, alternatives: 0, noRepeatNgramSize: 3, repetitionPenalty: 1 };
const FLAGS = ['--precision', 'fp32', '--max-new-tokens', '12', '--num-beams', '1'];
const FIXED_FILES = ['README.md', 'guide/page.html', 'guide/setup.md', 'src/Hero.tsx'];

const md = (text: string) => escapeAltText(text, { kind: 'markdown' });
const attr = (text: string) => escapeAltText(text, { kind: 'attribute', quote: '"', before: '', after: '' });

/** Every image's alt text as commonmark.js reads the document. */
function commonmarkAlts(markdown: string): string[] {
  const walker = new commonmark.Parser().parse(markdown).walker();
  const alts: string[] = [];
  for (let event = walker.next(); event; event = walker.next()) {
    if (event.entering && event.node.type === 'image') {
      let alt = '';
      const inner = event.node.walker();
      for (let e = inner.next(); e; e = inner.next()) if (e.entering && e.node.literal) alt += e.node.literal;
      alts.push(alt);
    }
  }
  return alts;
}

describe('blip2 fix', { timeout: 300_000 }, () => {
  const iso = isolatedEnv();
  const root = path.dirname(iso.store);
  let site: string;
  let model: string;
  let caption: (image: string) => string;
  let fixed: Map<string, string>;
  let originals: Map<string, string>;

  before(async () => {
    site = docsSiteCopy(root);
    originals = new Map(FIXED_FILES.map((f) => [f, fs.readFileSync(path.join(site, f), 'utf8')]));
    // A copy of the checkpoint, so the cache test can take it away.
    model = path.join(root, 'model');
    fs.cpSync(tinyCheckpointDir, model, { recursive: true, filter: (src) => !src.includes(`${path.sep}reference`) });
    const captions = await engineCaptions(DOCS_SITE_IMAGES.map((i) => path.join(site, 'images', i)), GENERATION);
    caption = (image) => captions.get(path.join(site, 'images', image))!.text;
    for (const image of DOCS_SITE_IMAGES) assert.ok(caption(image).trim(), `the engine captions ${image}`);
  });
  after(() => iso.cleanup());

  function restore(): void {
    for (const [file, text] of originals) fs.writeFileSync(path.join(site, file), text);
  }

  it('writes the engine\'s caption into every flagged image, once per distinct image, and leaves the rest alone', async () => {
    const r = await runCli(['fix', '--model', model, ...FLAGS], iso.env, undefined, site);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /captioned 9 of 9 images/);
    assert.match(r.stderr, /wrote alt text for 9 images in 4 files/);
    fixed = new Map(FIXED_FILES.map((f) => [f, fs.readFileSync(path.join(site, f), 'utf8')]));

    const readme = fixed.get('README.md')!;
    assert.equal(
      readme,
      originals
        .get('README.md')!
        .replace('![](images/cat.png)', `![${md(caption('cat.png'))}](images/cat.png)`)
        .replace('![Screen Shot 2024-01-31 at 10.00.00][shot]', `![${md(caption('astronaut.png'))}][shot]`)
        .replace('![][coffee]', `![${md(caption('coffee.png'))}][coffee]`)
        .replace('![photo of a grey cat on a sofa]', `![${md(caption('cat.png'))}]`),
    );
    // The reference parser reads the captions back, the described image and the decorative one untouched.
    assert.deepEqual(commonmarkAlts(readme), [caption('cat.png'), caption('astronaut.png'), 'A rocket lifting off from its pad', caption('coffee.png'), caption('cat.png')].map((t) => t.replace(/\s+/g, ' ').trim()));
    assert.match(readme, /<img src="images\/horse-rgba\.png" alt="">/);
    assert.deepEqual(commonmarkAlts(fixed.get('guide/setup.md')!), [caption('coffee.png')]);

    const page = parseDocument(fixed.get('guide/page.html')!);
    assert.deepEqual(
      DomUtils.getElementsByTagName('img', page).map((img) => [img.attribs.src, img.attribs.alt]),
      [
        ['../images/astronaut.png', caption('astronaut.png')],
        ['../images/cat.png', ''],
        ['../images/rocket.jpg', caption('rocket.jpg')],
      ],
    );

    assert.equal(
      fixed.get('src/Hero.tsx'),
      originals
        .get('src/Hero.tsx')!
        .replace('<img src={hero} />', `<img alt="${attr(caption('horse-rgba.png'))}" src={hero} />`)
        .replace('alt="image"', `alt="${attr(caption('cat.png'))}"`),
    );
    // Ignored and skipped files are untouched.
    assert.equal(fs.readFileSync(path.join(site, 'build', 'out.md'), 'utf8'), '![](../images/cat.png)\n');
    assert.equal(fs.readFileSync(path.join(site, 'node_modules', 'pkg', 'README.md'), 'utf8'), '![](logo.png)\n');
    // One caption run per distinct image: five images, five cached answers.
    assert.equal(fs.readdirSync(path.join(iso.store, 'lsp-cache', 'answers')).length, DOCS_SITE_IMAGES.length);
  });

  it('serves a rerun from the cache: with the model gone it still writes the same captions', async () => {
    restore();
    fs.rmSync(model, { recursive: true, force: true });
    fs.rmSync(path.join(iso.store, 'local'), { recursive: true, force: true });
    const r = await runCli(['fix', '--model', model, ...FLAGS], iso.env, undefined, site);
    assert.equal(r.code, 0, r.stderr);
    for (const file of FIXED_FILES) assert.equal(fs.readFileSync(path.join(site, file), 'utf8'), fixed.get(file), file);
  });

  it('with --dry-run writes nothing and prints a unified diff that turns the files into what fix writes', async () => {
    restore();
    const r = await runCli(['fix', '--dry-run', '--model', model, ...FLAGS], iso.env, undefined, site);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /would write alt text for 9 images \(dry run: nothing written\)/);
    for (const file of FIXED_FILES) assert.equal(fs.readFileSync(path.join(site, file), 'utf8'), originals.get(file), `${file} untouched`);
    const patches = parsePatch(r.stdout);
    assert.deepEqual(patches.map((p) => p.newFileName), FIXED_FILES.map((f) => `b/${f}`));
    for (const patch of patches) {
      const file = patch.oldFileName!.replace(/^a\//, '');
      assert.equal(applyPatch(originals.get(file)!, patch), fixed.get(file), file);
    }
  });

  it('reports an image it cannot caption, writes the others, and exits 1', async () => {
    restore();
    fs.writeFileSync(path.join(site, 'guide', 'setup.md'), 'Setup\n\n![logo](../images/coffee.png)\n\n![](../images/missing.png)\n');
    const r = await runCli(['fix', '--model', model, ...FLAGS, 'guide'], iso.env, undefined, site);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^blip2: guide\/setup\.md: \.\.\/images\/missing\.png: The image file does not exist: .*missing\.png\.$/m);
    assert.equal(fs.readFileSync(path.join(site, 'guide', 'setup.md'), 'utf8'), `Setup\n\n![${md(caption('coffee.png'))}](../images/coffee.png)\n\n![](../images/missing.png)\n`);
  });

  it('refuses sampling options with a usage error (exit 2)', async () => {
    const r = await runCli(['fix', '--temperature', '0.7'], iso.env, undefined, site);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^blip2: fix does not take --temperature\./);
  });
});
