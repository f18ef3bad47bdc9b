/**
 * What every finder returns: where an image is referenced in a document, and where its alt text lives.
 * All positions are UTF-16 offsets into the document text (what `TextDocument.offsetAt` gives), so this code
 * never needs the document object; the LSP layer converts with `positionAt` at the edge.
 */

/** Half-open `[start, end)` offsets; `start === end` is an insertion point. */
export interface OffsetRange {
  start: number;
  end: number;
}

/**
 * How text put at `altRange` has to be written for the document to keep its meaning. `before`/`after` are
 * written around the escaped text when the attribute, or its quotes, does not exist yet: a missing HTML alt is
 * an insertion point after `<img` with `before: ' alt="'`, `after: '"'`.
 */
export type AltSyntax =
  | { kind: 'markdown' }
  | { kind: 'attribute'; quote: '"' | "'"; before: string; after: string }
  | { kind: 'js-string'; quote: '"' | "'" | '`' }
  /** Set by code (`alt={t('logo')}`, `{...props}`): counts as present, and is never checked or edited. */
  | { kind: 'dynamic' };

export type ImageElementKind = 'markdown-inline' | 'markdown-reference' | 'html' | 'jsx';

/** The `[ref]` part of `![alt][ref]`, `![alt][]` or `![alt]`, and the definition it points at. */
export interface MarkdownReferenceLink {
  type: 'full' | 'collapsed' | 'shortcut';
  /** The label as written in the source (for a shortcut or collapsed reference this is also the alt). */
  label: string;
  /** The label as CommonMark matches it (case-folded, whitespace collapsed). */
  identifier: string;
  /** `[ref]` for a full reference, `[]` for a collapsed one, `[alt]` for a shortcut; brackets included. */
  labelRange: OffsetRange;
  /** The whole `[ref]: dest "title"` definition. */
  definitionRange: OffsetRange;
}

/** An image element whose alt text can be checked: markdown `![]()`, `![][]`, HTML or JSX `<img>`. */
export interface ImageElement {
  kind: ImageElementKind;
  /** The whole image: `![alt](dest)`, `![alt][ref]`, the `<img …>` tag, the JSX element. */
  range: OffsetRange;
  /**
   * The destination as the author means it: backslash escapes, character references and percent-encoding
   * resolved (`a%20b.png` gives `a b.png`). Empty when there is none or code computes it.
   */
  destination: string;
  /** The destination as a browser would request it: escapes and references resolved, percent-encoding kept. */
  url: string;
  /** Where the destination is written (for a reference-style image: in its definition); undefined if nowhere. */
  destinationRange: OffsetRange | undefined;
  title?: string;
  /**
   * The alt text as a screen reader gets it (markup stripped, references decoded). Undefined when the
   * attribute is missing or, with `altSyntax.kind === 'dynamic'`, when code computes it.
   */
  alt: string | undefined;
  /** The alt text's source span, or the insertion point where a missing alt goes. */
  altRange: OffsetRange;
  altSyntax: AltSyntax;
  /** `alt=""`, `aria-hidden="true"`, `role="presentation"`/`"none"`: meant to be skipped by screen readers. */
  decorative: boolean;
  reference?: MarkdownReferenceLink;
}

/** A string in any file that names an image file (CSS `url()`, an import, a config value): hover only. */
export interface ImagePath {
  kind: 'path';
  range: OffsetRange;
  destination: string;
  url: string;
  destinationRange: OffsetRange;
}

export type ImageReference = ImageElement | ImagePath;

export function isImageElement(image: ImageReference): image is ImageElement {
  return image.kind !== 'path';
}

export function contains(range: OffsetRange, offset: number): boolean {
  return range.start <= offset && offset <= range.end;
}

/**
 * Percent-decodes what decodes and keeps the rest as written: a stray `%` in a file name must not make the
 * whole destination unusable, and `decodeURIComponent` throws on it.
 */
export function percentDecode(value: string): string {
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value.replace(/(?:%[0-9a-fA-F]{2})+/g, (run) => {
      try {
        return decodeURIComponent(run);
      } catch {
        return run;
      }
    });
  }
}
