/**
 * A literal port of Pillow's `ImagingResample` (src/libImaging/Resample.c) for 8-bit images, so that our resized
 * pixels are bit-identical to what transformers' slow image processors get from `PIL.Image.resize`.
 *
 * What has to match Pillow exactly, and why it is done the way it is here:
 * - Coefficients are computed in double precision, normalised to sum 1, then turned into fixed point with
 *   PRECISION_BITS fractional bits (rounded half away from zero), as `normalize_coeffs_8bpc` does.
 * - Each pass accumulates integer products starting from half a unit and clips through Pillow's lookup table
 *   (`clip8`), so intermediate results are rounded and clipped to uint8 between the horizontal and vertical pass.
 * - The horizontal pass runs first and only over the source rows the vertical pass will read.
 * - A pass is skipped when its axis keeps its size (the `need_horizontal` / `need_vertical` shortcuts).
 * Accumulation is done in int32 (`Math.imul`, `| 0`), like C's `int`: the sums stay far below 2^31 for every
 * filter Pillow ships, and int32 arithmetic is also what lets V8 keep these loops fast.
 */

/** Pillow's `Image.Resampling` values (the `resample` number in preprocessor_config.json). */
export const PilResample = {
  Nearest: 0,
  Lanczos: 1,
  Bilinear: 2,
  Bicubic: 3,
  Box: 4,
  Hamming: 5,
} as const;

interface Filter {
  filter(x: number): number;
  support: number;
}

const boxFilter: Filter = {
  support: 0.5,
  filter(x) {
    return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
  },
};

const bilinearFilter: Filter = {
  support: 1.0,
  filter(x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
  },
};

