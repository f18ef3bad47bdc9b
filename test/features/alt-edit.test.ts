import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { TextDocument } from 'vscode-languageserver-textdocument';
import {
  altEditsForDocument,
  anchorFor,
  applyEdits,
  editAlt,
  toTextEdit,
  type ImageAnchor,
} from '../../server/src/features/alt-text/alt-edit';
import { findImageElements } from '../../server/src/features/images/find-images';

/** The anchor of the image with this destination (the first, or the n-th) as the server takes it before running the model. */
function anchor(text: string, languageId: string, destination: string, nth = 0): ImageAnchor {
  const images = findImageElements(text, languageId);
  const image = images.filter((i) => i.destination === destination)[nth];
  assert.ok(image, `no image ${destination} #${nth}`);
  return anchorFor(text, images, image);
}

/** The document after setting the alt of one image, in the same text it was found in. */
function withAlt(text: string, languageId: string, destination: string, alt: string): string | undefined {
  const edit = editAlt(text, languageId, anchor(text, languageId, destination), alt);
  return edit && applyEdits(text, [edit]);
}

describe('setting alt text', () => {
  it('replaces only the alt of an inline image, escaping brackets and markup', () => {
    assert.equal(
      withAlt('See ![old](a.png "Title") here.\n', 'markdown', 'a.png', 'A dog [big] *cute* under `sun` | ok\\'),
      'See ![A dog \\[big\\] \\*cute\\* under \\`sun\\` \\| ok\\\\](a.png "Title") here.\n',
    );
  });

  it('fills an empty alt between the brackets and keeps the destination as written', () => {
    assert.equal(withAlt('![](<my pic.png>)', 'markdown', 'my pic.png', 'A kite'), '![A kite](<my pic.png>)');
    assert.equal(withAlt('![ ](a%20b.png)', 'markdown', 'a b.png', 'A kite'), '![A kite](a%20b.png)');
  });

  it('collapses line breaks, which would end the paragraph', () => {
    assert.equal(withAlt('![](a.png)', 'markdown', 'a.png', 'two\n\nlines\t here '), '![two lines here](a.png)');
  });

  it('edits the alt of a reference-style image, not its definition', () => {
    assert.equal(withAlt('![][ref]\n\n[ref]: r.png\n', 'markdown', 'r.png', 'A cat'), '![A cat][ref]\n\n[ref]: r.png\n');
  });

  it('keeps the label of a shortcut or collapsed reference as an explicit one', () => {
    const definitions = '\n\n[Logo]: l.png\n';
    assert.equal(withAlt(`![Logo]${definitions}`, 'markdown', 'l.png', 'Company logo'), `![Company logo][Logo]${definitions}`);
    assert.equal(withAlt(`![Logo][]${definitions}`, 'markdown', 'l.png', 'Company logo'), `![Company logo][Logo]${definitions}`);
  });

  it('adds a missing HTML alt after <img, escaping quotes, & and <', () => {
    assert.equal(
      withAlt('Text <img src="b.png"> more', 'markdown', 'b.png', 'Say "hi" & <wave>'),
      'Text <img alt="Say &quot;hi&quot; &amp; &lt;wave&gt;" src="b.png"> more',
    );
    assert.equal(withAlt('<p><IMG src=c.png></p>', 'html', 'c.png', 'A cat'), '<p><IMG alt="A cat" src=c.png></p>');
  });

  it('writes inside the quotes the attribute already has, and quotes an unquoted one', () => {
    assert.equal(withAlt("<img alt='x' src=c.png>", 'html', 'c.png', `it's "ok"`), `<img alt='it&#39;s "ok"' src=c.png>`);
    assert.equal(withAlt('<img alt=x src=c.png>', 'html', 'c.png', 'a b'), '<img alt="a b" src=c.png>');
    assert.equal(withAlt('<img alt src=c.png>', 'html', 'c.png', 'a b'), '<img alt="a b" src=c.png>');
  });

  it('edits JSX string attributes and string literals, and leaves alt={expr} alone', () => {
    assert.equal(withAlt('<img src="a.png" />', 'javascriptreact', 'a.png', 'A & B'), '<img alt="A &amp; B" src="a.png" />');
    assert.equal(
      withAlt('<img alt={"old"} src="a.png" />', 'typescriptreact', 'a.png', 'Say "hi" \\ bye'),
      '<img alt={"Say \\"hi\\" \\\\ bye"} src="a.png" />',
    );
    assert.equal(withAlt('<img alt={`old`} src="a.png" />', 'typescriptreact', 'a.png', 'cost ${x} `y`'), '<img alt={`cost \\${x} \\`y\\``} src="a.png" />');
    assert.equal(withAlt('<img alt={t("k")} src="a.png" />', 'typescriptreact', 'a.png', 'x'), undefined);
  });

  it('reads back exactly the alt it wrote, whatever the characters', () => {
    const tricky = [
      'A [bracketed] thing',
      'stars * and _underscores_ and snake_case',
      'back\\slash, `ticks`, <tag>, a | pipe, ~~strike~~',
      'Ampersand &amp; literal, &#35; and & alone',
      'ends with a bang!',
      'quotes "double" and \'single\'',
      '![not an image](x.png)',
      'emoji 🐕 and ünïcödé',
    ];
    const documents: Array<[languageId: string, text: string, destination: string]> = [
      ['markdown', 'Before ![](a.png) after', 'a.png'],
      ['markdown', '![x][r]\n\n[r]: r.png', 'r.png'],
      ['markdown', '![Logo]\n\n[logo]: l.png', 'l.png'],
      ['markdown', '<img src="h.png"> and <div>', 'h.png'],
      ['markdown', '| a | b |\n|---|---|\n| ![](t.png) | x |', 't.png'],
      ['html', "<img alt='' src=h.png>", 'h.png'],
      ['typescriptreact', 'const a = <img src="j.png" />;', 'j.png'],
      ['typescriptreact', "const a = <img alt={'x'} src=\"j.png\" />;", 'j.png'],
    ];
    for (const [languageId, text, destination] of documents) {
      for (const alt of tricky) {
        const edited = withAlt(text, languageId, destination, alt);
        assert.ok(edited, `${languageId} ${text}`);
        const images = findImageElements(edited, languageId).filter((i) => i.destination === destination);
        assert.equal(images.length, 1, `${edited}`);
        assert.equal(images[0].alt, alt, `${languageId}: ${edited}`);
      }
    }
  });
});

