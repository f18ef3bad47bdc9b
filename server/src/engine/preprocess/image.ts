/**
 * Image preprocessing that reproduces transformers' BlipImageProcessor with its PIL backend (the "slow" processor)
 * value for value: load (EXIF orientation applied), `convert_to_rgb`, PIL bicubic resize straight to
 * size.height x size.width, rescale, normalize, CHW float32.
 *
 * Decoding goes through sharp (libvips) with the options that keep its pixels identical to Pillow's:
 * - `ignoreIcc`: Pillow never applies embedded ICC profiles; sharp converts to sRGB through them by default.
 * - alpha is kept in the raw output and dropped here: transformers 5.17's `convert_to_rgb` is a plain
 *   `image.convert("RGB")`, which discards alpha without compositing (the wide-alpha fixture proves it; compositing
 *   on white is off by up to 3.8 after normalisation).
 * - 16-bit and CMYK images are read in their own colour space and converted with Pillow's rules, not libvips'.
 * - GIFs are decoded here, because Pillow gives transparent pixels of the first frame the colour of their palette
 *   entry while libvips makes them transparent black.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { readJson } from '../checkpoint/checkpoint';
import { PROCESSOR_FILES } from '../checkpoint/files';
import { UserError } from '../errors';
import { DEFAULT_MAX_IMAGE_FILE_BYTES, readImageFile } from './image-file';
import { pilResize } from './pil-resample';

export interface ImageProcessorConfig {
  size: { height: number; width: number };
  resample: number;
  doResize: boolean;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: number[];
  imageStd: number[];
  /**
   * Read and kept for completeness; decoding always converts to RGB. With `false`, transformers passes RGB images
   * through unchanged (identical to converting) and hands other modes to the model with 1, 2 or 4 channels, which
   * BLIP-2's 3-channel patch embedding rejects, so there is no other behaviour worth reproducing.
   */
  doConvertRgb: boolean;
}

export interface DecodedImage {
  width: number;
  height: number;
  /** Pixels after `convert_to_rgb`, row-major HWC. */
  rgb: Uint8Array;
  /** The container format as sharp names it (png, jpeg, webp, gif, heif, tiff, svg, ...). */
  format: string;
}

export const SUPPORTED_FORMATS = 'PNG, JPEG, WebP, GIF, AVIF, TIFF and SVG';

/**
 * The most pixels an image may declare: Pillow's own limit (twice `Image.MAX_IMAGE_PIXELS`, where it raises
 * DecompressionBombError), so nothing transformers would caption is refused. Checked against the header before
 * any decoder allocates: about 540 MB of RGB at the limit.
 */
export const MAX_IMAGE_PIXELS = 2 * 89_478_485;

/** An image already in memory, with the name messages call it by (its path or address). */
export interface NamedImage {
  bytes: Uint8Array;
  name: string;
}

/** A file path (read with the default size limit), bytes, or bytes with a name. */
export type ImageInput = string | Buffer | NamedImage;

type Json = Record<string, unknown>;

/**
 * Reads the image processor settings from preprocessor_config.json, or from processor_config.json's
 * "image_processor" object (both layouts are accepted and detected).
 */
