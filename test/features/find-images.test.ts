import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  findImageElements,
  findImages,
  imageAt,
  imagePathAt,
  type ImageElement,
  type ImageReference,
  type OffsetRange,
} from '../../server/src/features/images/find-images';

/** What a reference covers, read back from the document, so every expectation below is source text. */
function at(text: string, range: OffsetRange | undefined): string | undefined {
  return range && text.slice(range.start, range.end);
}

interface Expected {
  kind: ImageElement['kind'];
  whole: string;
  altSource: string;
  alt: string | undefined;
  destination: string;
  destinationSource: string | undefined;
  title?: string;
  decorative?: boolean;
}

function check(text: string, image: ImageElement, expected: Expected): void {
  const where = `image ${JSON.stringify(expected.whole)}`;
  assert.equal(image.kind, expected.kind, where);
  assert.equal(at(text, image.range), expected.whole, where);
  assert.equal(at(text, image.altRange), expected.altSource, `${where}: alt span`);
  assert.equal(image.alt, expected.alt, `${where}: alt`);
  assert.equal(image.destination, expected.destination, `${where}: destination`);
  assert.equal(at(text, image.destinationRange), expected.destinationSource, `${where}: destination span`);
  assert.equal(image.title, expected.title, `${where}: title`);
  assert.equal(image.decorative, expected.decorative ?? false, `${where}: decorative`);
}

