import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { UserError } from '../../server/src/engine/errors';
import {
  decodeImage,
  imageToPixelValues,
  parseImageProcessorConfig,
  preprocessImages,
  type ImageProcessorConfig,
} from '../../server/src/engine/preprocess/image';
import { pilResize } from '../../server/src/engine/preprocess/pil-resample';
import { tinyCheckpointDir } from '../helpers/paths';
import { imagePath, loadManifest, readTensor } from '../helpers/reference';

const readJson = (file: string): unknown => JSON.parse(fs.readFileSync(path.join(tinyCheckpointDir, file), 'utf8'));
const cfg: ImageProcessorConfig = parseImageProcessorConfig(readJson('preprocessor_config.json'));

function diff(a: Float32Array, b: Float32Array, offset = 0): { max: number; mean: number } {
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[offset + i]);
    if (d > max) max = d;
    sum += d;
  }
  return { max, mean: sum / a.length };
}

const fmt = (d: { max: number; mean: number }): string => `max ${d.max.toExponential(3)}, mean ${d.mean.toExponential(3)}`;

async function pixelValuesOf(input: string | Buffer): Promise<Float32Array> {
  return imageToPixelValues(await decodeImage(input), cfg);
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-image-test-'));
  try {
    return await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function expectUserError(fn: () => Promise<unknown>, message: RegExp, hint?: RegExp): Promise<UserError> {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
    assert.match(e.message, message);
    if (hint) assert.match(e.hint ?? '', hint);
    assert.doesNotMatch(e.line, /\n|\bat .+:\d+:\d+/, 'no stack trace in the message');
    return e;
  }
  assert.fail('expected a UserError');
}

test('parseImageProcessorConfig reads both config layouts', () => {
  const pre = readJson('preprocessor_config.json') as Record<string, unknown>;
  const fromProcessor = parseImageProcessorConfig(readJson('processor_config.json'), 'processor_config.json');
  assert.deepEqual(fromProcessor, cfg);
  const size = pre.size as { height: number; width: number };
  assert.deepEqual(cfg.size, { height: size.height, width: size.width });
  assert.equal(cfg.resample, pre.resample);
  assert.equal(cfg.rescaleFactor, pre.rescale_factor);
  assert.deepEqual(cfg.imageMean, pre.image_mean);
  assert.deepEqual(cfg.imageStd, pre.image_std);
  assert.equal(cfg.doResize, pre.do_resize);
  assert.equal(cfg.doRescale, pre.do_rescale);
  assert.equal(cfg.doNormalize, pre.do_normalize);
  assert.equal(cfg.doConvertRgb, pre.do_convert_rgb);
});

test('parseImageProcessorConfig names missing or unsupported keys', () => {
  const pre = readJson('preprocessor_config.json') as Record<string, unknown>;
  const { image_std: _std, rescale_factor: _rf, ...missing } = pre;
  assert.throws(
    () => parseImageProcessorConfig(missing),
    (e: unknown) => e instanceof UserError && /rescale_factor, image_std/.test(e.message),
  );
  assert.throws(
    () => parseImageProcessorConfig({ ...pre, size: { shortest_edge: 224 } }),
    (e: unknown) => e instanceof UserError && /only \{"height", "width"\} sizes/.test(e.message),
  );
  assert.throws(() => parseImageProcessorConfig({ ...pre, resample: 9 }), UserError);
  assert.throws(() => parseImageProcessorConfig('nope'), UserError);
});

test('pixel values match transformers for every reference image', async (t) => {
  const manifest = loadManifest();
  const perImage = new Map<string, { max: number; mean: number }>();
  for (const c of manifest.cases) {
    const ref = readTensor(c.pixel_values);
    const rowLen = ref.length / c.images.length;
    for (let b = 0; b < c.images.length; b++) {
      const name = c.images[b];
      const got = await pixelValuesOf(imagePath(name));
      assert.equal(got.length, rowLen, `${c.id} row ${b}: length`);
      const d = diff(got, ref, b * rowLen);
      const prev = perImage.get(name);
      perImage.set(name, prev ? { max: Math.max(prev.max, d.max), mean: Math.max(prev.mean, d.mean) } : d);
      if (/\.(png|gif)$/i.test(name)) {
        assert.ok(d.max <= 1e-5, `${c.id} row ${b} (${name}): ${fmt(d)}`);
      } else {
        assert.ok(d.mean <= 0.02, `${c.id} row ${b} (${name}): ${fmt(d)}`);
      }
    }
  }
  for (const [name, d] of perImage) t.diagnostic(`${name}: ${fmt(d)}`);
});

test('preprocessImages stacks a batch like the processor', async () => {
  const c = loadManifest().cases.find((x) => x.images.length > 1);
  assert.ok(c, 'the manifest has a batch case');
  const ref = readTensor(c.pixel_values);
  const { pixelValues, dims } = await preprocessImages(c.images.map(imagePath), cfg);
  assert.deepEqual(dims, c.pixel_values.shape);
  assert.ok(diff(pixelValues, ref).max <= 1e-5);
  await expectUserError(() => preprocessImages([], cfg), /No image/);
});

test('EXIF orientation is applied (PNG, WebP and JPEG with orientation 6)', async () => {
  const src = imagePath('cat.png');
  const rotated = await pixelValuesOf(await sharp(src).rotate(90).png().toBuffer());
  for (const [kind, buf] of [
    ['png', await sharp(src).withMetadata({ orientation: 6 }).png().toBuffer()],
    ['webp', await sharp(src).withMetadata({ orientation: 6 }).webp({ lossless: true }).toBuffer()],
  ] as const) {
    assert.equal((await sharp(buf).metadata()).orientation, 6);
    const d = diff(await pixelValuesOf(buf), rotated);
    assert.equal(d.max, 0, `${kind}: ${fmt(d)}`);
  }

  // A JPEG is lossy, so compare with its own pixels rotated by hand: 90 degrees clockwise, as orientation 6 asks.
  const jpeg = await sharp(src).withMetadata({ orientation: 6 }).jpeg({ quality: 90 }).toBuffer();
  const { data, info } = await sharp(jpeg, { ignoreIcc: true }).raw().toBuffer({ resolveWithObject: true });
  const img = await decodeImage(jpeg);
  assert.equal(img.width, info.height);
  assert.equal(img.height, info.width);
  const expected = new Uint8Array(img.rgb.length);
  for (let y = 0; y < info.height; y++) {
    for (let x = 0; x < info.width; x++) {
      const o = (x * img.width + (info.height - 1 - y)) * 3;
      const s = (y * info.width + x) * info.channels;
      expected.set(data.subarray(s, s + 3), o);
    }
  }
  assert.deepEqual(img.rgb, expected);
});

test('lossless WebP, TIFF, AVIF and 16-bit PNG give the same pixel values as the PNG', async (t) => {
  const src = imagePath('astronaut.png');
  const ref = await pixelValuesOf(src);
  for (const [kind, buf] of [
    ['webp lossless', await sharp(src).webp({ lossless: true }).toBuffer()],
    ['tiff lzw', await sharp(src).tiff({ compression: 'lzw' }).toBuffer()],
    ['tiff deflate', await sharp(src).tiff({ compression: 'deflate' }).toBuffer()],
    ['avif lossless', await sharp(src).avif({ lossless: true }).toBuffer()],
    // 8-bit values v stored as v * 257: Pillow keeps the high byte, which is v again.
    ['png 16-bit rgb', await sharp(src).toColourspace('rgb16').png().toBuffer()],
  ] as const) {
    const d = diff(await pixelValuesOf(buf), ref);
    t.diagnostic(`${kind}: ${fmt(d)}`);
    assert.ok(d.max <= 1e-5, `${kind}: ${fmt(d)}`);
  }
});

test('lossy WebP and AVIF stay close to the PNG (mean abs diff <= 0.05)', async (t) => {
  const src = imagePath('astronaut.png');
  const ref = await pixelValuesOf(src);
  for (const [kind, buf] of [
    ['webp q90', await sharp(src).webp({ quality: 90 }).toBuffer()],
    ['avif q80', await sharp(src).avif({ quality: 80 }).toBuffer()],
  ] as const) {
    const d = diff(await pixelValuesOf(buf), ref);
    t.diagnostic(`${kind}: ${fmt(d)}`);
    assert.ok(d.mean <= 0.05, `${kind}: ${fmt(d)}`);
  }
});

test('16-bit greyscale keeps the high byte of each sample (not Pillow\'s clipping to white)', async () => {
  const buf = await sharp(imagePath('camera-gray.png')).toColourspace('grey16').png().toBuffer();
  const { data } = await sharp(buf).toColourspace('grey16').raw({ depth: 'ushort' }).toBuffer({ resolveWithObject: true });
  const v16 = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
  const img = await decodeImage(buf);
  for (let i = 0; i < v16.length; i++) {
    const want = v16[i] >> 8;
    if (img.rgb[i * 3] !== want || img.rgb[i * 3 + 2] !== want) assert.fail(`pixel ${i}: ${img.rgb[i * 3]} != ${want}`);
  }
});

/** The colour of the transparency index in the global palette of a GIF (what Pillow shows for transparent pixels). */
function gifTransparentColour(gif: Buffer): number[] | undefined {
  const flags = gif[10];
  if (!(flags & 0x80)) return undefined;
  const paletteEnd = 13 + (3 << ((flags & 7) + 1));
  for (let p = paletteEnd; p + 7 < gif.length; p++) {
    if (gif[p] === 0x21 && gif[p + 1] === 0xf9 && gif[p + 2] === 4) {
      if (!(gif[p + 3] & 1)) return undefined;
      const idx = gif[p + 6];
      return [...gif.subarray(13 + idx * 3, 13 + idx * 3 + 3)];
    }
    if (gif[p] === 0x2c) return undefined;
  }
  return undefined;
}

test('GIF: first frame, interlaced or not; transparent pixels keep their palette colour as in Pillow', async (t) => {
  for (const progressive of [false, true]) {
    const gif = await sharp(imagePath('wide-alpha.png')).gif({ progressive }).toBuffer();
    const img = await decodeImage(gif);
    const { data, info } = await sharp(gif).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
    assert.equal(img.width, info.width);
    const trns = gifTransparentColour(gif);
    assert.ok(trns, 'the test GIF has a transparency index');
    let transparent = 0;
    for (let i = 0; i < info.width * info.height; i++) {
      const want: number[] = data[i * 4 + 3] === 0 ? trns : [...data.subarray(i * 4, i * 4 + 3)];
      if (data[i * 4 + 3] === 0) transparent++;
      const got = [...img.rgb.subarray(i * 3, i * 3 + 3)];
      if (got.join() !== want.join()) assert.fail(`progressive=${progressive} pixel ${i}: ${got} != ${want}`);
    }
    t.diagnostic(`progressive=${progressive}: ${transparent} transparent pixels`);
    assert.ok(transparent > 0);
  }

  const frame = async (file: string): Promise<Buffer> => sharp(imagePath(file)).resize(64, 48, { fit: 'fill' }).raw().toBuffer();
  const frames = Buffer.concat([await frame('cat.png'), await frame('coffee.png')]);
  const animated = await sharp(frames, { raw: { width: 64, height: 96, channels: 3, pageHeight: 48 } }).gif().toBuffer();
  assert.equal((await sharp(animated).metadata()).pages, 2);
  const img = await decodeImage(animated);
  const first = await sharp(animated, { page: 0, pages: 1 }).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([img.width, img.height], [64, 48]);
  const firstRgb = new Uint8Array(64 * 48 * 3);
  for (let i = 0; i < 64 * 48; i++) firstRgb.set(first.data.subarray(i * first.info.channels, i * first.info.channels + 3), i * 3);
  assert.deepEqual(img.rgb, firstRgb);
});

test('an SVG renders (onto white, since Pillow cannot read SVG at all)', async () => {
  const svg = Buffer.from(
    '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60"><rect x="10" y="10" width="40" height="40" fill="#ff0000"/></svg>',
  );
  const img = await decodeImage(svg);
  assert.equal(img.format, 'svg');
  assert.deepEqual([img.width, img.height], [120, 60]);
  const px = (x: number, y: number): number[] => [...img.rgb.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3)];
  assert.deepEqual(px(30, 30), [255, 0, 0]);
  assert.deepEqual(px(100, 5), [255, 255, 255]);
  assert.equal(imageToPixelValues(img, cfg).length, 3 * cfg.size.height * cfg.size.width);
});

