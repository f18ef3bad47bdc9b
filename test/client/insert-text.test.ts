import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { imageMarkup, imageMarkupLanguage, isImageFileName, relativeImagePath } from '../../client/src/insert-text';
import { findImageElements } from '../../server/src/features/images/find-images';

describe('inserting an image with its caption', () => {
  it('writes markdown that reads back as the same alt text and path', () => {
    const alt = 'a [cat] on a *mat* with `code` | pipes';
    const markup = imageMarkup('markdown', 'images/my cat (1).png', alt);
    const [image] = findImageElements(markup, 'markdown');
    assert.equal(image.alt, alt);
    assert.equal(image.destination, 'images/my cat (1).png');
  });

  it('writes HTML and JSX whose alt reads back unchanged', () => {
    const alt = 'a "quoted" <b> & co';
    const [html] = findImageElements(imageMarkup('html', 'a.png', alt), 'html');
    assert.equal(html.alt, alt);
    assert.equal(html.destination, 'a.png');
    const [jsx] = findImageElements(`const x = ${imageMarkup('jsx', 'a.png', 'a dog')};`, 'typescriptreact');
    assert.equal(jsx.alt, 'a dog');
  });

  it('knows where images with alt text can be written', () => {
    assert.equal(imageMarkupLanguage('markdown'), 'markdown');
    assert.equal(imageMarkupLanguage('typescriptreact'), 'jsx');
    assert.equal(imageMarkupLanguage('css'), undefined);
  });

  it('recognizes image files by extension, in any case, ignoring a query', () => {
    for (const name of ['a.png', 'B.JPG', 'c.jpeg', 'd.webp', 'e.avif', 'f.tif', 'g.tiff', 'h.svg', 'i.bmp', 'j.gif', 'k.png?v=2']) {
      assert.ok(isImageFileName(name), name);
    }
    for (const name of ['a.txt', 'png', 'a.png.md', 'a.svgz']) assert.ok(!isImageFileName(name), name);
  });

  it('writes relative paths with forward slashes', () => {
    assert.equal(relativeImagePath('/w/docs', '/w/img/a.png', path.posix.relative), '../img/a.png');
    assert.equal(relativeImagePath('C:\\w\\docs', 'C:\\w\\img\\a.png', path.win32.relative), '../img/a.png');
  });
});