describe('markdown images', () => {
  const text = [
    '# Images',
    '',
    'Inline ![A red bicycle](img/bike.png) and ![Harbour at dusk](img/harbour.jpg "Evening &amp; tide").',
    'Angle ![Two cats](<img/two cats.png>) encoded ![Sunset](img/sun%20set.webp).',
    'Escaped ![Brackets \\[x\\] and *stars*](img/a\\_b.png)',
    'Nested ![outer [link](https://x.test) text](img/nested.gif)',
    '',
    'Full ![Chart of sales][Sales] collapsed ![Logo Mark][] shortcut ![Team photo]',
    'Empty ![][sales] and ![  ](img/blank.png)',
    '',
    'Code `![not an image](img/code.png)` and `<img src="img/code-html.png">`',
    '',
    '```md',
    '![fenced](img/fenced.png)',
    '<img src="img/fenced-html.png">',
    '```',
    '',
    '    ![indented](img/indented.png)',
    '',
    'Inline HTML <img src="img/inline.png" alt="Inline one"> and <img src="img/noalt.png">',
    '',
    '<div>',
    '  <img src="img/block.png" alt="" class="hero">',
    '  <img alt=\'Say "hi"\' src="img/quoted.png" aria-hidden="true">',
    '</div>',
    '',
    '> Quoted <img',
    '> src="img/in-quote.png" alt="wrapped">',
    '',
    '[sales]: <img/sales chart.svg> "Sales 2024"',
    '[logo mark]: img/logo.png',
    '[TEAM   PHOTO]: img/team.jpg',
    '[unused]: img/unused.png',
    '',
  ].join('\n');

  const images = findImages(text, 'markdown') as ImageElement[];

  it('finds every image, in document order, and nothing in code', () => {
    assert.deepEqual(
      images.map((i) => at(text, i.range)),
      [
        '![A red bicycle](img/bike.png)',
        '![Harbour at dusk](img/harbour.jpg "Evening &amp; tide")',
        '![Two cats](<img/two cats.png>)',
        '![Sunset](img/sun%20set.webp)',
        '![Brackets \\[x\\] and *stars*](img/a\\_b.png)',
        '![outer [link](https://x.test) text](img/nested.gif)',
        '![Chart of sales][Sales]',
        '![Logo Mark][]',
        '![Team photo]',
        '![][sales]',
        '![  ](img/blank.png)',
        '<img src="img/inline.png" alt="Inline one">',
        '<img src="img/noalt.png">',
        '<img src="img/block.png" alt="" class="hero">',
        '<img alt=\'Say "hi"\' src="img/quoted.png" aria-hidden="true">',
        '<img\n> src="img/in-quote.png" alt="wrapped">',
      ],
    );
  });

  const byWhole = (whole: string): ImageElement => {
    const found = images.find((i) => at(text, i.range) === whole);
    assert.ok(found, `no image ${whole}`);
    return found;
  };

  it('reads inline images: alt span, destination, title', () => {
    check(text, byWhole('![A red bicycle](img/bike.png)'), {
      kind: 'markdown-inline',
      whole: '![A red bicycle](img/bike.png)',
      altSource: 'A red bicycle',
      alt: 'A red bicycle',
      destination: 'img/bike.png',
      destinationSource: 'img/bike.png',
    });
    check(text, byWhole('![Harbour at dusk](img/harbour.jpg "Evening &amp; tide")'), {
      kind: 'markdown-inline',
      whole: '![Harbour at dusk](img/harbour.jpg "Evening &amp; tide")',
      altSource: 'Harbour at dusk',
      alt: 'Harbour at dusk',
      destination: 'img/harbour.jpg',
      destinationSource: 'img/harbour.jpg',
      title: 'Evening & tide',
    });
  });

  it('decodes angle-bracket, percent-encoded and escaped destinations', () => {
    const cats = byWhole('![Two cats](<img/two cats.png>)');
    assert.equal(at(text, cats.destinationRange), 'img/two cats.png');
    assert.equal(cats.destination, 'img/two cats.png');
    const sunset = byWhole('![Sunset](img/sun%20set.webp)');
    assert.equal(sunset.destination, 'img/sun set.webp');
    assert.equal(sunset.url, 'img/sun%20set.webp');
    const escaped = byWhole('![Brackets \\[x\\] and *stars*](img/a\\_b.png)');
    assert.equal(escaped.destination, 'img/a_b.png');
    assert.equal(at(text, escaped.destinationRange), 'img/a\\_b.png');
  });

  it('spans escaped and nested brackets in the alt, and reads the alt as plain text', () => {
    const escaped = byWhole('![Brackets \\[x\\] and *stars*](img/a\\_b.png)');
    assert.equal(at(text, escaped.altRange), 'Brackets \\[x\\] and *stars*');
    assert.equal(escaped.alt, 'Brackets [x] and stars');
    const nested = byWhole('![outer [link](https://x.test) text](img/nested.gif)');
    assert.equal(at(text, nested.altRange), 'outer [link](https://x.test) text');
    assert.equal(nested.alt, 'outer link text');
  });

  it('reads reference-style images with their definitions, labels matched case- and space-insensitively', () => {
    const full = byWhole('![Chart of sales][Sales]');
    check(text, full, {
      kind: 'markdown-reference',
      whole: '![Chart of sales][Sales]',
      altSource: 'Chart of sales',
      alt: 'Chart of sales',
      destination: 'img/sales chart.svg',
      destinationSource: 'img/sales chart.svg',
      title: 'Sales 2024',
    });
    assert.equal(full.reference?.type, 'full');
    assert.equal(full.reference?.label, 'Sales');
    assert.equal(at(text, full.reference?.labelRange), '[Sales]');
    assert.equal(at(text, full.reference?.definitionRange), '[sales]: <img/sales chart.svg> "Sales 2024"');

    const collapsed = byWhole('![Logo Mark][]');
    assert.equal(collapsed.reference?.type, 'collapsed');
    assert.equal(at(text, collapsed.altRange), 'Logo Mark');
    assert.equal(at(text, collapsed.reference?.labelRange), '[]');
    assert.equal(collapsed.destination, 'img/logo.png');
    assert.equal(at(text, collapsed.destinationRange), 'img/logo.png');

    const shortcut = byWhole('![Team photo]');
    assert.equal(shortcut.reference?.type, 'shortcut');
    assert.equal(at(text, shortcut.reference?.labelRange), '[Team photo]');
    assert.equal(shortcut.destination, 'img/team.jpg');
    assert.equal(at(text, shortcut.reference?.definitionRange), '[TEAM   PHOTO]: img/team.jpg');
  });

  it('gives an insertion point between the brackets for empty alt text', () => {
    const empty = byWhole('![][sales]');
    assert.equal(empty.alt, '');
    assert.equal(empty.altRange.start, empty.altRange.end);
    assert.equal(text.slice(empty.altRange.start - 2, empty.altRange.start), '![');
    assert.equal(text[empty.altRange.end], ']');
    assert.equal(empty.destination, 'img/sales chart.svg');
    const blank = byWhole('![  ](img/blank.png)');
    assert.equal(at(text, blank.altRange), '  ');
  });

  it('reads <img> in inline HTML and HTML blocks, including one split over quoted lines', () => {
    check(text, byWhole('<img src="img/inline.png" alt="Inline one">'), {
      kind: 'html',
      whole: '<img src="img/inline.png" alt="Inline one">',
      altSource: 'Inline one',
      alt: 'Inline one',
      destination: 'img/inline.png',
      destinationSource: 'img/inline.png',
    });
    const noAlt = byWhole('<img src="img/noalt.png">');
    assert.equal(noAlt.alt, undefined);
    assert.equal(noAlt.altRange.start, noAlt.altRange.end);
    assert.equal(text.slice(noAlt.range.start, noAlt.altRange.start), '<img');
    assert.deepEqual(noAlt.altSyntax, { kind: 'attribute', quote: '"', before: ' alt="', after: '"' });

    check(text, byWhole('<img src="img/block.png" alt="" class="hero">'), {
      kind: 'html',
      whole: '<img src="img/block.png" alt="" class="hero">',
      altSource: '',
      alt: '',
      destination: 'img/block.png',
      destinationSource: 'img/block.png',
      decorative: true,
    });
    check(text, byWhole('<img alt=\'Say "hi"\' src="img/quoted.png" aria-hidden="true">'), {
      kind: 'html',
      whole: '<img alt=\'Say "hi"\' src="img/quoted.png" aria-hidden="true">',
      altSource: 'Say "hi"',
      alt: 'Say "hi"',
      destination: 'img/quoted.png',
      destinationSource: 'img/quoted.png',
      decorative: true,
    });
    const quoted = byWhole('<img\n> src="img/in-quote.png" alt="wrapped">');
    assert.equal(at(text, quoted.destinationRange), 'img/in-quote.png');
    assert.equal(at(text, quoted.altRange), 'wrapped');
  });

  it('keeps offsets right with CRLF line ends and a byte order mark', () => {
    const crlf = '\uFEFFIntro\r\n\r\n![Dog](dog.png)\r\n<p>\r\n<img src="x.png">\r\n</p>\r\n\r\n![Cat][c]\r\n\r\n[c]: cat.png\r\n';
    const found = findImageElements(crlf, 'markdown');
    assert.deepEqual(
      found.map((i) => [at(crlf, i.range), at(crlf, i.altRange), at(crlf, i.destinationRange)]),
      [
        ['![Dog](dog.png)', 'Dog', 'dog.png'],
        ['<img src="x.png">', '', 'x.png'],
        ['![Cat][c]', 'Cat', 'cat.png'],
      ],
    );
  });
});

