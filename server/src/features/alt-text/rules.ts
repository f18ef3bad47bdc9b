import type { ImageElement, ImageReference, OffsetRange } from '../images/image-reference';
import { IMAGE_EXTENSIONS } from '../images/path-strings';
import {
  ALT_RULE_IDS,
  DEFAULT_ALT_RULE_SETTINGS,
  DEFAULT_RULE_SEVERITIES,
  type AltRuleId,
  type AltRuleSettings,
  type RuleSeverity,
} from '../../protocol/settings';

/*
 * The rules linters use for alt text (../shared/docs/peers.md): markdownlint's and GitHub's missing alt,
 * GitHub's no-default-alt-text, and the checks of the alt-text library behind remark-lint-alt-text
 * (double-great/alt-text: its exact-match, contains and ends-with lists, and its 125-character limit).
 */

export interface AltRuleInfo {
  defaultSeverity: RuleSeverity;
  /** One line for the setting's description. */
  description: string;
}

const DESCRIPTIONS: Readonly<Record<AltRuleId, string>> = {
  'missing-alt': 'An image has no alt text: an empty or blank markdown alt, `![][ref]`, or `<img>` without `alt`.',
  'default-alt': 'The alt text is a default someone forgot to replace: "image", or a screenshot file name like "Screen Shot 2024-01-31 at …".',
  'placeholder-alt': 'The alt text is only a placeholder word such as "photo", "logo", "diagram" or "spacer".',
  'redundant-phrase': 'The alt text says "image of", "photo of" or the like, which screen readers already announce.',
  'file-name-alt': 'The alt text ends with an image file extension, so it is probably a file name.',
  'alt-too-long': 'The alt text is longer than the length limit; screen readers read long alt text in chunks.',
};

export const ALT_RULES: Readonly<Record<AltRuleId, AltRuleInfo>> = Object.fromEntries(
  ALT_RULE_IDS.map((id) => [id, { defaultSeverity: DEFAULT_RULE_SEVERITIES[id], description: DESCRIPTIONS[id] }]),
) as Record<AltRuleId, AltRuleInfo>;

export interface AltProblem {
  ruleId: AltRuleId;
  severity: RuleSeverity;
  /** What is wrong and how to fix it, in one sentence. */
  message: string;
  /** The alt text, or the whole image when there is no alt text to point at. */
  range: OffsetRange;
  image: ImageElement;
}

/** GitHub's no-default-alt-text: the names macOS and CleanShot give screenshots. */
const DEFAULT_SCREENSHOT_NAME = /^(?:screen|clean) ?(?:shot|cast) \d{4}-\d{2}-\d{2}/i;

/** Alt text that is only one of these says nothing (the library's exact-match list, with peers.md's "picture"). */
export const PLACEHOLDER_WORDS: readonly string[] = [
  'image', 'icon', 'graphic', 'photo', 'photograph', 'picture', 'placeholder', 'temp', 'alt', 'drawing', 'painting',
  'artwork', 'logo', 'bullet', 'button', 'arrow', 'more', 'spacer', 'screenshot', 'screen shot', 'blank', 'empty',
  'chart', 'table', 'diagram', 'graph', '*',
];

/** Phrases a screen reader makes redundant by announcing the image itself (the library's contains list). */
export const REDUNDANT_PHRASES: readonly string[] = [
  'picture of', 'photo of', 'photograph of', 'image of', 'graphic of', 'screenshot of', 'screen shot of', 'photo:', 'photographer:',
];

interface Check {
  id: Exclude<AltRuleId, 'missing-alt'>;
  /** The message when the rule applies to this (trimmed) alt text, else undefined. */
  test(alt: string, lower: string): string | undefined;
}

/*
 * The content checks, most specific first. Only the first that applies (and is on) is reported: "image" is
 * both GitHub's default and a placeholder word, and one fix (a real description) answers all of them.
 */
