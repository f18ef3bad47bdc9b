import { parse, type ParserPlugin } from '@babel/parser';
import type * as t from '@babel/types';
import { isDecorative } from './html-images';
import { percentDecode, type AltSyntax, type ImageElement, type OffsetRange } from './image-reference';
import { isImagePath } from './path-strings';

/**
 * `<img>` elements in JavaScript/TypeScript with JSX, and the `Image` component when it is imported from
 * `next/image` (it requires `alt` the same way). `src={logo}` follows `import logo from './logo.png'`.
 */
export function findJsxImages(text: string, typescript: boolean): ImageElement[] {
  const plugins: ParserPlugin[] = typescript ? ['jsx', 'typescript'] : ['jsx'];
  let program: t.File;
  try {
    program = parse(text, {
      sourceType: 'module',
      plugins,
      errorRecovery: true,
      allowReturnOutsideFunction: true,
      allowAwaitOutsideFunction: true,
      allowImportExportEverywhere: true,
    });
  } catch {
    return []; // a file in the middle of being typed: no images until it parses again
  }

  const imageImports = new Map<string, string>();
  const imageComponents = new Set(['img']);
  for (const statement of program.program.body) {
    if (statement.type !== 'ImportDeclaration') continue;
    for (const specifier of statement.specifiers) {
      if (specifier.type === 'ImportSpecifier') continue;
      if (statement.source.value === 'next/image') imageComponents.add(specifier.local.name);
      else if (isImagePath(statement.source.value)) imageImports.set(specifier.local.name, statement.source.value);
    }
  }

  const images: ImageElement[] = [];
  walk(program, (node) => {
    if (node.type !== 'JSXElement') return;
    const name = node.openingElement.name;
    if (name.type === 'JSXIdentifier' && imageComponents.has(name.name)) {
      const image = imageOf(node, name, text, imageImports);
      if (image) images.push(image);
    }
  });
  return images.sort((a, b) => a.range.start - b.range.start);
}

type AttributeValue =
  | { kind: 'string'; value: string; range: OffsetRange; syntax: AltSyntax }
  | { kind: 'dynamic'; range: OffsetRange; expression: t.Expression | undefined };

function imageOf(element: t.JSXElement, name: t.JSXIdentifier, text: string, imageImports: Map<string, string>): ImageElement | undefined {
  if (!hasRange(element) || !hasRange(name)) return undefined;
  // Props are an object literal: of duplicates the last counts, and a spread after a prop may replace it.
  const attributes = new Map<string, AttributeValue & { index: number }>();
  let lastSpread: { range: OffsetRange; index: number } | undefined;
  element.openingElement.attributes.forEach((attribute, index) => {
    if (attribute.type === 'JSXSpreadAttribute') {
      if (hasRange(attribute)) lastSpread = { range: { start: attribute.start, end: attribute.end }, index };
      return;
    }
    if (attribute.name.type !== 'JSXIdentifier') return;
    const value = attributeValue(attribute, text);
    if (value) attributes.set(attribute.name.name, { ...value, index });
  });

  const alt = attributes.get('alt');
  const spreadAfterAlt = lastSpread !== undefined && (!alt || lastSpread.index > alt.index);
  let altValue: string | undefined;
  let altRange: OffsetRange;
  let altSyntax: AltSyntax;
  if (alt?.kind === 'string' && !spreadAfterAlt) {
    ({ value: altValue, range: altRange, syntax: altSyntax } = alt);
  } else if (alt || lastSpread) {
    // `alt={caption}`, or `{...props}` after it (or instead of it) that may carry another: present as far as
    // we can tell, and not ours to edit, since an edit there might not be what React renders.
    altRange = spreadAfterAlt ? lastSpread!.range : alt!.range;
    altSyntax = { kind: 'dynamic' };
  } else {
    altRange = { start: name.end, end: name.end };
    altSyntax = { kind: 'attribute', quote: '"', before: ' alt="', after: '"' };
  }

  const src = attributes.get('src');
  const source = src ? sourceOf(src, imageImports) : undefined;
  const title = attributes.get('title');

  return {
    kind: 'jsx',
    range: { start: element.start, end: element.end },
    destination: percentDecode(source ?? ''),
    url: source ?? '',
    destinationRange: src?.range,
    ...(title?.kind === 'string' ? { title: title.value } : {}),
    alt: altValue,
    altRange,
    altSyntax,
    decorative: isDecorative(altValue, staticText(attributes.get('aria-hidden')), staticText(attributes.get('role'))),
  };
}