describe('HTML files', () => {
  const text = [
    '<!doctype html>',
    '<html><body>',
    '<IMG SRC="photos/a%20b.png" ALT="Mountain lake">',
    '<img src=unquoted.png alt=Unquoted>',
    '<img src="bare.png" alt>',
    '<img src="none.png" title="No &amp; alt">',
    '<img src="pres.png" role="presentation">',
    '<template><img src="tpl.png" alt="In a template"></template>',
    '<!-- <img src="commented.png"> -->',
    '<script>const s = "<img src=\'script.png\'>";</script>',
    '</body></html>',
  ].join('\n');
  const images = findImages(text, 'html') as ImageElement[];

  it('finds <img> elements, not those in comments or scripts', () => {
    assert.deepEqual(
      images.map((i) => at(text, i.range)),
      [
        '<IMG SRC="photos/a%20b.png" ALT="Mountain lake">',
        '<img src=unquoted.png alt=Unquoted>',
        '<img src="bare.png" alt>',
        '<img src="none.png" title="No &amp; alt">',
        '<img src="pres.png" role="presentation">',
        '<img src="tpl.png" alt="In a template">',
      ],
    );
  });

  it('reads alt and src spans, whatever the case and quoting', () => {
    check(text, images[0], {
      kind: 'html',
      whole: '<IMG SRC="photos/a%20b.png" ALT="Mountain lake">',
      altSource: 'Mountain lake',
      alt: 'Mountain lake',
      destination: 'photos/a b.png',
      destinationSource: 'photos/a%20b.png',
    });
    assert.equal(at(text, images[1].altRange), 'Unquoted');
    assert.equal(at(text, images[1].destinationRange), 'unquoted.png');
    assert.deepEqual(images[1].altSyntax, { kind: 'attribute', quote: '"', before: '"', after: '"' });
  });

  it('treats a bare alt as empty (decorative) and points after it', () => {
    const bare = images[2];
    assert.equal(bare.alt, '');
    assert.equal(bare.decorative, true);
    assert.equal(text.slice(bare.range.start, bare.altRange.start), '<img src="bare.png" alt');
  });

  it('reports a missing alt with an insertion point after the tag name; role=presentation is decorative', () => {
    const none = images[3];
    assert.equal(none.alt, undefined);
    assert.equal(none.decorative, false);
    assert.equal(none.title, 'No & alt');
    assert.equal(text.slice(none.range.start, none.altRange.end), '<img');
    assert.equal(images[4].decorative, true);
  });
});