describe('setting alt text after the document changed', () => {
  const original = 'Intro.\n\n![](cat.png) and ![old](dog.png)\n';

  it('follows the image when text was inserted before it', () => {
    const a = anchor(original, 'markdown', 'dog.png');
    const now = original.replace('Intro.', 'Intro, now longer, with ![](x.png) in front.');
    const edit = editAlt(now, 'markdown', a, 'A dog');
    assert.ok(edit);
    assert.equal(applyEdits(now, [edit]), 'Intro, now longer, with ![](x.png) in front.\n\n![](cat.png) and ![A dog](dog.png)\n');
  });

  it('follows the image when it was moved', () => {
    const a = anchor(original, 'markdown', 'cat.png');
    const now = 'Intro.\n\n![old](dog.png)\n\nMoved: ![](cat.png)\n';
    const edit = editAlt(now, 'markdown', a, 'A cat');
    assert.ok(edit);
    assert.equal(applyEdits(now, [edit]), 'Intro.\n\n![old](dog.png)\n\nMoved: ![A cat](cat.png)\n');
  });

  it('picks the right one of several images of the same file', () => {
    const text = 'One ![](a.png)\n\nTwo ![](a.png)\n';
    const second = anchor(text, 'markdown', 'a.png', 1);

    const preface = `Preface.\n\n${text}`;
    const edit = editAlt(preface, 'markdown', second, 'B');
    assert.ok(edit);
    assert.equal(applyEdits(preface, [edit]), 'Preface.\n\nOne ![](a.png)\n\nTwo ![B](a.png)\n');

    // Another image of that file came in before both: the occurrence index is off by one now.
    const added = `Zero ![](a.png)\n\n${text}`;
    const edit2 = editAlt(added, 'markdown', second, 'B');
    assert.ok(edit2);
    assert.equal(applyEdits(added, [edit2]), 'Zero ![](a.png)\n\nOne ![](a.png)\n\nTwo ![B](a.png)\n');

    // The two lines swapped places.
    const swapped = 'Two ![](a.png)\n\nOne ![](a.png)\n';
    const edit3 = editAlt(swapped, 'markdown', second, 'B');
    assert.ok(edit3);
    assert.equal(applyEdits(swapped, [edit3]), 'Two ![B](a.png)\n\nOne ![](a.png)\n');
  });

  it('does not overwrite alt text the user typed meanwhile, unless asked to', () => {
    const a = anchor(original, 'markdown', 'dog.png');
    const typed = original.replace('![old]', '![my own words]');
    assert.equal(editAlt(typed, 'markdown', a, 'A dog'), undefined);
    const edit = editAlt(typed, 'markdown', a, 'A dog', { overwriteChangedAlt: true });
    assert.ok(edit);
    assert.equal(applyEdits(typed, [edit]), 'Intro.\n\n![](cat.png) and ![A dog](dog.png)\n');
  });

  it('gives nothing when the image was deleted or its destination changed', () => {
    const a = anchor(original, 'markdown', 'dog.png');
    assert.equal(editAlt('Intro.\n\n![](cat.png)\n', 'markdown', a, 'A dog'), undefined);
    assert.equal(editAlt(original.replace('dog.png', 'wolf.png'), 'markdown', a, 'A dog'), undefined);
    assert.equal(editAlt('', 'markdown', a, 'A dog'), undefined);
  });

  it('follows a missing HTML alt the same way', () => {
    const html = '<p><img src="a.png"></p>';
    const a = anchor(html, 'html', 'a.png');
    const now = `<h1>Title</h1>\n${html}`;
    const edit = editAlt(now, 'html', a, 'A');
    assert.ok(edit);
    assert.equal(applyEdits(now, [edit]), '<h1>Title</h1>\n<p><img alt="A" src="a.png"></p>');
    assert.equal(editAlt('<p><img alt="typed" src="a.png"></p>', 'html', a, 'A'), undefined);
  });
});