const CONTENT_CHECKS: readonly Check[] = [
  {
    id: 'default-alt',
    test: (alt, lower) =>
      lower === 'image' || DEFAULT_SCREENSHOT_NAME.test(alt)
        ? `Alt text "${clip(alt)}" is a default nobody replaced; describe what the image shows instead.`
        : undefined,
  },
  {
    id: 'placeholder-alt',
    test: (alt, lower) => {
      const word = lower.replace(/[.!:]+$/, '').trim();
      return PLACEHOLDER_WORDS.includes(word)
        ? `Alt text "${clip(alt)}" is only a placeholder word; describe what the image shows instead.`
        : undefined;
    },
  },
  {
    id: 'file-name-alt',
    test: (_alt, lower) => {
      const extension = IMAGE_EXTENSIONS.find((e) => lower.endsWith(`.${e}`));
      return extension
        ? `Alt text ends with ".${extension}", so it looks like a file name; describe what the image shows instead.`
        : undefined;
    },
  },
  {
    id: 'redundant-phrase',
    test: (_alt, lower) => {
      const phrase = REDUNDANT_PHRASES.find((p) => lower.includes(p));
      return phrase
        ? `Alt text says "${phrase}", which screen readers already announce; remove it and keep the description.`
        : undefined;
    },
  },
];

/** The problems with one image's alt text under `settings`; none for decorative images or code-computed alt. */
export function checkAlt(image: ImageReference, settings: AltRuleSettings = DEFAULT_ALT_RULE_SETTINGS): AltProblem[] {
  if (image.kind === 'path' || image.decorative || image.altSyntax.kind === 'dynamic') return [];
  const problems: AltProblem[] = [];
  const report = (ruleId: AltRuleId, message: string, range: OffsetRange): void => {
    const setting = settings.rules[ruleId] ?? ALT_RULES[ruleId].defaultSeverity;
    if (setting !== 'off') problems.push({ ruleId, severity: setting, message, range, image });
  };

  const alt = (image.alt ?? '').trim();
  if (!alt) {
    report('missing-alt', missingMessage(image), image.range);
    return problems;
  }

  const lower = alt.toLowerCase();
  for (const check of CONTENT_CHECKS) {
    if (settings.rules[check.id] === 'off') continue;
    const message = check.test(alt, lower);
    if (message) {
      report(check.id, message, image.altRange);
      break;
    }
  }

  // Screen readers chunk by characters as people see them, not UTF-16 units.
  const length = [...alt].length;
  if (length > settings.maxLength) {
    report(
      'alt-too-long',
      `Alt text is ${length} characters, over the limit of ${settings.maxLength}; shorten it and put the details in the text around the image.`,
      image.altRange,
    );
  }
  return problems;
}

/** The problems of every image, in document order. */
export function checkAlts(images: readonly ImageReference[], settings: AltRuleSettings = DEFAULT_ALT_RULE_SETTINGS): AltProblem[] {
  return images.flatMap((image) => checkAlt(image, settings));
}

function missingMessage(image: ImageElement): string {
  if (image.kind === 'html' || image.kind === 'jsx') {
    return image.alt === undefined
      ? 'Image has no alt attribute; add one that describes the image, or alt="" if it is only decoration.'
      : 'Image alt text is only blank space; describe the image, or use alt="" if it is only decoration.';
  }
  return 'Image has no alt text; describe what the image shows between "![" and "]".';
}

function clip(text: string): string {
  const chars = [...text];
  return chars.length > 40 ? `${chars.slice(0, 39).join('')}…` : text;
}

/** LSP's `DiagnosticSeverity` values, spelled out so this module needs nothing from the LSP packages. */
export type LspDiagnosticSeverity = 1 | 2 | 3 | 4;

const LSP_SEVERITY: Record<RuleSeverity, LspDiagnosticSeverity> = { error: 1, warning: 2, information: 3, hint: 4 };

/** The LSP `DiagnosticSeverity` for a rule's severity. */
export function lspSeverity(severity: RuleSeverity): LspDiagnosticSeverity {
  return LSP_SEVERITY[severity];
}
