/**
 * Block-wise round-to-nearest quantization in the layout of ONNX Runtime's MatMulNBits and
 * GatherBlockQuantized: each row of a [N, K] weight (a Hugging Face Linear is already [out, in])
 * is cut into blocks along K; each block gets a float scale and an unsigned zero point, so
 * w ≈ (q - zp) * scale. Asymmetric, with zero always representable, as ORT's own quantizer does.
 */
export interface BlockQuantized {
  bits: 4 | 8;
  blockSize: number;
  rows: number;
  cols: number;
  blocksPerRow: number;
  /** Unpacked codes, [rows, blocksPerRow * blockSize]; padding past `cols` holds the zero point. */
  codes: Uint8Array;
  scales: Float32Array; // [rows * blocksPerRow]
  zeroPoints: Uint8Array; // [rows * blocksPerRow], unpacked
}

export function quantizeBlockwise(w: Float32Array, rows: number, cols: number, bits: 4 | 8, blockSize: number): BlockQuantized {
  const blocksPerRow = Math.ceil(cols / blockSize);
  const padded = blocksPerRow * blockSize;
  const qmax = (1 << bits) - 1;
  const codes = new Uint8Array(rows * padded);
  const scales = new Float32Array(rows * blocksPerRow);
  const zeroPoints = new Uint8Array(rows * blocksPerRow);
  for (let r = 0; r < rows; r++) {
    const rowIn = r * cols;
    const rowOut = r * padded;
    for (let b = 0; b < blocksPerRow; b++) {
      const start = b * blockSize;
      const end = Math.min(cols, start + blockSize);
      let min = 0;
      let max = 0;
      for (let k = start; k < end; k++) {
        const v = w[rowIn + k];
        if (v < min) min = v;
        if (v > max) max = v;
      }
      let scale = (max - min) / qmax;
      let zp: number;
      if (scale === 0) {
        scale = 1;
        zp = 1 << (bits - 1);
      } else {
        zp = Math.min(qmax, Math.max(0, Math.round(-min / scale)));
      }
      const inv = 1 / scale;
      const bi = r * blocksPerRow + b;
      scales[bi] = scale;
      zeroPoints[bi] = zp;
      for (let k = start; k < start + blockSize; k++) {
        const q = k < end ? Math.round(w[rowIn + k] * inv) + zp : zp;
        codes[rowOut + k] = q < 0 ? 0 : q > qmax ? qmax : q;
      }
    }
  }
  return { bits, blockSize, rows, cols, blocksPerRow, codes, scales, zeroPoints };
}

/** MatMulNBits' B input: [N, blocks, blockSize * bits / 8], first element in the low nibble. */
export function packMatMulNBits(q: BlockQuantized): Uint8Array {
  if (q.bits === 8) return q.codes;
  const out = new Uint8Array(q.codes.length / 2);
  for (let i = 0, j = 0; j < out.length; i += 2, j++) out[j] = q.codes[i] | (q.codes[i + 1] << 4);
  return out;
}

/** Zero points packed per row: two per byte (low nibble first) for 4 bits, one per byte for 8. */
export function packZeroPoints(q: BlockQuantized): Uint8Array {
  if (q.bits === 8) return q.zeroPoints;
  const perRow = Math.ceil(q.blocksPerRow / 2);
  const out = new Uint8Array(q.rows * perRow);
  for (let r = 0; r < q.rows; r++) {
    for (let b = 0; b < q.blocksPerRow; b++) {
      const zp = q.zeroPoints[r * q.blocksPerRow + b];
      out[r * perRow + (b >> 1)] |= b & 1 ? zp << 4 : zp;
    }
  }
  return out;
}

/** GatherBlockQuantized's data input: codes without block padding, [rows, cols * bits / 8]. */
export function packGatherData(q: BlockQuantized): Uint8Array {
  const padded = q.blocksPerRow * q.blockSize;
  const perRow = (q.cols * q.bits) / 8;
  const out = new Uint8Array(q.rows * perRow);
  for (let r = 0; r < q.rows; r++) {
    const src = r * padded;
    if (q.bits === 8) {
      out.set(q.codes.subarray(src, src + q.cols), r * perRow);
    } else {
      for (let k = 0; k < q.cols; k += 2) out[r * perRow + k / 2] = q.codes[src + k] | (q.codes[src + k + 1] << 4);
    }
  }
  return out;
}

/**
 * The block that suits a reduction length: the preferred size, halved until it divides K (down to 16,
 * MatMulNBits' smallest), so the real model's K values (768 … 10240) never carry a padded block.
 */
export function blockSizeFor(k: number, preferred: number): number {
  let b = preferred;
  while (b > 16 && k % b !== 0) b /= 2;
  return b;
}

/**
 * Symmetric int8 with one scale per output channel, in the layout DynamicQuantizeMatMul takes: a Hugging Face
 * Linear weight [N, K] becomes B [K, N] (transposed), scales [N], zero points [N] (all zero).
 */
