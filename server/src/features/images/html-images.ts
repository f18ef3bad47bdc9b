import { parse, parseFragment, type DefaultTreeAdapterTypes, type Token } from 'parse5';
import { percentDecode, type AltSyntax, type ImageElement, type OffsetRange } from './image-reference';

type Node = DefaultTreeAdapterTypes.Node;
type Element = DefaultTreeAdapterTypes.Element;
type Location = Token.Location;

/**
 * Maps offsets in the HTML that was parsed back to the document. Markdown hands over HTML with container
 * prefixes (`> `, list indentation) cut out, so its offsets are not a constant shift.
 */
export type OffsetMap = (offset: number, side: 'start' | 'end') => number;

const identity: OffsetMap = (offset) => offset;

/** `<img>` elements of an HTML file. */
export function findHtmlImages(text: string): ImageElement[] {
  return imagesIn(text, 'document', identity);
}

/**
 * `<img>` elements in a piece of HTML that sits inside another document (markdown's HTML blocks and inline
 * tags); `toSource` turns offsets in `html` into offsets in that document.
 */
export function findHtmlFragmentImages(html: string, toSource: OffsetMap): ImageElement[] {
  return imagesIn(html, 'fragment', toSource);
}

function imagesIn(html: string, mode: 'document' | 'fragment', toSource: OffsetMap): ImageElement[] {
  // Without scripting, <noscript> content is parsed as elements: its images are real for readers without JS.
  const options = { sourceCodeLocationInfo: true, scriptingEnabled: false } as const;
  let root: Node;
  try {
    root = mode === 'document' ? parse(html, options) : parseFragment(html, options);
  } catch {
    return []; // parse5 recovers from any HTML; this only guards against a bug in it taking hover down
  }
  const images: ImageElement[] = [];
  visit(root, (element) => {
    const image = imageOf(element, html, toSource);
    if (image) images.push(image);
  });
  return images;
}

function visit(node: Node, onElement: (element: Element) => void): void {
  if ('tagName' in node) onElement(node);
  if ('childNodes' in node) for (const child of node.childNodes) visit(child, onElement);
  // <template> keeps its children in a separate fragment.
  if ('content' in node && node.content) visit(node.content, onElement);
}

function imageOf(element: Element, html: string, toSource: OffsetMap): ImageElement | undefined {
  const location = element.sourceCodeLocation;
  // The parser renames <image> to img; neither kind of element without a start tag in the source is ours.
  if (element.tagName !== 'img' || element.namespaceURI !== 'http://www.w3.org/1999/xhtml') return undefined;
  const tag = location?.startTag;
  if (!location || !tag) return undefined;
  const attrs = new Map(element.attrs.map((a) => [a.name, a.value]));
  const attrLocations = location.attrs ?? {};
  const mapRange = (r: OffsetRange): OffsetRange => ({ start: toSource(r.start, 'start'), end: toSource(r.end, 'end') });

  const src = attrs.get('src');
  const srcLocation = attrLocations.src;
  const destinationRange = src !== undefined && srcLocation ? mapRange(attributeValue(html, srcLocation).range) : undefined;

  const alt = attrs.get('alt');
  const altLocation = attrLocations.alt;
  let altRange: OffsetRange;
  let altSyntax: AltSyntax;
  if (alt !== undefined && altLocation) {
    const value = attributeValue(html, altLocation);
    altRange = mapRange(value.range);
    altSyntax = value.syntax;
  } else {
    const afterName = tag.startOffset + 1 + tagNameLength(html, tag.startOffset + 1);
    altRange = mapRange({ start: afterName, end: afterName });
    altSyntax = { kind: 'attribute', quote: '"', before: ' alt="', after: '"' };
  }

  return {
    kind: 'html',
    range: mapRange({ start: tag.startOffset, end: tag.endOffset }),
    destination: percentDecode(src ?? ''),
    url: src ?? '',
    destinationRange,
    ...(attrs.has('title') ? { title: attrs.get('title') } : {}),
    alt,
    altRange,
    altSyntax,
    decorative: isDecorative(alt, attrs.get('aria-hidden'), attrs.get('role')),
  };
}

export function isDecorative(alt: string | undefined, ariaHidden: string | undefined, role: string | undefined): boolean {
  if (alt === '') return true;
  if (ariaHidden?.trim().toLowerCase() === 'true') return true;
  const roles = (role ?? '').toLowerCase().split(/\s+/);
  return roles.includes('presentation') || roles.includes('none');
}

function tagNameLength(html: string, from: number): number {
  let end = from;
  while (end < html.length && !/[\s/>]/.test(html[end])) end++;
  return end - from;
}

/**
 * The value's span inside `name="value"`, and how to write a new one there. parse5 locates the whole
 * attribute; the value's own offsets we read off the source, which parse5 has already tokenized for us.
 */
function attributeValue(html: string, location: Location): { range: OffsetRange; syntax: AltSyntax } {
  const text = html.slice(location.startOffset, location.endOffset);
  const equals = text.indexOf('=');
  if (equals < 0) {
    // A bare `alt` is the empty string; writing a value means adding `="…"`.
    const at = location.endOffset;
    return { range: { start: at, end: at }, syntax: { kind: 'attribute', quote: '"', before: '="', after: '"' } };
  }
  let i = equals + 1;
  while (i < text.length && /\s/.test(text[i])) i++;
  const quote = text[i];
  if (quote === '"' || quote === "'") {
    const start = location.startOffset + i + 1;
    return { range: { start, end: location.endOffset - 1 }, syntax: { kind: 'attribute', quote, before: '', after: '' } };
  }
  // Unquoted: a new value may contain spaces, so it gets quotes.
  return {
    range: { start: location.startOffset + i, end: location.endOffset },
    syntax: { kind: 'attribute', quote: '"', before: '"', after: '"' },
  };
}