export function parseImageProcessorConfig(json: unknown, where = 'preprocessor_config.json'): ImageProcessorConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new UserError(`${where} is not a JSON object.`, 'Use the preprocessor_config.json that comes with the checkpoint.');
  }
  let c = json as Json;
  if (c.image_processor !== undefined && typeof c.image_processor === 'object' && c.image_processor !== null) {
    c = c.image_processor as Json;
    where = `${where} (image_processor)`;
  }
  const required = ['size', 'resample', 'do_resize', 'do_rescale', 'rescale_factor', 'do_normalize', 'image_mean', 'image_std'];
  const missing = required.filter((k) => c[k] === undefined);
  if (missing.length > 0) {
    throw new UserError(
      `${where} lacks ${missing.join(', ')}, which the image preprocessing needs.`,
      'Use the preprocessor_config.json from the same Hugging Face repository as the model.',
    );
  }
  const bad = (key: string, what: string): UserError =>
    new UserError(`${where}: "${key}" must be ${what}, got ${JSON.stringify(c[key])}.`, 'Use the preprocessor_config.json from the same Hugging Face repository as the model.');

  const size = c.size as Json;
  if (size === null || typeof size !== 'object') throw bad('size', 'an object with height and width');
  if (size.height === undefined || size.width === undefined) {
    throw new UserError(
      `${where}: "size" is ${JSON.stringify(size)}; only {"height", "width"} sizes (resize straight to that shape, as BLIP-2 does) are supported.`,
      'BLIP-2 checkpoints use {"height": 224, "width": 224}.',
    );
  }
  // No BLIP-2 vision encoder takes more than 1024 x 1024 (checkpoint/config.ts): a larger size is a broken config.
  const posInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= 1024;
  if (!posInt(size.height) || !posInt(size.width)) throw bad('size', 'positive integer height and width');

  const resample = c.resample;
  if (typeof resample !== 'number' || !Number.isInteger(resample) || resample < 0 || resample > 5) {
    throw bad('resample', 'a PIL resampling filter number from 0 to 5');
  }
  const bool = (key: string): boolean => {
    if (typeof c[key] !== 'boolean') throw bad(key, 'true or false');
    return c[key] as boolean;
  };
  const rescaleFactor = c.rescale_factor;
  if (typeof rescaleFactor !== 'number' || !Number.isFinite(rescaleFactor)) throw bad('rescale_factor', 'a number');
  const triple = (key: string): number[] => {
    const v = c[key];
    // transformers accepts a single number for all channels.
    const arr = typeof v === 'number' ? [v, v, v] : v;
    if (!Array.isArray(arr) || arr.length !== 3 || !arr.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw bad(key, 'three numbers (one per RGB channel)');
    }
    return arr as number[];
  };
  const imageStd = triple('image_std');
  if (imageStd.some((s) => s === 0)) throw bad('image_std', 'non-zero');
  const doConvertRgb = c.do_convert_rgb === undefined ? true : bool('do_convert_rgb');
  return {
    size: { height: size.height, width: size.width },
    resample,
    doResize: bool('do_resize'),
    doRescale: bool('do_rescale'),
    rescaleFactor,
    doNormalize: bool('do_normalize'),
    imageMean: triple('image_mean'),
    imageStd,
    doConvertRgb,
  };
}

/**
 * The image processor of a model folder: preprocessor_config.json, or processor_config.json's "image_processor"
 * in newer repositories. With the vision encoder's `imageSize`, a config that would feed it anything but
 * `imageSize x imageSize` pixels is refused: the position embeddings fix that size, and a crafted size would only
 * make every image allocate more.
 */
export function readImageProcessorConfig(dir: string, imageSize?: number): ImageProcessorConfig {
  const file = PROCESSOR_FILES.map((f) => path.join(dir, f)).find((f) => fs.existsSync(f)) ?? path.join(dir, PROCESSOR_FILES[0]);
  const config = parseImageProcessorConfig(readJson(file), file);
  if (imageSize !== undefined && (!config.doResize || config.size.height !== imageSize || config.size.width !== imageSize)) {
    const given = config.doResize ? `${config.size.width} x ${config.size.height}` : 'images at their own size (do_resize false)';
    throw new UserError(
      `${file} asks for ${given}, but the vision encoder takes ${imageSize} x ${imageSize} pixels.`,
      'Use the preprocessor_config.json from the same Hugging Face repository as the model.',
    );
  }
  return config;
}

function unreadable(label: string, reason?: string): UserError {
  const why = reason ? ` (${reason.split('\n')[0].replace(/\.$/, '')})` : '';
  return new UserError(`${label} is not a readable image${why}.`, `Supported formats: ${SUPPORTED_FORMATS}.`);
}

/**
 * Decodes an image file or buffer to the RGB pixels transformers would feed its resize step: the first frame, EXIF
 * orientation applied (transformers' `load_image` calls `ImageOps.exif_transpose`), converted with Pillow's
 * `convert("RGB")` rules.
 */
