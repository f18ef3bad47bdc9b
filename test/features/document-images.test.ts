// Finding images once per document version, off the main thread.
import { strict as assert } from 'node:assert';
import { after, describe, it } from 'node:test';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { DocumentImages } from '../../server/src/features/images/document-images';
import { findImageElements } from '../../server/src/features/images/find-images';
import { QUICK_LANE_CHARS, WorkerImageParser, type FindImageElements } from '../../server/src/features/images/image-parser';
import { bigMarkdown } from '../helpers/documents';

describe('document images', () => {
  const parser = new WorkerImageParser();
  after(() => parser.dispose());

  it('parses each version once, whoever asks, and never a version superseded before its parse began', async () => {
    const calls: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const find: FindImageElements = async (text, languageId, wanted) => {
      await gate;
      if (wanted && !wanted()) return undefined;
      calls.push(text);
      return { elements: findImageElements(text, languageId) };
    };
    const images = new DocumentImages(find);
    let live = TextDocument.create('file:///doc.md', 'markdown', 1, '![](a.png)\n');
    const first = [images.of(live), images.of(live), images.of(live)];
    // Typed twice before the first parse could start: only the latest version is parsed.
    live = TextDocument.update(live, [{ text: '![](a.png) ![](b.png)\n' }], 2);
    const second = images.of(live);
    live = TextDocument.update(live, [{ text: '![](a.png) ![](b.png) ![](c.png)\n' }], 3);
    const third = [images.of(live), images.of(live)];
    release();
    const results = await Promise.all([...first, second, ...third]);
    assert.deepEqual(calls, ['![](a.png) ![](b.png) ![](c.png)\n']);
    for (const parsed of results) {
      assert.equal(parsed.document.version, 3);
      assert.deepEqual(parsed.elements.map((e) => e.destination), ['a.png', 'b.png', 'c.png']);
    }
    // Asked again at the same version: the same result, no parse.
    assert.equal(await images.of(live), results[results.length - 1]);
    assert.equal(calls.length, 1);
  });

  it('finds what the finder finds, in a worker thread: the main thread keeps running while a megabyte parses', async () => {
    const text = bigMarkdown(1024 * 1024, 50);
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    let ticksWhenSmallDone = -1;
    try {
      const big = parser.find(text, 'markdown');
      // A README opened meanwhile is not queued behind the changelog.
      const small = parser.find('![](x.png)\n', 'markdown').then((found) => {
        ticksWhenSmallDone = ticks;
        return found?.elements;
      });
      const [bigElements, smallElements] = await Promise.all([big.then((found) => found?.elements), small]);
      assert.ok(text.length > QUICK_LANE_CHARS);
      assert.deepEqual(bigElements, findImageElements(text, 'markdown'));
      assert.equal(bigElements!.length, 50);
      assert.deepEqual(smallElements!.map((e) => e.destination), ['x.png']);
      // The timer ran while the big document was being parsed: nothing held the main thread.
      assert.ok(ticks > ticksWhenSmallDone && ticksWhenSmallDone >= 0, `ticks ${ticks}, small done at ${ticksWhenSmallDone}`);
    } finally {
      clearInterval(ticker);
    }
  });
});
