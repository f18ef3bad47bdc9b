// Image files and image bytes a hostile workspace can name: special files, huge files, and headers that declare
// more pixels than any decoder should allocate. Each must be refused at once with one sentence.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { UserError } from '../../server/src/engine/errors';
import { decodeImage, MAX_IMAGE_PIXELS, preprocessImages, readImageProcessorConfig } from '../../server/src/engine/preprocess/image';
import { checkImageFile, readImageFile } from '../../server/src/engine/preprocess/image-file';
import { tinyCheckpointDir } from '../helpers/paths';
import { imagePath } from '../helpers/reference';

async function refused(work: Promise<unknown>, pattern: RegExp): Promise<UserError> {
  try {
    await work;
  } catch (e) {
    assert.ok(e instanceof UserError, `a UserError, not ${String(e)}`);
    assert.match(e.line, pattern);
    assert.doesNotMatch(e.line, /\n/);
    return e;
  }
  assert.fail(`expected a refusal matching ${pattern}`);
}

/** A GIF header: logical screen, no global palette, then one image descriptor with a 2-colour local palette. */
function gif(screen: [number, number], frame: { x: number; y: number; w: number; h: number }): Buffer {
  const u16 = (n: number) => [n & 255, n >> 8];
  return Buffer.from([
    ...Buffer.from('GIF89a'),
    ...u16(screen[0]),
    ...u16(screen[1]),
    0x00, 0, 0,
    0x2c,
    ...u16(frame.x),
    ...u16(frame.y),
    ...u16(frame.w),
    ...u16(frame.h),
    0x80, 0, 0, 0, 255, 255, 255,
    // LZW: code size 2, one sub-block with clear, index 0, end.
    0x02, 0x02, 0x44, 0x01, 0x00,
    0x3b,
  ]);
}

/** A PNG whose header declares width x height, with almost no pixel data: what a decompression bomb starts as. */
function pngDeclaring(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer): Buffer => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(8 + data.length + 4);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(zlib.crc32(body) >>> 0, 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.alloc(width * 3 + 1))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

describe('image files: only regular files, within the size limit', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-hostile-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses a device, a folder and a named pipe at once, each with what it is', async () => {
    await refused(readImageFile('/dev/zero', { maxBytes: 1 << 20 }), /^\/dev\/zero is a device, not an image file\. Only regular files/);
    await refused(readImageFile(dir, { maxBytes: 1 << 20 }), /is a folder, not an image file/);
    const fifo = path.join(dir, 'pipe.png');
    execFileSync('mkfifo', [fifo]);
    await refused(readImageFile(fifo, { maxBytes: 1 << 20 }), /pipe\.png is a named pipe, not an image file/);
    await refused(checkImageFile(fifo, { maxBytes: 1 << 20 }), /named pipe/);
  });

  it('four FIFOs named .png leave libuv\'s pool free: a plain file read afterwards still completes', async () => {
    const fifos = [1, 2, 3, 4].map((i) => path.join(dir, `stuck-${i}.png`));
    for (const f of fifos) execFileSync('mkfifo', [f]);
    // Should a reader be stuck opening them (the handling gone), a writer that comes and goes after a while lets it
    // finish, so the test fails on what it read instead of hanging; with no reader waiting that open fails (ENXIO).
    const unstick = setTimeout(() => {
      for (const f of fifos) {
        try {
          fs.closeSync(fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
        } catch {}
      }
    }, 10_000);
    try {
      // A reader that opened these would hold all four pool threads until someone wrote to the pipes.
      const reads = await Promise.allSettled(fifos.map((f) => readImageFile(f, { maxBytes: 1 << 20 })));
      assert.deepEqual(reads.map((r) => r.status), ['rejected', 'rejected', 'rejected', 'rejected']);
      const cat = await fs.promises.readFile(imagePath('cat.png'));
      assert.ok(cat.length > 0);
    } finally {
      clearTimeout(unstick);
    }
  });

  it('checks the size before reading: a file over the limit is refused by its size, never read', async () => {
    const big = path.join(dir, 'huge.png');
    // Sparse: 8 GB on paper, nothing on disk; reading it would allocate all of it.
    fs.closeSync(fs.openSync(big, 'w'));
    fs.truncateSync(big, 8 * 1024 * 1024 * 1024);
    const e = await refused(readImageFile(big, { maxBytes: 64 * 1024 * 1024, raiseHint: 'Raise the limit.' }), /huge\.png is 8 GB, more than the limit of 64 MB for image files\. Raise the limit\./);
    assert.equal(e.hint, 'Raise the limit.');
    const cat = fs.readFileSync(imagePath('cat.png'));
    assert.deepEqual(await readImageFile(imagePath('cat.png'), { maxBytes: cat.length }), cat);
    await refused(readImageFile(imagePath('cat.png'), { maxBytes: cat.length - 1 }), /more than the limit/);
  });

  it('names a missing file and a symlink loop for what they are', async () => {
    await refused(readImageFile(path.join(dir, 'nope.png'), { maxBytes: 1 << 20 }), /^The image file does not exist: .*nope\.png\. Check the path\.$/);
    const loop = path.join(dir, 'loop.png');
    fs.symlinkSync(loop, loop);
    await refused(readImageFile(loop, { maxBytes: 1 << 20 }), /loops through symbolic links/);
  });
});

