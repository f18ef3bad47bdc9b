import type { TextDocument, TextEdit } from 'vscode-languageserver-textdocument';
import { findImageElements } from '../images/find-images';
import type { AltSyntax, ImageElement, ImageElementKind, OffsetRange } from '../images/image-reference';
import { DEFAULT_ALT_RULE_SETTINGS, type AltRuleSettings } from '../../protocol/settings';
import { checkAlt } from './rules';

/** A text edit in offsets; `toTextEdit` makes it an LSP one. */
export interface OffsetEdit {
  range: OffsetRange;
  newText: string;
}

/**
 * Names an image so that it can be found again after the document changed (the model may run for seconds
 * while the user types): which destination, which of the images with that destination, its alt text, and the
 * text around it, to tell apart images of the same file when some were added, removed or moved meanwhile.
 */
export interface ImageAnchor {
  destination: string;
  /** Its index among the images with this destination, in document order. */
  occurrence: number;
  /** How many images had this destination. */
  count: number;
  kind: ImageElementKind;
  /** Where it was: breaks ties between images that nothing else tells apart. */
  range: OffsetRange;
  alt: string | undefined;
  /** Up to `CONTEXT_LENGTH` characters of text just before and just after the image. */
  before: string;
  after: string;
}

const CONTEXT_LENGTH = 64;

/** The anchor of `image`, one of the `images` found in `text`. */
export function anchorFor(text: string, images: readonly ImageElement[], image: ImageElement): ImageAnchor {
  const same = images.filter((other) => other.destination === image.destination);
  const index = same.findIndex((other) => other.range.start === image.range.start && other.range.end === image.range.end);
  return {
    destination: image.destination,
    occurrence: Math.max(0, index),
    count: same.length,
    kind: image.kind,
    range: { ...image.range },
    alt: image.alt,
    before: text.slice(Math.max(0, image.range.start - CONTEXT_LENGTH), image.range.start),
    after: text.slice(image.range.end, image.range.end + CONTEXT_LENGTH),
  };
}

/**
 * The anchored image in the current text, or undefined when no image has that destination any more. `elements`
 * are the text's image elements when they were found already.
 */
export function relocateImage(
  text: string,
  languageId: string,
  anchor: ImageAnchor,
  elements: readonly ImageElement[] = findImageElements(text, languageId),
): ImageElement | undefined {
  const all = elements.filter((image) => image.destination === anchor.destination);
  const sameKind = all.filter((image) => image.kind === anchor.kind);
  const candidates = sameKind.length ? sameKind : all;
  if (candidates.length <= 1) return candidates[0];
  // Several images of this file: the one whose alt and surroundings still match best. When nothing tells
  // them apart (the same alt in the same surroundings), the n-th if none came or went, else the nearest.
  const distance = (image: ImageElement): number => Math.abs(image.range.start - anchor.range.start);
  let best: ImageElement | undefined;
  let bestScore = -1;
  candidates.forEach((image, index) => {
    const before = text.slice(Math.max(0, image.range.start - CONTEXT_LENGTH), image.range.start);
    const after = text.slice(image.range.end, image.range.end + CONTEXT_LENGTH);
    const score =
      (image.alt === anchor.alt ? 4 * CONTEXT_LENGTH : 0) +
      2 * (commonSuffix(before, anchor.before) + commonPrefix(after, anchor.after)) +
      (candidates.length === anchor.count && index === anchor.occurrence ? 1 : 0);
    const nearer = best !== undefined && distance(image) < distance(best);
    if (score > bestScore || (score === bestScore && nearer)) {
      best = image;
      bestScore = score;
    }
  });
  return best;
}

function commonPrefix(a: string, b: string): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

function commonSuffix(a: string, b: string): number {
  let n = 0;
  while (n < a.length && n < b.length && a[a.length - 1 - n] === b[b.length - 1 - n]) n++;
  return n;
}

export interface EditAltOptions {
  /**
   * Replace the alt text even if the user changed it since the anchor was taken. Off by default: text the
   * user typed while the model ran is theirs.
   */
  overwriteChangedAlt?: boolean;
  /** The text's image elements, when they were found already. */
  elements?: readonly ImageElement[];
}

/**
 * The edit that puts `newAlt` in place of the anchored image's alt text in the current `text`; undefined when
 * the image is gone, its destination changed, its alt is computed by code, or (by default) its alt was edited
 * meanwhile. The edit covers only the alt text (and, for `![alt]`/`![alt][]`, the label that has to move out
 * of it), never the destination.
 */
export function editAlt(
  text: string,
  languageId: string,
  anchor: ImageAnchor,
  newAlt: string,
  options: EditAltOptions = {},
): OffsetEdit | undefined {
  const image = relocateImage(text, languageId, anchor, options.elements);
  if (!image) return undefined;
  if (!options.overwriteChangedAlt && image.alt !== anchor.alt) return undefined;
  return altEditFor(image, newAlt);
}

/**
 * The edit that sets an image's alt text, for an image found in the text the edit will apply to. Never one that
 * writes an empty alt: `alt=""` would mark the image as decorative, the opposite of what was asked.
 */
