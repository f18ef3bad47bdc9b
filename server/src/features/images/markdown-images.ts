import { fromMarkdown } from 'mdast-util-from-markdown';
import type { Extension as MdastExtension } from 'mdast-util-from-markdown';
import { frontmatterFromMarkdown } from 'mdast-util-frontmatter';
import { frontmatter } from 'micromark-extension-frontmatter';
import type { Definition, Image, ImageReference as MdastImageReference, Nodes } from 'mdast';
import { findHtmlFragmentImages, type OffsetMap } from './html-images';
import { percentDecode, type ImageElement, type OffsetRange } from './image-reference';

/**
 * A hard line break (`\\` or two spaces before a line ending) as the text "\n", which is what CommonMark puts
 * in alt text; mdast's own break node has no text, so `a\\` + newline + `b` would read "ab". Nothing else here
 * looks at break nodes. The line ending after the break is still dropped, as for a break node.
 */
const HARD_BREAKS_AS_TEXT: MdastExtension = {
  enter: {
    hardBreakEscape(token) {
      this.enter({ type: 'text', value: '\n' }, token);
    },
    hardBreakTrailing(token) {
      this.enter({ type: 'text', value: '\n' }, token);
    },
  },
};

/** Alt text with CRLF line endings read as CommonMark reads them: one line feed. */
function altOf(node: Image | MdastImageReference): string {
  return (node.alt ?? '').replace(/\r\n?/g, '\n');
}

/** YAML (`---`) and TOML (`+++`) front matter: read by site generators, never rendered, so never checked. */
const FRONT_MATTER: Array<'yaml' | 'toml'> = ['yaml', 'toml'];

/**
 * Images in a markdown document: inline `![alt](dest "title")`, reference-style `![alt][ref]`, `![alt][]`,
 * `![alt]` with their definitions, and `<img>` in HTML blocks and inline HTML. mdast gives the decoded values
 * (alt as a screen reader reads it, destination, title, which definition a label matches, as CommonMark says);
 * micromark's tokens, observed while mdast is built, give the spans mdast does not keep: the alt text between
 * the brackets, the destination, the `[ref]`. Code spans and blocks never produce these tokens, nor does
 * front matter; HTML inside an image's alt text is part of that text, not an image.
 */
export function findMarkdownImages(text: string): ImageElement[] {
  // micromark drops a leading byte order mark and counts from after it.
  const shift = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const source = shift ? text.slice(1) : text;
  const spans = new SpanRecorder(source);
  let tree: Nodes;
  try {
    tree = fromMarkdown(source, {
      extensions: [frontmatter(FRONT_MATTER)],
      mdastExtensions: [frontmatterFromMarkdown(FRONT_MATTER), HARD_BREAKS_AS_TEXT, spans.extension()],
    });
  } catch {
    return []; // micromark accepts any input; this keeps a bug in it from taking diagnostics down
  }

  const definitions = new Map<string, Definition>();
  const images: Array<Image | MdastImageReference> = [];
  walk(tree, (node) => {
    if (node.type === 'definition' && !definitions.has(node.identifier)) definitions.set(node.identifier, node);
    else if (node.type === 'image' || node.type === 'imageReference') images.push(node);
  });

  const found: ImageElement[] = [];
  for (const node of images) {
    const image = node.type === 'image' ? inlineImage(node, spans) : referenceImage(node, spans, definitions, source);
    if (image) found.push(image);
  }
  for (const chunk of spans.htmlChunks) {
    if (/<im/i.test(chunk.html)) found.push(...findHtmlFragmentImages(chunk.html, chunk.toSource));
  }
  found.sort((a, b) => a.range.start - b.range.start);
  return shift ? found.map((image) => shiftImage(image, shift)) : found;
}

function inlineImage(node: Image, spans: SpanRecorder): ImageElement | undefined {
  const range = rangeOf(node);
  const link = range && spans.links.get(range.start);
  if (!range || !link?.labelText) return undefined;
  return {
    kind: 'markdown-inline',
    range,
    destination: percentDecode(node.url),
    url: node.url,
    destinationRange: link.destination,
    ...(node.title != null ? { title: node.title } : {}),
    alt: altOf(node),
    altRange: link.labelText,
    altSyntax: { kind: 'markdown' },
    decorative: false,
  };
}

function referenceImage(
  node: MdastImageReference,
  spans: SpanRecorder,
  definitions: Map<string, Definition>,
  source: string,
): ImageElement | undefined {
  const range = rangeOf(node);
  const link = range && spans.links.get(range.start);
  const definition = definitions.get(node.identifier);
  const definitionRange = definition && rangeOf(definition);
  if (!range || !link?.labelText || !definition || !definitionRange) return undefined;
  const labelRange =
    node.referenceType === 'shortcut'
      ? { start: link.labelText.start - 1, end: link.labelText.end + 1 }
      : link.reference;
  if (!labelRange) return undefined;
  return {
    kind: 'markdown-reference',
    range,
    destination: percentDecode(definition.url),
    url: definition.url,
    destinationRange: spans.definitionDestinations.get(definitionRange.start),
    ...(definition.title != null ? { title: definition.title } : {}),
    alt: altOf(node),
    altRange: link.labelText,
    altSyntax: { kind: 'markdown' },
    decorative: false,
    reference: {
      type: node.referenceType,
      label: node.referenceType === 'full' ? source.slice(labelRange.start + 1, labelRange.end - 1) : source.slice(link.labelText.start, link.labelText.end),
      identifier: node.identifier,
      labelRange,
      definitionRange,
    },
  };
}

