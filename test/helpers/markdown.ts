// The project's markdown documents read as GitHub renders them: their links, their headings' anchors, their sections.
// Parsed with mdast (the parser the server uses for image references), not with regular expressions, so code spans
// and blocks are never taken for links.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Heading, Nodes, Root } from 'mdast';
import { fromMarkdown } from 'mdast-util-from-markdown';
import { repoRoot } from './paths';

export interface MarkdownDoc {
  /** Relative to the repository, with `/`. */
  file: string;
  text: string;
  root: Root;
}

export function readDoc(file: string): MarkdownDoc {
  return parseDoc(file, fs.readFileSync(path.join(repoRoot, file), 'utf8'));
}

/** `text` as a document named `file` (a name for messages, and for resolving its relative links). */
export function parseDoc(file: string, text: string): MarkdownDoc {
  return { file, text, root: fromMarkdown(text) };
}

/** README.md, CONTRIBUTING.md, CHANGELOG.md and docs/*.md: the documents a reader follows links between. */
export function repositoryDocs(): MarkdownDoc[] {
  const docs = fs.readdirSync(path.join(repoRoot, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`);
  return ['README.md', 'CONTRIBUTING.md', 'CHANGELOG.md', ...docs.sort()].map(readDoc);
}

function visit(node: Nodes, each: (node: Nodes) => void): void {
  each(node);
  if ('children' in node) for (const child of node.children) visit(child, each);
}

export interface DocLink {
  url: string;
  line: number;
  kind: 'link' | 'image' | 'definition';
}

/** Every destination a reader can follow: inline links and images, and link reference definitions. */
export function linksOf(doc: MarkdownDoc): DocLink[] {
  const links: DocLink[] = [];
  visit(doc.root, (node) => {
    if (node.type === 'link' || node.type === 'image' || node.type === 'definition') {
      links.push({ url: node.url, line: node.position?.start.line ?? 0, kind: node.type });
    }
  });
  return links;
}

/** The text a heading shows: its words, code spans included, without the markup. */
function textOf(node: Nodes): string {
  if (node.type === 'text' || node.type === 'inlineCode') return node.value;
  return 'children' in node ? node.children.map(textOf).join('') : '';
}

export function headings(doc: MarkdownDoc): { depth: number; text: string }[] {
  const found: { depth: number; text: string }[] = [];
  visit(doc.root, (node) => {
    if (node.type === 'heading') found.push({ depth: (node as Heading).depth, text: textOf(node) });
  });
  return found;
}

/**
 * The anchors GitHub gives a document's headings (github-slugger's rules): lower case, everything but letters,
 * numbers, marks, `_`, `-` and spaces removed, spaces made `-`; a repeated anchor gets `-1`, `-2`, … .
 */
export function anchorsOf(doc: MarkdownDoc): Set<string> {
  const anchors = new Set<string>();
  for (const { text } of headings(doc)) {
    const slug = text.toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '').replace(/ /g, '-');
    let unique = slug;
    for (let n = 1; anchors.has(unique); n++) unique = `${slug}-${n}`;
    anchors.add(unique);
  }
  return anchors;
}

/** The source text from the heading `## title` (any depth) to the next heading of the same or a higher level. */
export function sectionOf(doc: MarkdownDoc, title: string): string {
  const all: { depth: number; text: string; offset: number }[] = [];
  visit(doc.root, (node) => {
    if (node.type === 'heading') all.push({ depth: node.depth, text: textOf(node), offset: node.position!.start.offset! });
  });
  const at = all.findIndex((h) => h.text === title);
  if (at < 0) throw new Error(`${doc.file} has no heading "${title}"`);
  const next = all.slice(at + 1).find((h) => h.depth <= all[at].depth);
  return doc.text.slice(all[at].offset, next?.offset ?? doc.text.length);
}

/** The first fenced code block of `lang` in `markdown`, as written. */
export function codeBlock(markdown: string, lang: string): string {
  let found: string | undefined;
  visit(fromMarkdown(markdown), (node) => {
    if (found === undefined && node.type === 'code' && node.lang === lang) found = node.value;
  });
  if (found === undefined) throw new Error(`no \`\`\`${lang} block`);
  return found;
}

/** The rows of the first table in `markdown` whose header starts with `firstColumn`, as cells of source text. */
export function tableRows(markdown: string, firstColumn: string): string[][] {
  const lines = markdown.split('\n');
  const header = lines.findIndex((l) => new RegExp(`^\\|\\s*${firstColumn}\\s*\\|`).test(l));
  if (header < 0) throw new Error(`no table headed "${firstColumn}"`);
  const rows: string[][] = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(line.slice(1, line.endsWith('|') ? -1 : undefined).split('|').map((c) => c.trim()));
  }
  return rows;
}