export async function decodeImage(input: ImageInput, name?: string): Promise<DecodedImage> {
  const label = name ?? labelOf(input) ?? 'The image';
  const buf =
    typeof input === 'string'
      ? await readImageFile(input, { maxBytes: DEFAULT_MAX_IMAGE_FILE_BYTES })
      : Buffer.isBuffer(input)
        ? input
        : Buffer.from(input.bytes.buffer, input.bytes.byteOffset, input.bytes.byteLength);
  if (buf.length === 0) throw unreadable(label, 'the file is empty');

  if (isGif(buf)) {
    let gif: DecodedGif | undefined;
    let gifError: unknown;
    try {
      gif = decodeGifFirstFrame(buf, label);
    } catch (e) {
      gifError = e;
    }
    if (gif) return { ...gif, format: 'gif' };
    if (gifError instanceof UserError) throw gifError;
    if (gifError instanceof GifTruncated) throw unreadable(label, gifError.message);
    // A GIF our decoder rejects but libvips accepts still gets a caption, without the palette-exact guarantee.
  }

  try {
    return await decodeWithSharp(buf, label);
  } catch (e) {
    if (e instanceof UserError) throw e;
    const message = e instanceof Error ? e.message : String(e);
    throw unreadable(label, message);
  }
}

/** The name of an input that carries one: a path, or a named buffer. */
function labelOf(input: ImageInput): string | undefined {
  if (typeof input === 'string') return input;
  return Buffer.isBuffer(input) ? undefined : input.name;
}

/** Refuses an image whose declared size is over MAX_IMAGE_PIXELS, naming both. */
function checkPixelCount(label: string, width: number, height: number): void {
  if (width * height <= MAX_IMAGE_PIXELS) return;
  const megapixels = (n: number): string => `${+(n / 1e6).toFixed(1)} megapixels`;
  throw new UserError(
    `${label} declares ${width} x ${height} pixels (${megapixels(width * height)}), more than the limit of ${megapixels(MAX_IMAGE_PIXELS)}.`,
    'Scale it down first.',
  );
}

async function decodeWithSharp(buf: Buffer, label: string): Promise<DecodedImage> {
  // failOn 'error' rejects truncated or corrupt data (Pillow raises on those too) but not libjpeg's benign warnings.
  const options = { ignoreIcc: true, autoOrient: true, failOn: 'error', page: 0, pages: 1 } as const;
  const open = () => sharp(buf, { ...options, limitInputPixels: MAX_IMAGE_PIXELS });
  // The header alone, read without sharp's limit so that the message can give the declared size; the decoding
  // below has libvips hold the same limit again.
  const meta = await sharp(buf, { ...options, limitInputPixels: false }).metadata();
  if (meta.width !== undefined && meta.height !== undefined) checkPixelCount(label, meta.width, meta.pageHeight ?? meta.height);
  const format = meta.format ?? 'unknown';

  if (format === 'svg') {
    // Pillow cannot open SVG at all, so there is nothing to match; transparent areas would come out black after
    // dropping alpha, which hides dark drawings, so SVGs are flattened onto white instead.
    const { data, info } = await open().flatten({ background: '#ffffff' }).raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, rgb: dropAlpha(data, info.channels, info.width * info.height), format };
  }

  if (meta.space === 'cmyk') {
    // Without this, sharp converts CMYK through a built-in ICC profile; Pillow uses its own arithmetic (cmyk2rgb).
    const { data, info } = await open().pipelineColourspace('cmyk').toColourspace('cmyk').raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, rgb: cmykToRgb(data, info.channels, info.width * info.height), format };
  }

  if (meta.depth === 'ushort') {
    const grey = meta.space === 'grey16' || meta.space === 'b-w' || (meta.channels ?? 3) <= 2;
    const { data, info } = await open()
      .toColourspace(grey ? 'grey16' : 'rgb16')
      .raw({ depth: 'ushort' })
      .toBuffer({ resolveWithObject: true });
    // A Uint16Array view needs an even byte offset; copy in the unlikely case sharp's buffer is not aligned.
    const aligned = data.byteOffset % 2 === 0 ? data : Buffer.from(data);
    const px = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >> 1);
    return { width: info.width, height: info.height, rgb: sixteenBitToRgb(px, info.channels, info.width * info.height, grey), format };
  }

  const { data, info } = await open().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, rgb: dropAlpha(data, info.channels, info.width * info.height), format };
}

/** `convert("RGB")` from L, LA, RGB or RGBA: grey is replicated, alpha discarded. */
function dropAlpha(data: Uint8Array, channels: number, n: number): Uint8Array {
  // A plain view rather than sharp's Buffer, so callers see one type whatever the source.
  if (channels === 3) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(n * 3);
  if (channels === 1 || channels === 2) {
    for (let i = 0, p = 0, o = 0; i < n; i++, p += channels, o += 3) {
      const v = data[p];
      out[o] = v;
      out[o + 1] = v;
      out[o + 2] = v;
    }
    return out;
  }
  for (let i = 0, p = 0, o = 0; i < n; i++, p += channels, o += 3) {
    out[o] = data[p];
    out[o + 1] = data[p + 1];
    out[o + 2] = data[p + 2];
  }
  return out;
}