interface LinkSpans {
  labelText?: OffsetRange;
  destination?: OffsetRange;
  reference?: OffsetRange;
}

interface HtmlChunk {
  html: string;
  toSource: OffsetMap;
}

/** Listens to micromark's tokens as mdast is built and keeps the spans of the parts of images. */
class SpanRecorder {
  /** Images by their start offset, which is also where mdast's node starts. */
  readonly links = new Map<number, LinkSpans>();
  readonly definitionDestinations = new Map<number, OffsetRange>();
  readonly htmlChunks: HtmlChunk[] = [];
  private readonly open: Array<{ start: number; image: boolean; spans: LinkSpans }> = [];
  private definition: { start: number; destination?: OffsetRange } | undefined;
  private html: Array<{ start: number; end: number }> | undefined;

  constructor(private readonly source: string) {}

  extension(): MdastExtension {
    const recorder = this;
    return {
      beforeEnter(token) {
        recorder.enter(token.type, { start: token.start.offset, end: token.end.offset });
      },
      afterExit(token) {
        recorder.exit(token.type);
      },
    };
  }

  private enter(type: string, span: OffsetRange): void {
    // Labels nest (a link inside an image's alt); each part belongs to the innermost open link or image,
    // and only its first occurrence, since nested ones have been closed before ours come.
    const top = this.open[this.open.length - 1]?.spans;
    switch (type) {
      case 'image':
      case 'link':
        this.open.push({ start: span.start, image: type === 'image', spans: {} });
        break;
      case 'labelText':
        if (top && !top.labelText) top.labelText = span;
        break;
      case 'resourceDestinationString':
        if (top && !top.destination) top.destination = span;
        break;
      case 'reference':
        if (top && !top.reference) top.reference = span;
        break;
      case 'definition':
        this.definition = { start: span.start };
        break;
      case 'definitionDestinationString':
        if (this.definition) this.definition.destination = span;
        break;
      case 'htmlFlow':
      case 'htmlText':
        // In an image's alt text, `<img>` is text a screen reader reads, not an image of its own.
        this.html = this.open.some((o) => o.image) ? undefined : [];
        break;
      case 'htmlFlowData':
      case 'htmlTextData':
        this.html?.push(span);
        break;
      case 'lineEnding':
        // The token can run on over the next line's container prefix (`> `); only the line break is HTML.
        if (this.html) {
          const breakLength = this.source.startsWith('\r\n', span.start) ? 2 : 1;
          this.html.push({ start: span.start, end: span.start + breakLength });
        }
        break;
    }
  }

  private exit(type: string): void {
    switch (type) {
      case 'image':
      case 'link': {
        const done = this.open.pop();
        if (done?.image) this.links.set(done.start, done.spans);
        break;
      }
      case 'definition':
        if (this.definition?.destination) this.definitionDestinations.set(this.definition.start, this.definition.destination);
        this.definition = undefined;
        break;
      case 'htmlFlow':
      case 'htmlText':
        if (this.html) this.htmlChunks.push(joinSegments(this.source, this.html));
        this.html = undefined;
        break;
    }
  }
}

/** The HTML as the parser sees it (container prefixes cut out), with the way back to source offsets. */
function joinSegments(source: string, segments: ReadonlyArray<OffsetRange>): HtmlChunk {
  const starts: number[] = [];
  let html = '';
  for (const segment of segments) {
    starts.push(html.length);
    html += source.slice(segment.start, segment.end);
  }
  const toSource: OffsetMap = (offset, side) => {
    // An offset on the seam between two segments is the end of the first or the start of the second.
    for (let i = segments.length - 1; i >= 0; i--) {
      const local = offset - starts[i];
      const length = segments[i].end - segments[i].start;
      if (local > 0 || (local === 0 && (side === 'start' || i === 0))) {
        if (local <= length) return segments[i].start + local;
      }
    }
    return segments.length ? segments[segments.length - 1].end : 0;
  };
  return { html, toSource };
}

function rangeOf(node: { position?: { start: { offset?: number }; end: { offset?: number } } }): OffsetRange | undefined {
  const start = node.position?.start.offset;
  const end = node.position?.end.offset;
  return start === undefined || end === undefined ? undefined : { start, end };
}

function walk(node: Nodes, onNode: (node: Nodes) => void): void {
  onNode(node);
  if ('children' in node) for (const child of node.children) walk(child, onNode);
}

function shiftImage(image: ImageElement, by: number): ImageElement {
  const move = (r: OffsetRange): OffsetRange => ({ start: r.start + by, end: r.end + by });
  return {
    ...image,
    range: move(image.range),
    altRange: move(image.altRange),
    destinationRange: image.destinationRange && move(image.destinationRange),
    ...(image.reference
      ? { reference: { ...image.reference, labelRange: move(image.reference.labelRange), definitionRange: move(image.reference.definitionRange) } }
      : {}),
  };
}
