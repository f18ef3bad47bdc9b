import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ALT_RULES, checkAlt, lspSeverity } from '../../server/src/features/alt-text/rules';
import { ALT_RULE_IDS, DEFAULT_ALT_RULE_SETTINGS, normalizeSettings, type AltRuleId, type AltRuleSettings } from '../../server/src/protocol/settings';
import { findImages, type ImageElement } from '../../server/src/features/images/find-images';

/** `![alt](x.png)`, built by hand so the rules are tested apart from the parser. */
function markdownImage(alt: string): ImageElement {
  return {
    kind: 'markdown-inline',
    range: { start: 0, end: alt.length + 10 },
    destination: 'x.png',
    url: 'x.png',
    destinationRange: { start: alt.length + 4, end: alt.length + 9 },
    alt,
    altRange: { start: 2, end: 2 + alt.length },
    altSyntax: { kind: 'markdown' },
    decorative: false,
  };
}

/** The alt-text settings a user's `blip2.altText` gives. */
function altSettings(altText: unknown): AltRuleSettings {
  const { rules, maxLength } = normalizeSettings({ altText }).altText;
  return { rules, maxLength };
}

function rulesFor(image: ImageElement, settings = DEFAULT_ALT_RULE_SETTINGS): AltRuleId[] {
  return checkAlt(image, settings).map((p) => p.ruleId);
}

const chars = (n: number): string => 'A dog runs along the beach. '.repeat(10).slice(0, n);

// The good and bad alt texts of ../shared/docs/peers.md, and the examples of the linters it cites.
const table: Array<[alt: string, expected: AltRuleId[]]> = [
  ['A woman sitting on the beach with a dog', []],
  ['A child holding a photograph.', []],
  ['Dog jumping through a hoop.', []],
  ['Bar chart of quarterly sales, rising from 10 to 40', []],
  ['', ['missing-alt']],
  ['   ', ['missing-alt']],
  ['image', ['default-alt']],
  ['Image', ['default-alt']],
  ['Screen Shot 2020-10-20 at 2 52 27 PM', ['default-alt']],
  ['Screenshot 2024-01-31 at 10.00.00', ['default-alt']],
  ['CleanShot 2023-05-01 @2x', ['default-alt']],
  ['Clean shot 2020-12-01 @12x', ['default-alt']],
  ['photo', ['placeholder-alt']],
  ['Logo', ['placeholder-alt']],
  ['picture', ['placeholder-alt']],
  ['diagram', ['placeholder-alt']],
  ['spacer', ['placeholder-alt']],
  ['screenshot', ['placeholder-alt']],
  ['placeholder', ['placeholder-alt']],
  [' icon ', ['placeholder-alt']],
  ['Image of a dog jumping through a hoop.', ['redundant-phrase']],
  ['A photo of the team at the offsite', ['redundant-phrase']],
  ['Screenshot of the settings page', ['redundant-phrase']],
  ['graphic of a rising line', ['redundant-phrase']],
  ['picture of a cat', ['redundant-phrase']],
  ['photograph.jpg', ['file-name-alt']],
  ['IMG_2034.JPEG', ['file-name-alt']],
  ['architecture-overview.svg', ['file-name-alt']],
  ['hero.webp', ['file-name-alt']],
  [chars(125), []],
  [chars(126), ['alt-too-long']],
  [`Image of ${chars(130)}`, ['redundant-phrase', 'alt-too-long']],
];

describe('alt-text rules', () => {
  for (const [alt, expected] of table) {
    it(`${JSON.stringify(alt.length > 40 ? `${alt.slice(0, 40)}…` : alt)} → ${expected.join(', ') || 'fine'}`, () => {
      assert.deepEqual(rulesFor(markdownImage(alt)), expected);
    });
  }

  it('points missing alt at the whole image and the others at the alt text', () => {
    const missing = checkAlt(markdownImage(''))[0];
    assert.deepEqual(missing.range, { start: 0, end: 10 });
    const placeholder = checkAlt(markdownImage('logo'))[0];
    assert.deepEqual(placeholder.range, { start: 2, end: 6 });
  });

  it('says in each message what is wrong and what to do', () => {
    for (const [alt, expected] of table) {
      for (const problem of checkAlt(markdownImage(alt))) {
        assert.ok(expected.includes(problem.ruleId));
        assert.match(problem.message, /^[A-Z][^]*; [^]*\.$/, problem.message);
      }
    }
    assert.match(checkAlt(markdownImage(chars(126)))[0].message, /126 characters, over the limit of 125/);
  });

  it('finds missing and unhelpful alt in a document, and leaves decorative images alone', () => {
    const text = [
      '![](a.png) ![][r] ![Screenshot 2024-01-31 at 10.00.00](b.png) ![A red kite](c.png)',
      '',
      '<img src="d.png"> <img src="e.png" alt=""> <img src="f.png" alt="image" aria-hidden="true">',
      '<img src="g.png" alt="  ">',
      '',
      '[r]: r.png',
    ].join('\n');
    const byDestination = Object.fromEntries(
      findImages(text, 'markdown').map((image) => [image.destination, rulesFor(image as ImageElement)]),
    );
    assert.deepEqual(byDestination, {
      'a.png': ['missing-alt'],
      'r.png': ['missing-alt'],
      'b.png': ['default-alt'],
      'c.png': [],
      'd.png': ['missing-alt'],
      'e.png': [],
      'f.png': [],
      'g.png': ['missing-alt'],
    });
  });

  it('skips alt text computed by code', () => {
    const [image] = findImages('<img src="a.png" alt={t("a")} />', 'javascriptreact') as ImageElement[];
    assert.deepEqual(rulesFor(image), []);
  });

  it('switches rules off, changes their severity, and takes the length limit from settings', () => {
    const settings = altSettings({ rules: { 'missing-alt': 'off', 'placeholder-alt': 'error' }, maxLength: 20 });
    assert.deepEqual(rulesFor(markdownImage(''), settings), []);
    assert.deepEqual(checkAlt(markdownImage('logo'), settings).map((p) => p.severity), ['error']);
    assert.deepEqual(rulesFor(markdownImage('A kite over the hills at dusk'), settings), ['alt-too-long']);
  });

  it('falls back to the next content rule when one is off', () => {
    const settings = altSettings({ rules: { 'default-alt': 'off' } });
    assert.deepEqual(rulesFor(markdownImage('image'), settings), ['placeholder-alt']);
  });

  it('ignores settings it does not understand', () => {
    const settings = altSettings({ rules: { 'missing-alt': 'loud', bogus: 'error' }, maxLength: 'long' });
    assert.deepEqual(settings, DEFAULT_ALT_RULE_SETTINGS);
    assert.deepEqual(altSettings(undefined), DEFAULT_ALT_RULE_SETTINGS);
  });

  it('exports every rule id with a default and a description', () => {
    assert.deepEqual(Object.keys(ALT_RULES).sort(), [...ALT_RULE_IDS].sort());
    assert.deepEqual(Object.keys(DEFAULT_ALT_RULE_SETTINGS.rules).sort(), [...ALT_RULE_IDS].sort());
    assert.equal(DEFAULT_ALT_RULE_SETTINGS.maxLength, 125);
    assert.equal(DEFAULT_ALT_RULE_SETTINGS.rules['missing-alt'], 'warning');
  });

  it('maps severities onto LSP DiagnosticSeverity', () => {
    assert.deepEqual(
      (['error', 'warning', 'information', 'hint'] as const).map(lspSeverity),
      [1, 2, 3, 4],
    );
  });
});
