import * as fs from 'node:fs';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { names, OPT_POSITION_OFFSET } from '../checkpoint/layout';
import { kvHeadSize, optLayerLinears } from '../graphs/decoder';
import { packColumnInterleaved, quantizeBlockwise } from '../graphs/quantize';
import { fusedLinear, type LinearHeads, type LinearPart } from '../graphs/weights';

/**
 * The weights of the int4 or int8 decoder for server/native/opt-decoder.c, beside the ONNX graphs: the same 4- or
 * 8-bit codes, scales and zero points as the decoder graph's MatMulNBits (one quantization, quantize.ts), in that
 * kernel's column-interleaved layout, and the float norms, biases and position table. The header below mirrors
 * opt_open's.
 */
export const NATIVE_MAGIC = 'BLIP2OPT';
/** Version 2 names the weights' bits; version 1 (converter version 6's int4 files) had 4 bits and no such field. */
export const NATIVE_VERSION = 2;
const PER_LAYER = 20;
const FINAL = 6;
const ALIGN = 64;

/**
 * Whether the kernel can tile this model's sizes, at 4 bits and at 8 alike (the config parser already refuses the
 * OPT variants it does not compute: projected embeddings, post-norm layers, other activations).
 */
export function nativeDecoderFits(ckpt: Checkpoint, blockSize: number): boolean {
  const t = ckpt.config.text;
  const width = t.numHeads * kvHeadSize(t.hiddenSize / t.numHeads);
  const vocab = ckpt.info(ckpt.lmHeadName).shape[0];
  return blockSize % 8 === 0 && [t.hiddenSize, width, t.ffnDim].every((k) => k % blockSize === 0 && k % 32 === 0) && vocab % 16 === 0;
}

export interface NativeHeader {
  layers: number;
  hidden: number;
  heads: number;
  headDim: number;
  headSize: number;
  ffn: number;
  vocab: number;
  positions: number;
  block: number;
  bits: 4 | 8;
}

const SIZES = ['layers', 'hidden', 'heads', 'headDim', 'headSize', 'ffn', 'vocab', 'positions', 'block'] as const;

/**
 * Bytes before the first tensor's offset, for `tensors` tensors: the magic, the version, the sizes, the bits, a zero
 * that keeps the offsets 8-byte aligned, and the offsets.
 */
function headerBytes(tensors: number): number {
  return 8 + 4 * (1 + SIZES.length + 2) + 8 * tensors;
}

/** Where the offset table starts in a file of `version`. */
function offsetsAt(version: number): number {
  return version === 1 ? 8 + 4 * (1 + SIZES.length) : 8 + 4 * (1 + SIZES.length + 2);
}

function encodeHeader(h: NativeHeader, offsets: readonly bigint[]): Buffer {
  const head = Buffer.alloc(headerBytes(offsets.length));
  head.write(NATIVE_MAGIC, 0, 'latin1');
  const fields = [NATIVE_VERSION, ...SIZES.map((k) => h[k]), h.bits, 0];
  fields.forEach((v, i) => head.writeUInt32LE(v, 8 + 4 * i));
  offsets.forEach((o, i) => head.writeBigUInt64LE(o, 8 + 4 * fields.length + 8 * i));
  return head;
}

/** The version, sizes and bits a weights file was written for; undefined when it is not one of a version opt_open reads. */
function readHeader(file: string): (NativeHeader & { version: number }) | undefined {
  const head = Buffer.alloc(8 + 4 * (1 + SIZES.length + 1));
  const fd = fs.openSync(file, 'r');
  try {
    if (fs.readSync(fd, head, 0, head.length, 0) < head.length) return undefined;
  } finally {
    fs.closeSync(fd);
  }
  const version = head.readUInt32LE(8);
  if (head.toString('latin1', 0, 8) !== NATIVE_MAGIC || (version !== 1 && version !== NATIVE_VERSION)) return undefined;
  const bits = version === 1 ? 4 : head.readUInt32LE(12 + 4 * SIZES.length);
  if (bits !== 4 && bits !== 8) return undefined;
  const sizes = Object.fromEntries(SIZES.map((k, i) => [k, head.readUInt32LE(12 + 4 * i)])) as Record<(typeof SIZES)[number], number>;
  return { ...sizes, bits, version };
}

/** The sizes and bits a weights file was written for; undefined when it is not one of a version opt_open reads. */
export function readNativeHeader(file: string): NativeHeader | undefined {
  const h = readHeader(file);
  if (!h) return undefined;
  const { version: _version, ...header } = h;
  return header;
}

/** Where each slot's bytes are in a weights file (its header's offset table); undefined when it is not one of a version opt_open reads. */
export function readNativeOffsets(file: string, slots: number): bigint[] | undefined {
  const h = readHeader(file);
  if (!h) return undefined;
  const table = Buffer.alloc(8 * slots);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, table, 0, table.length, offsetsAt(h.version));
  } finally {
    fs.closeSync(fd);
  }
  return Array.from({ length: slots }, (_, i) => table.readBigUInt64LE(8 * i));
}

