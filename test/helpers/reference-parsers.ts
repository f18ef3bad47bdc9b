// Independent readings of markdown, HTML and JSX, to hold our image finding against: commonmark.js (the
// CommonMark reference implementation), htmlparser2, and TypeScript's own JSX transform.
import * as commonmark from 'commonmark';
import { DomUtils, parseDocument } from 'htmlparser2';
import ts from 'typescript';

export interface ReferenceImage {
  kind: 'markdown' | 'html';
  url: string;
  alt: string | undefined;
}

/** An element's text as CommonMark renders it into an image's alt attribute. */
function altOf(node: commonmark.Node): string {
  let alt = '';
  const walker = node.walker();
  walker.next(); // the image itself
  for (let event = walker.next(); event; event = walker.next()) {
    if (!event.entering) continue;
    const child = event.node;
    if (child.type === 'softbreak' || child.type === 'linebreak') alt += '\n';
    else if (child.literal !== null && child.type !== 'image') alt += child.literal;
  }
  return alt;
}

/**
 * The images a markdown document renders, in order: CommonMark's, and the `<img>` elements of its raw HTML
 * (htmlparser2 reads those), leaving out HTML inside an image's alt text, which is text there.
 */
export function commonmarkImages(markdown: string): ReferenceImage[] {
  const images: ReferenceImage[] = [];
  const walker = new commonmark.Parser().parse(markdown).walker();
  let insideImage = 0;
  for (let event = walker.next(); event; event = walker.next()) {
    const node = event.node;
    if (node.type === 'image') {
      if (event.entering) {
        if (insideImage === 0) images.push({ kind: 'markdown', url: node.destination ?? '', alt: altOf(node) });
        insideImage++;
      } else {
        insideImage--;
      }
    } else if (event.entering && insideImage === 0 && (node.type === 'html_inline' || node.type === 'html_block')) {
      images.push(...htmlparser2Images(node.literal ?? ''));
    }
  }
  return images;
}

export function htmlparser2Images(html: string): ReferenceImage[] {
  return DomUtils.getElementsByTagName('img', parseDocument(html)).map((img) => ({ kind: 'html', url: img.attribs.src ?? '', alt: img.attribs.alt }));
}

/**
 * The `alt` prop React gets for the first JSX element of `source`, as TypeScript compiles it, with `props`
 * as the value of any `{...props}` spread.
 */
export function reactAltProp(source: string, props: Record<string, unknown>): unknown {
  const { outputText } = ts.transpileModule(source, { compilerOptions: { jsx: ts.JsxEmit.React, module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2020 } });
  let rendered: Record<string, unknown> | null | undefined;
  const React = { createElement: (_type: unknown, elementProps: Record<string, unknown> | null) => (rendered ??= elementProps) };
  new Function('React', 'props', 'title', outputText)(React, props, 'a title');
  return rendered?.alt;
}