/** Pillow's `cmyk2rgb` (Convert.c): `nk - MULDIV255(c, nk)` with nk = 255 - k. */
function cmykToRgb(data: Uint8Array, channels: number, n: number): Uint8Array {
  const out = new Uint8Array(n * 3);
  for (let i = 0, p = 0, o = 0; i < n; i++, p += channels, o += 3) {
    const nk = 255 - data[p + 3];
    out[o] = nk - muldiv255(data[p], nk);
    out[o + 1] = nk - muldiv255(data[p + 1], nk);
    out[o + 2] = nk - muldiv255(data[p + 2], nk);
  }
  return out;
}

/** Pillow's MULDIV255: a*b/255 rounded, with its shift trick. */
function muldiv255(a: number, b: number): number {
  const tmp = a * b + 128;
  return ((tmp >> 8) + tmp) >> 8;
}

/**
 * 16-bit samples keep their high byte, as Pillow reads 16-bit RGB(A) and LA. A deliberate deviation: Pillow opens
 * 16-bit greyscale as mode "I;16" and clips it to 255 on conversion to RGB, which turns most such images white
 * (and transformers' caption into one of a white image); we keep the high byte there too, so they get a real caption.
 */
function sixteenBitToRgb(px: Uint16Array, channels: number, n: number, grey: boolean): Uint8Array {
  const out = new Uint8Array(n * 3);
  if (grey) {
    for (let i = 0, p = 0, o = 0; i < n; i++, p += channels, o += 3) {
      const v = px[p] >> 8;
      out[o] = v;
      out[o + 1] = v;
      out[o + 2] = v;
    }
    return out;
  }
  for (let i = 0, p = 0, o = 0; i < n; i++, p += channels, o += 3) {
    out[o] = px[p] >> 8;
    out[o + 1] = px[p + 1] >> 8;
    out[o + 2] = px[p + 2] >> 8;
  }
  return out;
}

/**
 * The processor's arithmetic after decoding: PIL resize on uint8, then `rescale` (uint8 -> float64 times the factor,
 * cast to float32) and `normalize` (float32 `(x - mean) / std`, mean and std cast to float32), laid out CHW.
 */
export function imageToPixelValues(img: DecodedImage, cfg: ImageProcessorConfig): Float32Array {
  let { width, height, rgb } = img;
  if (cfg.doResize) {
    const r = pilResize({ width, height, channels: 3, data: rgb }, cfg.size.width, cfg.size.height, cfg.resample);
    ({ width, height } = r);
    rgb = r.data;
  }
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  // Per channel, every output is a function of one byte: tabulating the 256 values keeps the exact float32
  // rounding sequence and makes this loop a lookup.
  const table = new Float32Array(256);
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(cfg.imageMean[c]);
    const std = Math.fround(cfg.imageStd[c]);
    for (let v = 0; v < 256; v++) {
      let x = cfg.doRescale ? Math.fround(v * cfg.rescaleFactor) : v;
      if (cfg.doNormalize) x = Math.fround(Math.fround(x - mean) / std);
      table[v] = x;
    }
    const base = c * plane;
    for (let i = 0, p = c; i < plane; i++, p += 3) out[base + i] = table[rgb[p]];
  }
  return out;
}

/** Decodes and preprocesses a batch; the result is `pixel_values` [B, 3, H, W]. */
export async function preprocessImages(
  inputs: ImageInput[],
  cfg: ImageProcessorConfig,
): Promise<{ pixelValues: Float32Array; dims: [number, number, number, number] }> {
  if (inputs.length === 0) throw new UserError('No image was given.', 'Pass at least one image file.');
  let dims: [number, number, number, number] | undefined;
  let pixelValues = new Float32Array(0);
  for (let b = 0; b < inputs.length; b++) {
    const input = inputs[b];
    const img = await decodeImage(input, labelOf(input) ?? `Image ${b + 1}`);
    const pv = imageToPixelValues(img, cfg);
    const h = cfg.doResize ? cfg.size.height : img.height;
    const w = cfg.doResize ? cfg.size.width : img.width;
    if (!dims) {
      dims = [inputs.length, 3, h, w];
      pixelValues = new Float32Array(inputs.length * pv.length);
    } else if (dims[2] !== h || dims[3] !== w) {
      throw new UserError(
        `Images of different sizes (${dims[3]}x${dims[2]} and ${w}x${h}) cannot form one batch without resizing.`,
        'Enable do_resize in preprocessor_config.json or pass images of one size.',
      );
    }
    pixelValues.set(pv, b * pv.length);
  }
  return { pixelValues, dims: dims! };
}