export interface ChannelQuantized {
  codes: Int8Array; // [K, N]
  scales: Float32Array; // [N]
}

export function quantizePerChannelInt8(w: Float32Array, n: number, k: number): ChannelQuantized {
  const codes = new Int8Array(k * n);
  const scales = new Float32Array(n);
  for (let c = 0; c < n; c++) {
    const row = c * k;
    let max = 0;
    for (let i = 0; i < k; i++) {
      const a = Math.abs(w[row + i]);
      if (a > max) max = a;
    }
    const s = max === 0 ? 1 : max / 127;
    const inv = 1 / s;
    scales[c] = s;
    for (let i = 0; i < k; i++) {
      const q = Math.round(w[row + i] * inv);
      codes[i * n + c] = q > 127 ? 127 : q < -127 ? -127 : q;
    }
  }
  return { codes, scales };
}

/**
 * Codes in the native decoder's layout (server/native/opt-decoder.c): columns (rows of W) in groups of 16, per group
 * and block `blockSize / 8` chunks of 8 values each. 4 bits: a chunk is 64 bytes, 4 per column, byte t = code t |
 * code t + 4 << 4. 8 bits: a chunk is 128 bytes, codes 0-3 of each column (4 bytes a column), then codes 4-7. Then
 * per group and block the 16 scales and the 16 scale × zero point products. Rows must be a multiple of 16 and cols
 * of blockSize.
 */
export function packColumnInterleaved(q: BlockQuantized): { codes: Uint8Array; scales: Float32Array; scaledZeros: Float32Array } {
  if (q.rows % 16 || q.cols % q.blockSize || q.blockSize % 8) throw new Error(`no interleaved layout for ${q.rows}x${q.cols} in ${q.bits}-bit blocks of ${q.blockSize}`);
  const groups = q.rows / 16;
  const nb = q.blocksPerRow;
  const chunks = q.blockSize / 8;
  const chunkBytes = 16 * q.bits;
  const codes = new Uint8Array((q.rows * q.cols * q.bits) / 8);
  const scales = new Float32Array(q.rows * nb);
  const scaledZeros = new Float32Array(q.rows * nb);
  for (let g = 0; g < groups; g++) {
    for (let b = 0; b < nb; b++) {
      const base = (g * nb + b) * chunks * chunkBytes;
      for (let c = 0; c < 16; c++) {
        const row = g * 16 + c;
        const src = row * q.cols + b * q.blockSize;
        for (let j = 0; j < chunks; j++) {
          const at = base + j * chunkBytes + c * 4;
          for (let t = 0; t < 4; t++) {
            const lo = q.codes[src + j * 8 + t];
            const hi = q.codes[src + j * 8 + 4 + t];
            if (q.bits === 4) {
              codes[at + t] = lo | (hi << 4);
            } else {
              codes[at + t] = lo;
              codes[at + 64 + t] = hi;
            }
          }
        }
        const s = q.scales[row * nb + b];
        scales[(g * nb + b) * 16 + c] = s;
        scaledZeros[(g * nb + b) * 16 + c] = s * q.zeroPoints[row * nb + b];
      }
    }
  }
  return { codes, scales, scaledZeros };
}

/**
 * packColumnInterleaved undone: the codes, scales and zero points of the quantization it was given (zero points come
 * back exactly, as scale × zero point / scale rounds to the integer it was).
 */
export function unpackColumnInterleaved(codes: Uint8Array, scales: Float32Array, scaledZeros: Float32Array, rows: number, cols: number, bits: 4 | 8, blockSize: number): BlockQuantized {
  const nb = cols / blockSize;
  const chunks = blockSize / 8;
  const chunkBytes = 16 * bits;
  const out: BlockQuantized = {
    bits,
    blockSize,
    rows,
    cols,
    blocksPerRow: nb,
    codes: new Uint8Array(rows * cols),
    scales: new Float32Array(rows * nb),
    zeroPoints: new Uint8Array(rows * nb),
  };
  for (let g = 0; g < rows / 16; g++) {
    for (let b = 0; b < nb; b++) {
      const base = (g * nb + b) * chunks * chunkBytes;
      for (let c = 0; c < 16; c++) {
        const row = g * 16 + c;
        const dst = row * cols + b * blockSize;
        for (let j = 0; j < chunks; j++) {
          const at = base + j * chunkBytes + c * 4;
          for (let t = 0; t < 4; t++) {
            out.codes[dst + j * 8 + t] = bits === 4 ? codes[at + t] & 15 : codes[at + t];
            out.codes[dst + j * 8 + 4 + t] = bits === 4 ? codes[at + t] >> 4 : codes[at + 64 + t];
          }
        }
        const s = scales[(g * nb + b) * 16 + c];
        out.scales[row * nb + b] = s;
        out.zeroPoints[row * nb + b] = Math.round(scaledZeros[(g * nb + b) * 16 + c] / s);
      }
    }
  }
  return out;
}
