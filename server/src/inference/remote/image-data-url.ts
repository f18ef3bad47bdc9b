import sharp from 'sharp';

/** Formats Pillow (vLLM's decoder) opens as they are; others go as PNG. */
const PILLOW_FORMATS = new Set(['png', 'jpeg', 'gif', 'webp', 'tiff']);

/**
 * The image as a `data:` URL: its own bytes where Pillow, which vLLM decodes with, reads the format; otherwise
 * (SVG, HEIF/AVIF, …) the PNG of what the local engine decodes (an SVG flattened onto white, as it does).
 */
export async function imageDataUrl(bytes: Uint8Array): Promise<string> {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const format = (await sharp(buffer, { limitInputPixels: false }).metadata().catch(() => undefined))?.format;
  if (format && PILLOW_FORMATS.has(format)) return `data:image/${format};base64,${buffer.toString('base64')}`;
  // Not an image sharp knows: the server says so in its own words.
  if (!format) return `data:application/octet-stream;base64,${buffer.toString('base64')}`;
  const image = sharp(buffer, { page: 0, pages: 1 });
  const png = await (format === 'svg' ? image.flatten({ background: '#ffffff' }) : image).png().toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}
