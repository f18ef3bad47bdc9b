// The cases where image finding once differed from the reference parsers, each held against them:
// commonmark.js for markdown (with htmlparser2 for its raw HTML), htmlparser2 for HTML, TypeScript's JSX transform.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { altEditFor, applyEdits } from '../../server/src/features/alt-text/alt-edit';
import { checkAlts } from '../../server/src/features/alt-text/rules';
import { findImageElements, type ImageElement } from '../../server/src/features/images/find-images';
import { commonmarkImages, htmlparser2Images, reactAltProp, type ReferenceImage } from '../helpers/reference-parsers';

function ours(markdown: string): ReferenceImage[] {
  return findImageElements(markdown, 'markdown').map((image) => ({ kind: image.kind === 'html' ? 'html' : 'markdown', url: image.url, alt: image.alt }));
}

describe('markdown images as commonmark.js renders them', () => {
  const documents: Record<string, string> = {
    'an <img> written in an image\'s alt text is text': '![<img src="x.png">](y.png)\n',
    'an <img> inside a link is an image': '[<img src="x.png" alt="x">](page.html)\n',
    'a backslash hard line break in alt text': '![a\\\nb](x.png)\n',
    'a trailing-spaces hard line break in alt text': '![a  \nb](x.png)\n',
    'CRLF in alt text': '![a\r\nb](x.png)\r\n\r\n![c](d.png)\r\n',
    'a soft break in a reference image': '![first\nsecond][r]\n\n[r]: z.png\n',
    'markup in alt text': '![*a* `c` &amp; [link](u)](x.png)\n',
    'in a block quote across lines': '> ![a\\\n> b](x.png)\n',
  };
  for (const [name, markdown] of Object.entries(documents)) {
    it(name, () => {
      assert.deepEqual(ours(markdown), commonmarkImages(markdown));
    });
  }

  it('leaves images in YAML and TOML front matter alone, as site generators strip it before rendering', () => {
    for (const [open, close] of [['---', '---'], ['+++', '+++']]) {
      const frontMatter = `${open}\ntitle: Holiday\ndescription: "![](cover.png)"\n${close}\n`;
      const body = '\n![](a.png)\n\n![b](b.png)\n';
      const whole = frontMatter + body;
      // Without the stripping, CommonMark itself would see the front matter's image: the case is real.
      assert.equal(commonmarkImages(whole).length, 3);
      assert.deepEqual(ours(whole), commonmarkImages(body));
      assert.deepEqual(checkAlts(findImageElements(whole, 'markdown')).map((p) => p.image.url), ['a.png']);
    }
  });

  it('never edits an outer image\'s alt text through an <img> written in it', () => {
    const markdown = '![<img src="x.png">](y.png)\n';
    const images = findImageElements(markdown, 'markdown');
    assert.deepEqual(images.map((i) => i.url), ['y.png']);
  });
});

describe('HTML duplicate attributes as htmlparser2 reads them', () => {
  it('takes the first alt, as browsers do', () => {
    const html = '<img src="a.png" alt="first" alt="second"><img alt="" src="b.png" alt="late">';
    assert.deepEqual(
      findImageElements(html, 'html').map((i) => ({ kind: 'html', url: i.url, alt: i.alt })),
      htmlparser2Images(html),
    );
  });
});

describe('JSX alt props as React gets them from TypeScript\'s JSX transform', () => {
  const cases = [
    'const a = <img src="a.png" alt="first" alt="second" />;',
    'const a = <img src="a.png" alt="mine" {...props} />;',
    'const a = <img src="a.png" {...props} alt="mine" />;',
    'const a = <img {...props} src="a.png" />;',
    'const a = <img alt="one" {...props} alt={"two"} />;',
    'const a = <img alt={title} src="a.png" />;',
  ];
  for (const source of cases) {
    it(source, () => {
      const [image] = findImageElements(source, 'typescriptreact');
      const withSpreadAlt = reactAltProp(source, { alt: 'from props' });
      const withoutSpreadAlt = reactAltProp(source, {});
      if (image.altSyntax.kind === 'dynamic') {
        assert.equal(image.alt, undefined);
        // Dynamic only where the rendered alt is not one the source states.
        assert.ok(withSpreadAlt !== withoutSpreadAlt || typeof withSpreadAlt !== 'string' || !source.includes(`"${String(withSpreadAlt)}"`), source);
      } else {
        assert.equal(withSpreadAlt, withoutSpreadAlt, 'nothing at run time can replace it');
        assert.equal(image.alt, withSpreadAlt);
      }
    });
  }

  it('edits the alt React renders, when it is the source\'s own', () => {
    for (const source of ['const a = <img src="a.png" alt="first" alt="image" />;', 'const a = <img {...props} alt="image" alt="x.png" />;']) {
      const [image] = findImageElements(source, 'typescriptreact') as ImageElement[];
      const edit = altEditFor(image, 'a kite over the hills');
      assert.ok(edit, source);
      assert.equal(reactAltProp(applyEdits(source, [edit]), { alt: 'from props' }), 'a kite over the hills', source);
    }
  });

  it('says a spread after alt makes it dynamic, so no check or fix claims to know it', () => {
    const source = 'const a = <img src="a.png" alt="image" {...props} />;';
    assert.notEqual(reactAltProp(source, { alt: 'from props' }), 'image');
    const [image] = findImageElements(source, 'typescriptreact');
    assert.equal(image.altSyntax.kind, 'dynamic');
    assert.deepEqual(checkAlts([image]), []);
  });
});