/** One output of the weights file: the slots of the header's offset table it fills, and the tensors it is made from. */
export interface NativePiece {
  slots: number[];
  /** A Linear's output and input sizes (its slots: codes, scales, scale × zero points, and the bias if any). */
  linear?: { n: number; k: number };
  /** Bytes of each slot. */
  bytes: number[];
  sources: readonly string[];
  label: string;
  produce: () => Promise<Uint8Array[]>;
}

export interface NativeDecoderLayout {
  /** Bytes before the first piece: the header and its offset table, aligned. */
  headerBytes: number;
  /** Pieces are placed on multiples of this. */
  align: number;
  slots: number;
  bits: 4 | 8;
  pieces: NativePiece[];
  /** The header, once every slot's offset is known. */
  header: (offsets: readonly bigint[]) => Uint8Array;
}

/**
 * The file's pieces in the order opt_open reads its offset table (per layer: the attention's norm, q|k|v, the output
 * projection, the feed-forward norm, fc1, fc2; then the final norm, the vocabulary projection and the positions),
 * each computed when its tensors are there, with 4- or 8-bit weights. The writer places them where it likes and
 * fills the table at the end.
 */
export function nativeDecoderPieces(ckpt: Checkpoint, bits: 4 | 8, blockSize: number): NativeDecoderLayout {
  const t = ckpt.config.text;
  const dim = t.hiddenSize / t.numHeads;
  const pieces: NativePiece[] = [];
  let slot = 0;
  const take = (n: number) => Array.from({ length: n }, () => slot++);
  const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const norm = (prefix: string) =>
    pieces.push({
      slots: take(2),
      bytes: [0, 1].map(() => 4 * ckpt.info(`${prefix}.weight`).shape[0]),
      sources: [`${prefix}.weight`, `${prefix}.bias`],
      label: prefix,
      produce: async () => [bytes(await ckpt.read(`${prefix}.weight`)), bytes(await ckpt.read(`${prefix}.bias`))],
    });
  const linear = (label: string, parts: LinearPart[], heads?: LinearHeads, withBias = true) => {
    const l = fusedLinear(ckpt, parts, heads);
    const blocks = (l.n * l.k) / blockSize;
    pieces.push({
      slots: take(withBias ? 4 : 3),
      linear: { n: l.n, k: l.k },
      bytes: [(l.n * l.k * bits) / 8, 4 * blocks, 4 * blocks, ...(withBias ? [4 * l.n] : [])],
      sources: [...l.weightSources, ...(withBias ? l.biasSources : [])],
      label,
      produce: async () => {
        const packed = packColumnInterleaved(quantizeBlockwise(await l.weight(), l.n, l.k, bits, blockSize));
        const out = [packed.codes, bytes(packed.scales), bytes(packed.scaledZeros)];
        if (withBias) out.push(bytes(l.bias ? await l.bias() : new Float32Array(l.n)));
        return out;
      },
    });
  };
  for (let i = 0; i < t.numLayers; i++) {
    const p = names.text.layer(i);
    const l = optLayerLinears(ckpt, i);
    norm(`${p}.self_attn_layer_norm`);
    linear(`${p}.self_attn.qkv_proj`, l.qkv.parts, l.qkv.heads);
    linear(`${p}.self_attn.out_proj`, l.out.parts, l.out.heads);
    norm(`${p}.final_layer_norm`);
    linear(`${p}.fc1`, l.fc1.parts, l.fc1.heads);
    linear(`${p}.fc2`, l.fc2.parts, l.fc2.heads);
  }
  norm(names.text.finalLayerNorm);
  linear('lm_head', [{ weight: ckpt.lmHeadName }], undefined, false);
  const positions = ckpt.info(names.text.embedPositions).shape;
  pieces.push({ slots: take(1), bytes: [4 * positions[0] * positions[1]], sources: [names.text.embedPositions], label: names.text.embedPositions, produce: async () => [bytes(await ckpt.read(names.text.embedPositions))] });
  if (slot !== t.numLayers * PER_LAYER + FINAL) throw new Error(`native decoder layout has ${slot} slots`);

  const sizes: NativeHeader = {
    layers: t.numLayers,
    hidden: t.hiddenSize,
    heads: t.numHeads,
    headDim: dim,
    headSize: kvHeadSize(dim),
    ffn: t.ffnDim,
    vocab: ckpt.info(ckpt.lmHeadName).shape[0],
    positions: t.maxPositionEmbeddings + OPT_POSITION_OFFSET,
    block: blockSize,
    bits,
  };
  return {
    headerBytes: Math.ceil(headerBytes(slot) / ALIGN) * ALIGN,
    align: ALIGN,
    slots: slot,
    bits,
    pieces,
    header: (offsets) => encodeHeader(sizes, offsets),
  };
}