// Pillow multiplies by the float constants 0.54f and 0.46f, promoted to double: keep those exact float32 values.
const HAMMING_A = Math.fround(0.54);
const HAMMING_B = Math.fround(0.46);
const hammingFilter: Filter = {
  support: 1.0,
  filter(x) {
    if (x < 0.0) x = -x;
    if (x === 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * Math.PI;
    return (Math.sin(x) / x) * (HAMMING_A + HAMMING_B * Math.cos(x));
  },
};

const bicubicFilter: Filter = {
  support: 2.0,
  filter(x) {
    const a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
  },
};

function sinc(x: number): number {
  if (x === 0.0) return 1.0;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

const lanczosFilter: Filter = {
  support: 3.0,
  filter(x) {
    return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
  },
};

function filterFor(resample: number): Filter {
  switch (resample) {
    case PilResample.Box:
      return boxFilter;
    case PilResample.Bilinear:
      return bilinearFilter;
    case PilResample.Hamming:
      return hammingFilter;
    case PilResample.Bicubic:
      return bicubicFilter;
    case PilResample.Lanczos:
      return lanczosFilter;
    default:
      throw new RangeError(`unsupported resampling filter ${resample}`);
  }
}

const PRECISION_BITS = 32 - 8 - 2;

/** `clip8`: Pillow looks `in >> PRECISION_BITS` up in a table that clips to [0, 255]. */
function clip8(v: number): number {
  const s = v >> PRECISION_BITS;
  return s < 0 ? 0 : s > 255 ? 255 : s;
}

interface Coeffs {
  ksize: number;
  /** Per output pixel: first source index and number of taps. */
  bounds: Int32Array;
  /** Fixed-point coefficients, `ksize` per output pixel. */
  kk: Int32Array;
}

/** `precompute_coeffs` followed by `normalize_coeffs_8bpc`. `in0`/`in1` are Pillow's float box edges. */
function precomputeCoeffs(inSize: number, in0: number, in1: number, outSize: number, filterp: Filter): Coeffs {
  // Pillow keeps the box in C floats, and takes in1 - in0 in float before promoting to double.
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filterp.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;

  const prekk = new Float64Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let ww = 0.0;
    const ss = 1.0 / filterscale;
    // C's (int) cast truncates toward zero; negative values are clamped to 0 right after anyway.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    const base = xx * ksize;
    for (let x = 0; x < xmax; x++) {
      const w = filterp.filter((x + xmin - center + 0.5) * ss);
      prekk[base + x] = w;
      ww += w;
    }
    if (ww !== 0.0) {
      for (let x = 0; x < xmax; x++) prekk[base + x] /= ww;
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }

  const kk = new Int32Array(outSize * ksize);
  const one = 1 << PRECISION_BITS;
  for (let i = 0; i < prekk.length; i++) {
    const p = prekk[i];
    kk[i] = p < 0 ? Math.trunc(-0.5 + p * one) : Math.trunc(0.5 + p * one);
  }
  return { ksize, bounds, kk };
}

/** Interleaved 8-bit pixels, `channels` bytes per pixel, rows packed without padding. */
export interface Image8 {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array;
}

const HALF = 1 << (PRECISION_BITS - 1);

/** `ImagingResampleHorizontal_8bpc`: reads rows `offset .. offset + out.height - 1` of `src`. */
function resampleHorizontal(src: Image8, out: Image8, offset: number, c: Coeffs): void {
  const { ksize, bounds, kk } = c;
  const ch = src.channels;
  const inRow = src.width * ch;
  const outRow = out.width * ch;
  const sd = src.data;
  const od = out.data;
  for (let yy = 0; yy < out.height; yy++) {
    const rowBase = (yy + offset) * inRow;
    const outBase = yy * outRow;
    for (let xx = 0; xx < out.width; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      const kBase = xx * ksize;
      let p = rowBase + xmin * ch;
      const o = outBase + xx * ch;
      if (ch === 3) {
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0; x < xmax; x++, p += 3) {
          const k = kk[kBase + x];
          s0 = (s0 + Math.imul(sd[p], k)) | 0;
          s1 = (s1 + Math.imul(sd[p + 1], k)) | 0;
          s2 = (s2 + Math.imul(sd[p + 2], k)) | 0;
        }
        od[o] = clip8(s0);
        od[o + 1] = clip8(s1);
        od[o + 2] = clip8(s2);
      } else {
        for (let b = 0; b < ch; b++) {
          let s = HALF;
          for (let x = 0, q = p + b; x < xmax; x++, q += ch) s = (s + Math.imul(sd[q], kk[kBase + x])) | 0;
          od[o + b] = clip8(s);
        }
      }
    }
  }
}

/** `ImagingResampleVertical_8bpc`. */
function resampleVertical(src: Image8, out: Image8, c: Coeffs): void {
  const { ksize, bounds, kk } = c;
  const rowLen = src.width * src.channels;
  const sd = src.data;
  const od = out.data;
  for (let yy = 0; yy < out.height; yy++) {
    const ymin = bounds[yy * 2];
    const ymax = bounds[yy * 2 + 1];
    const kBase = yy * ksize;
    const outBase = yy * rowLen;
    // Every channel of every pixel in a row uses the same taps, so the row can be walked as flat bytes.
    for (let i = 0; i < rowLen; i++) {
      let s = HALF;
      let p = ymin * rowLen + i;
      for (let y = 0; y < ymax; y++, p += rowLen) s = (s + Math.imul(sd[p], kk[kBase + y])) | 0;
      od[outBase + i] = clip8(s);
    }
  }
}

/**
 * `Image.resize((width, height), resample)` on an 8-bit image with the default box and no `reducing_gap`, as
 * Pillow computes it for modes L and RGB. (Pillow premultiplies RGBA/LA before resampling; callers convert to RGB
 * first, as transformers does, so that path is not needed.)
 */
export function pilResize(src: Image8, width: number, height: number, resample: number): Image8 {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new RangeError(`invalid resize target ${width}x${height}`);
  }
  const copy = (): Image8 => ({ ...src, data: src.data.slice() });
  // Image.resize returns a copy when nothing changes, before looking at the filter.
  if (src.width === width && src.height === height) return copy();
  if (resample === PilResample.Nearest) return nearest(src, width, height);
  const filterp = filterFor(resample);

  const needHorizontal = width !== src.width;
  const needVertical = height !== src.height;

  const vert = precomputeCoeffs(src.height, 0, src.height, height, filterp);
  // First and last source rows the vertical pass reads.
  const yboxFirst = vert.bounds[0];
  const yboxLast = vert.bounds[height * 2 - 2] + vert.bounds[height * 2 - 1];

  let cur = src;
  if (needHorizontal) {
    const horiz = precomputeCoeffs(src.width, 0, src.width, width, filterp);
    for (let i = 0; i < height; i++) vert.bounds[i * 2] -= yboxFirst;
    const rows = yboxLast - yboxFirst;
    const tmp: Image8 = { width, height: rows, channels: src.channels, data: new Uint8Array(width * rows * src.channels) };
    resampleHorizontal(src, tmp, yboxFirst, horiz);
    cur = tmp;
  }
  if (needVertical) {
    const out: Image8 = { width: cur.width, height, channels: cur.channels, data: new Uint8Array(cur.width * height * cur.channels) };
    resampleVertical(cur, out, vert);
    return out;
  }
  return cur === src ? copy() : cur;
}

/**
 * Pillow resizes with NEAREST through `ImagingScaleAffine` (Geometry.c), not Resample.c: source positions are
 * accumulated in doubles from the first pixel centre, and pixels that fall outside stay zero (`fill`).
 */
function nearest(src: Image8, width: number, height: number): Image8 {
  const ch = src.channels;
  const out: Image8 = { width, height, channels: ch, data: new Uint8Array(width * height * ch) };
  const a0 = Math.fround(src.width) / width;
  const a4 = Math.fround(src.height) / height;
  const coord = (v: number): number => (v < 0.0 ? -1 : Math.trunc(v));
  const xintab = new Int32Array(width).fill(-1);
  let xo = a0 * 0.5;
  for (let x = 0; x < width; x++, xo += a0) {
    const xin = coord(xo);
    if (xin >= 0 && xin < src.width) xintab[x] = xin;
  }
  let yo = a4 * 0.5;
  for (let y = 0; y < height; y++, yo += a4) {
    const yi = coord(yo);
    if (yi < 0 || yi >= src.height) continue;
    for (let x = 0; x < width; x++) {
      const xin = xintab[x];
      if (xin < 0) continue;
      const s = (yi * src.width + xin) * ch;
      const o = (y * width + x) * ch;
      for (let b = 0; b < ch; b++) out.data[o + b] = src.data[s + b];
    }
  }
  return out;
}