test('CMYK JPEG decodes to RGB', async () => {
  const jpeg = await sharp(imagePath('cat.png')).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
  assert.equal((await sharp(jpeg).metadata()).space, 'cmyk');
  const img = await decodeImage(jpeg);
  assert.equal(img.rgb.length, img.width * img.height * 3);
});

test('pilResize returns an equal copy when the size does not change', () => {
  const data = Uint8Array.from({ length: 5 * 4 * 3 }, (_, i) => (i * 37) & 255);
  const out = pilResize({ width: 5, height: 4, channels: 3, data }, 5, 4, 3);
  assert.deepEqual(out.data, data);
  assert.notEqual(out.data, data);
});

test('errors a user can cause are UserErrors with one clear line', async () => {
  await withTempDir(async (dir) => {
    const missing = path.join(dir, 'missing.png');
    await expectUserError(() => decodeImage(missing), new RegExp(`^The image file does not exist: ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.$`), /path/);
    await expectUserError(() => decodeImage(dir), /is a folder, not an image/);

    const textAsPng = path.join(dir, 'notes.png');
    fs.writeFileSync(textAsPng, 'These are my notes, not a picture.\n');
    await expectUserError(() => decodeImage(textAsPng), /notes\.png is not a readable image/, /PNG, JPEG, WebP, GIF, AVIF, TIFF and SVG/);
  });

  const cut = (file: string, fraction: number): Buffer => {
    const buf = fs.readFileSync(imagePath(file));
    return buf.subarray(0, Math.floor(buf.length * fraction));
  };
  await expectUserError(() => decodeImage(cut('cat.png', 0.5), 'cat-cut.png'), /^cat-cut\.png is not a readable image/, /Supported formats/);
  await expectUserError(() => decodeImage(cut('rocket.jpg', 0.5), 'rocket-cut.jpg'), /^rocket-cut\.jpg is not a readable image/, /Supported formats/);
  await expectUserError(() => decodeImage(cut('noise-palette.gif', 0.5), 'noise-cut.gif'), /^noise-cut\.gif is not a readable image/);
  await expectUserError(() => decodeImage(Buffer.alloc(0), 'empty.png'), /^empty\.png is not a readable image \(the file is empty\)/);
  await expectUserError(() => preprocessImages([Buffer.from('GIF89a garbage')], cfg), /^Image 1 is not a readable image/);
});