export function altEditFor(image: ImageElement, newAlt: string): OffsetEdit | undefined {
  const syntax = image.altSyntax;
  if (syntax.kind === 'dynamic' || !newAlt.trim()) return undefined;
  const escaped = escapeAltText(newAlt, syntax);
  const reference = image.reference;
  if (reference && reference.type !== 'full') {
    // In `![label]` and `![label][]` the alt is also the label; new alt text must leave the label in a
    // `[label]` of its own, or the image would lose its definition.
    const end = reference.type === 'collapsed' ? reference.labelRange.end : image.altRange.end + 1;
    return { range: { start: image.altRange.start, end }, newText: `${escaped}][${reference.label}]` };
  }
  if (syntax.kind === 'attribute') {
    return { range: { ...image.altRange }, newText: `${syntax.before}${escaped}${syntax.after}` };
  }
  return { range: { ...image.altRange }, newText: escaped };
}

/**
 * `text` written so that, in this position, it reads back as exactly `text` (whitespace runs collapsed to one
 * space: alt text is one line, and a blank line would end a markdown paragraph).
 */
export function escapeAltText(text: string, syntax: Exclude<AltSyntax, { kind: 'dynamic' }>): string {
  const line = text.replace(/\s+/g, ' ').trim();
  switch (syntax.kind) {
    case 'markdown':
      return escapeMarkdownAlt(line);
    case 'attribute':
      return line.replace(/[&<>"']/g, (c) => (c === syntax.quote || !`"'`.includes(c) ? ENTITY[c] : c));
    case 'js-string':
      return escapeJsString(line, syntax.quote);
  }
}

const ENTITY: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * Backslash-escapes what markdown would read as markup inside `![…]`: brackets (they end the alt or start a
 * link), emphasis, code and strikethrough markers, `<` (HTML, autolinks), `|` (a GFM table cell border), `&` where
 * it would start a character reference, and the backslash itself.
 */
function escapeMarkdownAlt(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if ('\\[]*`<|~'.includes(c)) out += `\\${c}`;
    else if (c === '_' && !(isWordChar(text[i - 1]) && isWordChar(text[i + 1]))) out += '\\_';
    else if (c === '&' && /^&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]*);/.test(text.slice(i))) out += '\\&';
    else out += c;
  }
  return out;
}

function isWordChar(c: string | undefined): boolean {
  return c !== undefined && /[\p{L}\p{N}]/u.test(c);
}

function escapeJsString(text: string, quote: '"' | "'" | '`'): string {
  return text.replace(/[\\"'`$\u2028\u2029]/g, (c, at: number) => {
    if (c === '\\') return '\\\\';
    if (c === '\u2028' || c === '\u2029') return c === '\u2028' ? '\\u2028' : '\\u2029';
    if (c === '$') return quote === '`' && text[at + 1] === '{' ? '\\$' : '$';
    return c === quote ? `\\${c}` : c;
  });
}

/** Where the alt text `altEditFor(image, newAlt)` writes starts within its newText, and how long it is. */
export function writtenAltSpan(image: ImageElement, newAlt: string): { offset: number; length: number } | undefined {
  const syntax = image.altSyntax;
  if (syntax.kind === 'dynamic') return undefined;
  return { offset: syntax.kind === 'attribute' ? syntax.before.length : 0, length: escapeAltText(newAlt, syntax).length };
}

export interface AltEditsOptions {
  settings?: AltRuleSettings;
  /** The text's image elements, when they were found already. */
  elements?: readonly ImageElement[];
  /** Which images get new alt text; by default those the rules flag, except for length alone. */
  include?: (image: ImageElement) => boolean;
}

/**
 * The edits that give every image in the document that needs it the caption of its image. `captions` maps a
 * destination (`ImageElement.destination`) to its caption, or is a function for any other key. Images without
 * a caption are left alone; edits never overlap (an image nested in another's alt loses to the outer one).
 */
export function altEditsForDocument(
  text: string,
  languageId: string,
  captions: ReadonlyMap<string, string> | ((image: ImageElement) => string | undefined),
  options: AltEditsOptions = {},
): OffsetEdit[] {
  const settings = options.settings ?? DEFAULT_ALT_RULE_SETTINGS;
  const include = options.include ?? ((image: ImageElement) => checkAlt(image, settings).some((p) => p.ruleId !== 'alt-too-long'));
  const captionOf = typeof captions === 'function' ? captions : (image: ImageElement) => captions.get(image.destination);
  const edits: OffsetEdit[] = [];
  for (const image of options.elements ?? findImageElements(text, languageId)) {
    if (!include(image)) continue;
    const caption = captionOf(image);
    const edit = caption === undefined ? undefined : altEditFor(image, caption);
    if (!edit) continue;
    const previous = edits[edits.length - 1];
    if (previous && edit.range.start < previous.range.end) continue;
    edits.push(edit);
  }
  return edits;
}

/** `text` with non-overlapping `edits` applied (what the editor will show after applying them). */
export function applyEdits(text: string, edits: readonly OffsetEdit[]): string {
  const sorted = [...edits].sort((a, b) => b.range.start - a.range.start || b.range.end - a.range.end);
  let out = text;
  for (const edit of sorted) out = out.slice(0, edit.range.start) + edit.newText + out.slice(edit.range.end);
  return out;
}

export function toTextEdit(document: TextDocument, edit: OffsetEdit): TextEdit {
  return { range: { start: document.positionAt(edit.range.start), end: document.positionAt(edit.range.end) }, newText: edit.newText };
}