describe('JSX and TSX', () => {
  const text = [
    'import logo from "./assets/logo.svg";',
    'import Image from "next/image";',
    'export function Page({ caption }: { caption: string }) {',
    '  const n = (caption as any) < 3;',
    '  return (',
    '    <main>',
    '      <img src="hero.png" alt="A &quot;hero&quot; shot" />',
    '      <img src={logo} />',
    '      <img src={`icons/star.svg`} alt={caption} />',
    '      <Image src={require("./b.png")} alt={\'Team\'} />',
    '      <img src="spacer.gif" alt="" />',
    '      <img src="hidden.png" aria-hidden={true} />',
    '      <img {...props} src="spread.png" />',
    '      <Other src="not-an-img.png" />',
    '      {"<img src=\'in-a-string.png\'>"}',
    '    </main>',
    '  );',
    '}',
  ].join('\n');
  const images = findImages(text, 'typescriptreact') as ImageElement[];

  it('finds <img> and next/image elements', () => {
    assert.deepEqual(
      images.map((i) => at(text, i.range)),
      [
        '<img src="hero.png" alt="A &quot;hero&quot; shot" />',
        '<img src={logo} />',
        '<img src={`icons/star.svg`} alt={caption} />',
        '<Image src={require("./b.png")} alt={\'Team\'} />',
        '<img src="spacer.gif" alt="" />',
        '<img src="hidden.png" aria-hidden={true} />',
        '<img {...props} src="spread.png" />',
      ],
    );
  });

  it('reads string alts, decoding entities, and follows image imports', () => {
    check(text, images[0], {
      kind: 'jsx',
      whole: '<img src="hero.png" alt="A &quot;hero&quot; shot" />',
      altSource: 'A &quot;hero&quot; shot',
      alt: 'A "hero" shot',
      destination: 'hero.png',
      destinationSource: 'hero.png',
    });
    assert.equal(images[1].destination, './assets/logo.svg');
    assert.equal(at(text, images[1].destinationRange), 'logo');
    assert.equal(images[1].alt, undefined);
    assert.equal(text.slice(images[1].range.start, images[1].altRange.start), '<img');
    assert.equal(images[3].destination, './b.png');
    assert.equal(images[3].alt, 'Team');
    assert.deepEqual(images[3].altSyntax, { kind: 'js-string', quote: "'" });
  });

  it('counts alt={expr} and a spread as present but not editable', () => {
    assert.equal(images[2].altSyntax.kind, 'dynamic');
    assert.equal(at(text, images[2].altRange), 'caption');
    assert.equal(images[2].destination, 'icons/star.svg');
    assert.equal(images[6].altSyntax.kind, 'dynamic');
  });

  it('knows decorative images', () => {
    assert.deepEqual(
      images.map((i) => i.decorative),
      [false, false, false, false, true, true, false],
    );
  });

  it('gives nothing for a file that does not parse', () => {
    assert.deepEqual(findImages('const x = <img src="a.png" alt=', 'javascriptreact'), []);
  });
});

describe('image paths in other files', () => {
  const css = '.hero { background: url("../img/hero.png") } .b { background: url(b.svg?v=2) }\n';
  const ts = 'import icon from "./icons/star.webp";\nconst notImage = "readme.md";\n';
  const yaml = 'cover: assets/cover image.jpeg\nlogo: assets/logo.PNG\nname: example.pngx\n';

  it('finds url(), quoted strings and bare values that name image files', () => {
    const paths = (text: string): string[] => findImages(text, 'other').map((p: ImageReference) => at(text, p.range)!);
    assert.deepEqual(paths(css), ['../img/hero.png', 'b.svg?v=2']);
    assert.deepEqual(paths(ts), ['./icons/star.webp']);
    assert.deepEqual(paths(yaml), ['image.jpeg', 'assets/logo.PNG']);
  });

  it('returns the path under the cursor, ends included', () => {
    const hero = css.indexOf('hero.png');
    assert.equal(at(css, imagePathAt(css, hero)?.range), '../img/hero.png');
    assert.equal(at(css, imagePathAt(css, css.indexOf('../img'))?.range), '../img/hero.png');
    assert.equal(at(css, imagePathAt(css, hero + 'hero.png'.length)?.range), '../img/hero.png');
    assert.equal(imagePathAt(css, css.indexOf('background')), undefined);
    assert.equal(imagePathAt(ts, ts.indexOf('readme')), undefined);
    assert.equal(imagePathAt(ts, ts.indexOf('star'))?.destination, './icons/star.webp');
  });
});

describe('imageAt', () => {
  const text = 'See [![Build status](badge.svg)](https://ci.test) and `docs/x.png`.\n\n![Ref][r]\n\n[r]: ref.png\n';

  it('finds the image under the cursor, also from its definition, else a path written there', () => {
    assert.equal(imageAt(text, 'markdown', text.indexOf('Build'))?.destination, 'badge.svg');
    assert.equal(imageAt(text, 'markdown', text.indexOf('badge.svg'))?.destination, 'badge.svg');
    assert.equal(imageAt(text, 'markdown', text.indexOf('ref.png'))?.kind, 'markdown-reference');
    assert.equal(imageAt(text, 'markdown', text.indexOf('x.png'))?.kind, 'path');
    assert.equal(imageAt(text, 'markdown', text.indexOf('and')), undefined);
  });

  it('does not take an image inside another image\'s alt for an image (it renders as alt text)', () => {
    const nested = '![a ![inner](in.png) b](out.png)';
    assert.deepEqual(findImages(nested, 'markdown').map((i) => i.destination), ['out.png']);
  });
});