function attributeValue(attribute: t.JSXAttribute, text: string): AttributeValue | undefined {
  const value = attribute.value;
  if (!value) {
    // `<img alt />` is `alt={true}`: present, meaningless, not ours to rewrite.
    return hasRange(attribute) ? { kind: 'dynamic', range: { start: attribute.end, end: attribute.end }, expression: undefined } : undefined;
  }
  if (!hasRange(value)) return undefined;
  if (value.type === 'StringLiteral') {
    const quote = text[value.start] === "'" ? "'" : '"';
    return { kind: 'string', value: value.value, range: inner(value), syntax: { kind: 'attribute', quote, before: '', after: '' } };
  }
  if (value.type !== 'JSXExpressionContainer' || value.expression.type === 'JSXEmptyExpression') {
    return { kind: 'dynamic', range: { start: value.start, end: value.end }, expression: undefined };
  }
  const expression = value.expression;
  if (hasRange(expression)) {
    if (expression.type === 'StringLiteral') {
      const quote = text[expression.start] === "'" ? "'" : '"';
      return { kind: 'string', value: expression.value, range: inner(expression), syntax: { kind: 'js-string', quote } };
    }
    if (expression.type === 'TemplateLiteral' && expression.expressions.length === 0) {
      const cooked = expression.quasis[0]?.value.cooked;
      if (cooked != null) return { kind: 'string', value: cooked, range: inner(expression), syntax: { kind: 'js-string', quote: '`' } };
    }
    return { kind: 'dynamic', range: { start: expression.start, end: expression.end }, expression };
  }
  return undefined;
}

/** `src={logo}` with `import logo from './logo.png'`, or `src={require('./logo.png')}`. */
function sourceOf(src: AttributeValue, imageImports: Map<string, string>): string | undefined {
  if (src.kind === 'string') return src.value;
  const expression = src.expression;
  if (expression?.type === 'Identifier') return imageImports.get(expression.name);
  if (
    expression?.type === 'CallExpression' &&
    expression.callee.type === 'Identifier' &&
    expression.callee.name === 'require' &&
    expression.arguments[0]?.type === 'StringLiteral'
  ) {
    return expression.arguments[0].value;
  }
  return undefined;
}

/** What an attribute says when it is written out (`aria-hidden="true"` or `aria-hidden={true}`). */
function staticText(value: AttributeValue | undefined): string | undefined {
  if (!value) return undefined;
  if (value.kind === 'string') return value.value;
  const expression = value.expression;
  return expression?.type === 'BooleanLiteral' ? String(expression.value) : undefined;
}

type Ranged<T> = T & { start: number; end: number };

function hasRange<T extends t.Node>(node: T): node is Ranged<T> {
  return typeof node.start === 'number' && typeof node.end === 'number';
}

function inner(node: { start: number; end: number }): OffsetRange {
  return { start: node.start + 1, end: node.end - 1 };
}

const SKIPPED_KEYS = new Set(['loc', 'extra', 'leadingComments', 'trailingComments', 'innerComments', 'comments', 'tokens', 'errors']);

function walk(node: t.Node, onNode: (node: t.Node) => void): void {
  onNode(node);
  for (const key of Object.keys(node)) {
    if (SKIPPED_KEYS.has(key)) continue;
    const value = (node as unknown as Record<string, unknown>)[key];
    if (Array.isArray(value)) {
      for (const item of value) if (isNode(item)) walk(item, onNode);
    } else if (isNode(value)) {
      walk(value, onNode);
    }
  }
}

function isNode(value: unknown): value is t.Node {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}