// ---------------------------------------------------------------------------------------------------------------
// GIF, first frame, as Pillow's GifImagePlugin + GifDecode.c produce it in mode P (or L) and `convert("RGB")` maps
// it: the canvas starts filled with the transparency index (or index 0), the frame is drawn over it with every index
// written as is (transparency is not applied to frame 0), and indices map through the frame's palette (local if
// present, else global; entries past the palette's end are black), or stay grey levels when there is no palette.

interface DecodedGif {
  width: number;
  height: number;
  rgb: Uint8Array;
}

class GifTruncated extends Error {}

function isGif(buf: Buffer): boolean {
  return buf.length >= 6 && buf.toString('latin1', 0, 6).match(/^GIF8[79]a$/) !== null;
}

/** Pillow treats a palette that is exactly the grey ramp 0, 1, 2, ... as "no palette" (mode L). */
function paletteNeeded(p: Uint8Array): boolean {
  for (let i = 0; i < p.length; i += 3) {
    const idx = i / 3;
    if (!(idx === p[i] && p[i] === p[i + 1] && p[i + 1] === p[i + 2])) return true;
  }
  return false;
}

function decodeGifFirstFrame(buf: Buffer, label: string): DecodedGif {
  let pos = 6;
  const need = (n: number): void => {
    if (pos + n > buf.length) throw new GifTruncated('the GIF file is truncated');
  };
  need(7);
  let width = buf.readUInt16LE(pos);
  let height = buf.readUInt16LE(pos + 2);
  const screenFlags = buf[pos + 4];
  pos += 7;
  let globalPalette: Uint8Array | null = null;
  if (screenFlags & 0x80) {
    const len = 3 << ((screenFlags & 7) + 1);
    need(len);
    const p = buf.subarray(pos, pos + len);
    if (paletteNeeded(p)) globalPalette = p;
    pos += len;
  }

  const skipSubBlocks = (): void => {
    for (;;) {
      need(1);
      const n = buf[pos++];
      if (n === 0) return;
      need(n);
      pos += n;
    }
  };

  let transparency: number | null = null;
  for (;;) {
    need(1);
    const introducer = buf[pos++];
    if (introducer === 0x3b) throw new Error('no image in the GIF file');
    if (introducer === 0x21) {
      need(1);
      const labelByte = buf[pos++];
      need(1);
      const n = buf[pos];
      if (labelByte === 0xf9 && n >= 4) {
        need(1 + n);
        const flags = buf[pos + 1];
        if (flags & 1) transparency = buf[pos + 4];
      }
      skipSubBlocks();
      continue;
    }
    // Pillow skips any other byte between blocks.
    if (introducer !== 0x2c) continue;

    need(9);
    const x0 = buf.readUInt16LE(pos);
    const y0 = buf.readUInt16LE(pos + 2);
    const fw = buf.readUInt16LE(pos + 4);
    const fh = buf.readUInt16LE(pos + 6);
    const flags = buf[pos + 8];
    pos += 9;
    // Pillow grows the image when the first frame reaches past the logical screen: a 1x1 frame placed at
    // 65535,65535 makes a 4-gigapixel canvas, so the grown size is what has to be within the limit, checked
    // before the canvas is allocated below.
    width = Math.max(width, x0 + fw);
    height = Math.max(height, y0 + fh);
    checkPixelCount(label, width, height);
    const interlace = (flags & 0x40) !== 0;
    // undefined: no local table; null: a local grey ramp, which Pillow also treats as no palette.
    let localPalette: Uint8Array | null | undefined;
    if (flags & 0x80) {
      const len = 3 << ((flags & 7) + 1);
      need(len);
      const p = buf.subarray(pos, pos + len);
      localPalette = paletteNeeded(p) ? p : null;
      pos += len;
    }
    need(1);
    const minCodeSize = buf[pos++];
    if (width === 0 || height === 0) throw new Error('the GIF has no pixels');
    const indices = new Uint8Array(width * height);
    if (transparency !== null) indices.fill(transparency);
    lzwDecode(buf, pos, minCodeSize, indices, width, x0, y0, fw, fh, interlace);

    const palette = localPalette !== undefined ? localPalette : globalPalette;
    const rgb = new Uint8Array(width * height * 3);
    if (palette) {
      const entries = palette.length / 3;
      for (let i = 0, o = 0; i < indices.length; i++, o += 3) {
        const idx = indices[i];
        if (idx < entries) {
          rgb[o] = palette[idx * 3];
          rgb[o + 1] = palette[idx * 3 + 1];
          rgb[o + 2] = palette[idx * 3 + 2];
        }
      }
    } else {
      for (let i = 0, o = 0; i < indices.length; i++, o += 3) {
        rgb[o] = rgb[o + 1] = rgb[o + 2] = indices[i];
      }
    }
    return { width, height, rgb };
  }
}

