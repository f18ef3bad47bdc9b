import { percentDecode, type ImagePath, type OffsetRange } from './image-reference';

/** The file types we can caption (what sharp decodes), lower case, without the dot. */
export const IMAGE_EXTENSIONS: readonly string[] = ['png', 'jpg', 'jpeg', 'gif', 'webp', 'avif', 'tif', 'tiff', 'svg', 'bmp'];

const EXTENSION_AT_END = new RegExp(`\\.(?:${IMAGE_EXTENSIONS.join('|')})$`, 'i');

/** Whether a path or URL names an image file; a query or fragment after the name does not count against it. */
export function isImagePath(value: string): boolean {
  if (/^data:image\//i.test(value)) return true;
  const path = value.replace(/[?#].*$/s, '');
  return EXTENSION_AT_END.test(path);
}

/*
 * Outside markdown, HTML and JSX we do not know the syntax, so we look for the three shapes a path to an image
 * takes in the files people hover in: CSS `url(...)`, a quoted string (imports, JSON, YAML, TOML), and a bare
 * word (`image: ./a.png`, `icon=assets/b.svg`). Only the content is returned, never the quotes.
 */
const CSS_URL = /url\(\s*(?:"([^"\n]*)"|'([^'\n]*)'|([^\s"'()]*))\s*\)/dgi;
const QUOTED = /"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|`((?:[^`\\\n]|\\.)*)`/dg;
const BARE = /[^\s"'`()<>[\]{},;=|*]+/g;

/** Every span in `text` that names an image file, in document order. */
export function findImagePaths(text: string): ImagePath[] {
  const found = new Map<number, ImagePath>();
  for (const span of candidateSpans(text, 0)) {
    if (!found.has(span.start) && isImagePath(span.value)) found.set(span.start, toImagePath(span));
  }
  return [...found.values()].sort((a, b) => a.range.start - b.range.start);
}

/** How far either side of the cursor a path is looked for: a minified bundle or a log may be one enormous line. */
const LINE_WINDOW = 4096;

/** The image path under the cursor, if any: the innermost candidate that contains `offset` (ends included). */
export function imagePathAt(text: string, offset: number): ImagePath | undefined {
  if (offset < 0 || offset > text.length) return undefined;
  const from = Math.max(0, offset - LINE_WINDOW);
  const to = Math.min(text.length, offset + LINE_WINDOW);
  const start = from + text.slice(from, offset).lastIndexOf('\n') + 1;
  const newline = text.slice(offset, to).indexOf('\n');
  const line = text.slice(start, newline < 0 ? to : offset + newline);
  let best: Span | undefined;
  for (const span of candidateSpans(line, start)) {
    if (span.start > offset || offset > span.end || !isImagePath(span.value)) continue;
    if (!best || span.end - span.start < best.end - best.start) best = span;
  }
  return best && toImagePath(best);
}

interface Span {
  start: number;
  end: number;
  value: string;
}

function* candidateSpans(text: string, base: number): Generator<Span> {
  for (const pattern of [CSS_URL, QUOTED]) {
    for (const match of text.matchAll(pattern)) {
      const group = match.findIndex((g, i) => i > 0 && g !== undefined);
      const at = match.indices?.[group];
      if (group < 0 || !at) continue;
      yield { start: base + at[0], end: base + at[1], value: match[group] };
    }
  }
  for (const match of text.matchAll(BARE)) {
    // A bare word ending in `:` or `.` is prose punctuation, not part of the path.
    const value = match[0].replace(/[.:]+$/, '');
    yield { start: base + match.index, end: base + match.index + value.length, value };
  }
}

function toImagePath(span: Span): ImagePath {
  const range: OffsetRange = { start: span.start, end: span.end };
  return { kind: 'path', range, destination: percentDecode(span.value), url: span.value, destinationRange: range };
}
