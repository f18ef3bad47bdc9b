import { findHtmlImages } from './html-images';
import { contains, type ImageElement, type ImageReference } from './image-reference';
import { findJsxImages } from './jsx-images';
import { findMarkdownImages } from './markdown-images';
import { findImagePaths, imagePathAt } from './path-strings';

export * from './image-reference';
export { imagePathAt, findImagePaths, isImagePath, IMAGE_EXTENSIONS } from './path-strings';

/** Which finder reads a document, by its LSP language id. */
export type ImageSyntax = 'markdown' | 'html' | 'jsx' | 'tsx' | 'other';

export function imageSyntaxOf(languageId: string): ImageSyntax {
  switch (languageId) {
    case 'markdown':
      return 'markdown';
    case 'html':
      return 'html';
    // Plain .js files in React projects hold JSX too; TypeScript's `.ts` cannot (`<T>x` is a cast there).
    case 'javascript':
    case 'javascriptreact':
      return 'jsx';
    case 'typescriptreact':
      return 'tsx';
    default:
      return 'other';
  }
}

/** Image elements whose alt text can be checked and edited; none in a language without them. */
export function findImageElements(text: string, languageId: string): ImageElement[] {
  switch (imageSyntaxOf(languageId)) {
    case 'markdown':
      return findMarkdownImages(text);
    case 'html':
      return findHtmlImages(text);
    case 'jsx':
      return findJsxImages(text, false);
    case 'tsx':
      return findJsxImages(text, true);
    case 'other':
      return [];
  }
}

/** Image elements in markdown, HTML and JSX; in any other language, the strings that are paths to images. */
export function findImages(text: string, languageId: string): ImageReference[] {
  return imageSyntaxOf(languageId) === 'other' ? findImagePaths(text) : findImageElements(text, languageId);
}

/**
 * The image under the cursor, for hover: the innermost image element at `offset` (also when the cursor is on
 * a reference definition's destination), else any path to an image file written there (a code span, a link,
 * front matter). `elements` are the document's image elements when they were found already.
 */
export function imageAt(
  text: string,
  languageId: string,
  offset: number,
  elements: readonly ImageElement[] = findImageElements(text, languageId),
): ImageReference | undefined {
  let best: ImageElement | undefined;
  for (const image of elements) {
    const hit = contains(image.range, offset) || (image.destinationRange !== undefined && contains(image.destinationRange, offset));
    if (hit && (!best || image.range.end - image.range.start < best.range.end - best.range.start)) best = image;
  }
  return best ?? imagePathAt(text, offset);
}