describe('decoders: the pixel limit is checked before anything is allocated', () => {
  it('a 43-byte GIF declaring a 20000 x 20000 screen is refused with its size and the limit', async () => {
    const bomb = gif([20000, 20000], { x: 0, y: 0, w: 1, h: 1 });
    assert.ok(bomb.length < 50);
    const before = process.memoryUsage().rss;
    await refused(decodeImage(bomb, 'bomb.gif'), /^bomb\.gif declares 20000 x 20000 pixels \(400 megapixels\), more than the limit of 179 megapixels\. Scale it down first\.$/);
    // Refused from the header: nowhere near the 1.6 GB decoding it would take.
    assert.ok(process.memoryUsage().rss - before < 200 * 1024 * 1024);
  });

  it('a 1x1 GIF frame placed at 65535,65535, or a frame larger than its screen, is refused for the canvas it would grow', async () => {
    await refused(decodeImage(gif([1, 1], { x: 65535, y: 65535, w: 1, h: 1 }), 'placed.gif'), /placed\.gif declares 65536 x 65536 pixels/);
    // Just over the limit, where our decoder (not libvips after it) would otherwise allocate the canvas: 785 MB.
    const over = /declares 14001 x 14001 pixels \(196 megapixels\), more than the limit of 179 megapixels\./;
    await refused(decodeImage(gif([1, 1], { x: 14000, y: 14000, w: 1, h: 1 }), 'placed.gif'), over);
    await refused(decodeImage(gif([1, 1], { x: 0, y: 0, w: 14001, h: 14001 }), 'framed.gif'), over);
    // Within the limit the same layout decodes, grown as Pillow grows it.
    const small = await decodeImage(gif([2, 2], { x: 3, y: 1, w: 1, h: 1 }), 'small.gif');
    assert.deepEqual([small.width, small.height], [4, 2]);
  });

  it("sharp's formats: a PNG header declaring 20000 x 20000 is refused by its declared size", async () => {
    assert.ok(20000 * 20000 > MAX_IMAGE_PIXELS);
    await refused(decodeImage(pngDeclaring(20000, 20000), 'bomb.png'), /^bomb\.png declares 20000 x 20000 pixels \(400 megapixels\), more than the limit of 179 megapixels/);
  });

  it('bytes that fail to decode are named by their address, not "Image 1"', async () => {
    await refused(preprocessImages([{ bytes: Buffer.from('not a picture at all'), name: 'https://example.test/a.png' }], readImageProcessorConfig(tinyCheckpointDir)), /^https:\/\/example\.test\/a\.png is not a readable image/);
  });
});

describe('image processor configs: only the size the vision encoder takes', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-preproc-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses a size of 16384 (900 MB per image) and any size other than the encoder\'s', () => {
    const pre = JSON.parse(fs.readFileSync(path.join(tinyCheckpointDir, 'preprocessor_config.json'), 'utf8'));
    const write = (size: unknown) => fs.writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify({ ...pre, size }));
    write({ height: 16384, width: 16384 });
    assert.throws(() => readImageProcessorConfig(dir, 224), (e: unknown) => e instanceof UserError && /"size" must be positive integer height and width/.test(e.message));
    write({ height: 448, width: 448 });
    assert.throws(() => readImageProcessorConfig(dir, 224), (e: unknown) => e instanceof UserError && /asks for 448 x 448, but the vision encoder takes 224 x 224 pixels/.test(e.message));
    write({ height: 224, width: 224 });
    assert.deepEqual(readImageProcessorConfig(dir, 224).size, { height: 224, width: 224 });
  });
});
