// Text the extension writes into documents: an image element with its alt text, for "Insert Image Here".
// The escaping is the server's own (alt-edit.ts), so what one side writes the other reads back unchanged.
import { escapeAltText } from '../../server/src/features/alt-text/alt-edit';
import { IMAGE_EXTENSIONS } from '../../server/src/features/images/path-strings';

/** Whether a path or URI names an image the extension offers its commands for. */
export function isImageFileName(name: string): boolean {
  const clean = name.replace(/[?#].*$/s, '').toLowerCase();
  return IMAGE_EXTENSIONS.some((extension) => clean.endsWith(`.${extension}`));
}

/** Languages where an image can be written with alt text. */
export type ImageMarkupLanguage = 'markdown' | 'html' | 'jsx';

export function imageMarkupLanguage(languageId: string): ImageMarkupLanguage | undefined {
  switch (languageId) {
    case 'markdown':
      return 'markdown';
    case 'html':
      return 'html';
    case 'javascriptreact':
    case 'typescriptreact':
      return 'jsx';
    default:
      return undefined;
  }
}

/**
 * An image element for `src` (a path relative to the document, with `/` separators, or a URL) with `alt`.
 * Markdown destinations with spaces or parentheses are written in angle brackets, as CommonMark allows.
 */
export function imageMarkup(language: ImageMarkupLanguage, src: string, alt: string): string {
  switch (language) {
    case 'markdown': {
      const destination = /[\s()<>]/.test(src) ? `<${src.replace(/[<>]/g, (c) => encodeURIComponent(c))}>` : src;
      return `![${escapeAltText(alt, { kind: 'markdown' })}](${destination})`;
    }
    case 'html':
      return `<img src="${escapeHtmlAttribute(src)}" alt="${escapeAltText(alt, { kind: 'attribute', quote: '"', before: '', after: '' })}">`;
    case 'jsx':
      return `<img src="${escapeHtmlAttribute(src)}" alt="${escapeAltText(alt, { kind: 'attribute', quote: '"', before: '', after: '' })}" />`;
  }
}

function escapeHtmlAttribute(value: string): string {
  return value.replace(/[&"<>]/g, (c) => ({ '&': '&amp;', '"': '&quot;', '<': '&lt;', '>': '&gt;' })[c] as string);
}

/** `to` relative to the folder `fromDir`, with `/` separators and `./` kept off, as documents write paths. */
export function relativeImagePath(fromDir: string, to: string, relative: (from: string, to: string) => string): string {
  return relative(fromDir, to).split(/[\\/]/).join('/');
}