/**
 * Variable-width LZW as GifDecode.c reads it, writing indices into the frame rectangle of `out` (row stride
 * `stride`), in interlaced row order when asked. Decoding stops at the end code or when the frame is full.
 */
function lzwDecode(
  buf: Buffer,
  start: number,
  minCodeSize: number,
  out: Uint8Array,
  stride: number,
  x0: number,
  y0: number,
  fw: number,
  fh: number,
  interlace: boolean,
): void {
  if (minCodeSize < 1 || minCodeSize > 11) throw new Error('bad LZW code size in the GIF file');
  const clear = 1 << minCodeSize;
  const end = clear + 1;
  const prefix = new Int16Array(4096);
  const suffix = new Uint8Array(4096);
  const stack = new Uint8Array(4097);
  let codeSize = minCodeSize + 1;
  let codeMask = (1 << codeSize) - 1;
  let next = clear + 2;
  let prev = -1;
  let first = 0;

  // Frame position in (possibly interlaced) row order.
  let x = 0;
  let row = 0;
  let pass = interlace ? 1 : 0;
  let step = interlace ? 8 : 1;
  let done = fw === 0 || fh === 0;
  const emit = (v: number): void => {
    out[(y0 + row) * stride + x0 + x] = v;
    if (++x < fw) return;
    x = 0;
    row += step;
    while (row >= fh) {
      if (pass === 1) {
        row = 4;
        step = 8;
        pass = 2;
      } else if (pass === 2) {
        row = 2;
        step = 4;
        pass = 3;
      } else if (pass === 3) {
        row = 1;
        step = 2;
        pass = 4;
      } else {
        done = true;
        return;
      }
    }
  };

  let pos = start;
  let blockLeft = 0;
  let bits = 0;
  let acc = 0;
  for (;;) {
    while (bits < codeSize) {
      if (blockLeft === 0) {
        if (pos >= buf.length) throw new GifTruncated('the GIF file is truncated');
        blockLeft = buf[pos++];
        if (blockLeft === 0) return;
      }
      if (pos >= buf.length) throw new GifTruncated('the GIF file is truncated');
      acc |= buf[pos++] << bits;
      bits += 8;
      blockLeft--;
    }
    const code = acc & codeMask;
    acc >>>= codeSize;
    bits -= codeSize;

    if (code === clear) {
      codeSize = minCodeSize + 1;
      codeMask = (1 << codeSize) - 1;
      next = clear + 2;
      prev = -1;
      continue;
    }
    if (code === end) return;
    if (done) return;

    let sp = 0;
    let c = code;
    if (prev === -1) {
      if (code >= clear) throw new Error('corrupt LZW data in the GIF file');
      first = code;
      emit(code);
      prev = code;
      continue;
    }
    if (code > next || (code === next && next >= 4096)) throw new Error('corrupt LZW data in the GIF file');
    if (code === next) {
      stack[sp++] = first;
      c = prev;
    }
    while (c > clear) {
      stack[sp++] = suffix[c];
      c = prefix[c];
    }
    first = c;
    stack[sp++] = c;
    while (sp > 0 && !done) emit(stack[--sp]);
    if (next < 4096) {
      prefix[next] = prev;
      suffix[next] = first;
      next++;
      if (next === codeMask + 1 && next < 4096) {
        codeSize++;
        codeMask = (1 << codeSize) - 1;
      }
    }
    prev = code;
  }
}