describe('alt text for a whole document', () => {
  const text = [
    '![](a.png) ![photo](b.png) ![A red kite](c.png) ![](unknown.png)',
    '<img src="d.png"> <img src="e.png" alt="">',
    '![][r]',
    '',
    '[r]: r.png',
  ].join('\n');
  const captions = new Map([
    ['a.png', 'A cat'],
    ['b.png', 'A [big] dog'],
    ['c.png', 'A bird'],
    ['d.png', 'A "fish"'],
    ['e.png', 'A spacer'],
    ['r.png', 'A fox'],
  ]);

  it('fills missing and unhelpful alt text that has a caption, leaving good and decorative alt alone', () => {
    const edits = altEditsForDocument(text, 'markdown', captions);
    assert.equal(
      applyEdits(text, edits),
      [
        '![A cat](a.png) ![A \\[big\\] dog](b.png) ![A red kite](c.png) ![](unknown.png)',
        '<img alt="A &quot;fish&quot;" src="d.png"> <img src="e.png" alt="">',
        '![A fox][r]',
        '',
        '[r]: r.png',
      ].join('\n'),
    );
  });

  it('takes the images to fill from the caller', () => {
    const edits = altEditsForDocument(text, 'markdown', (image) => (image.destination === 'c.png' ? 'A bird' : undefined), {
      include: () => true,
    });
    assert.equal(applyEdits(text, edits), text.replace('![A red kite](c.png)', '![A bird](c.png)'));
  });
});

describe('toTextEdit', () => {
  it('turns offsets into LSP positions', () => {
    const text = 'line one\r\n![](a.png)\n';
    const document = TextDocument.create('file:///x.md', 'markdown', 1, text);
    const edit = editAlt(text, 'markdown', anchor(text, 'markdown', 'a.png'), 'A');
    assert.ok(edit);
    assert.deepEqual(toTextEdit(document, edit), {
      range: { start: { line: 1, character: 2 }, end: { line: 1, character: 2 } },
      newText: 'A',
    });
  });
});
