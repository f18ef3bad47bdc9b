import * as fs from 'node:fs';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { names, OPT_POSITION_OFFSET } from '../checkpoint/layout';
import { throwIfAborted } from '../errors';
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

function encodeHeader(h: NativeHeader, offsets: bigint[]): Buffer {
  const head = Buffer.alloc(headerBytes(offsets.length));
  head.write(NATIVE_MAGIC, 0, 'latin1');
  const fields = [NATIVE_VERSION, ...SIZES.map((k) => h[k]), h.bits, 0];
  fields.forEach((v, i) => head.writeUInt32LE(v, 8 + 4 * i));
  offsets.forEach((o, i) => head.writeBigUInt64LE(o, 8 + 4 * fields.length + 8 * i));
  return head;
}

/** The sizes and bits a weights file was written for; undefined when it is not one of a version opt_open reads. */
export function readNativeHeader(file: string): NativeHeader | undefined {
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
  return { ...sizes, bits };
}

/** Writes the file with 4- or 8-bit weights; its bytes. */
export async function writeNativeDecoder(ckpt: Checkpoint, file: string, bits: 4 | 8, blockSize: number, signal?: AbortSignal): Promise<number> {
  const t = ckpt.config.text;
  const dim = t.hiddenSize / t.numHeads;
  const offsets: bigint[] = [];
  const header = headerBytes(t.numLayers * PER_LAYER + FINAL);
  let at = Math.ceil(header / ALIGN) * ALIGN;
  const fd = fs.openSync(file, 'w');
  try {
    const put = (bytes: Uint8Array) => {
      offsets.push(BigInt(at));
      fs.writeSync(fd, bytes, 0, bytes.length, at);
      at = Math.ceil((at + bytes.length) / ALIGN) * ALIGN;
    };
    const floats = (a: Float32Array) => put(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    const norm = async (prefix: string) => {
      floats(await ckpt.read(`${prefix}.weight`));
      floats(await ckpt.read(`${prefix}.bias`));
    };
    const linear = async (parts: LinearPart[], heads?: LinearHeads, withBias = true) => {
      const l = fusedLinear(ckpt, parts, heads);
      const packed = packColumnInterleaved(quantizeBlockwise(await l.weight(), l.n, l.k, bits, blockSize));
      put(packed.codes);
      floats(packed.scales);
      floats(packed.scaledZeros);
      if (withBias) floats(l.bias ? await l.bias() : new Float32Array(l.n));
    };
    for (let i = 0; i < t.numLayers; i++) {
      throwIfAborted(signal);
      const p = names.text.layer(i);
      const l = optLayerLinears(ckpt, i);
      await norm(`${p}.self_attn_layer_norm`);
      await linear(l.qkv.parts, l.qkv.heads);
      await linear(l.out.parts, l.out.heads);
      await norm(`${p}.final_layer_norm`);
      await linear(l.fc1.parts, l.fc1.heads);
      await linear(l.fc2.parts, l.fc2.heads);
    }
    await norm(names.text.finalLayerNorm);
    await linear([{ weight: ckpt.lmHeadName }], undefined, false);
    floats(await ckpt.read(names.text.embedPositions));
    const head = encodeHeader(
      { layers: t.numLayers, hidden: t.hiddenSize, heads: t.numHeads, headDim: dim, headSize: kvHeadSize(dim), ffn: t.ffnDim, vocab: ckpt.info(ckpt.lmHeadName).shape[0], positions: t.maxPositionEmbeddings + OPT_POSITION_OFFSET, block: blockSize, bits },
      offsets,
    );
    fs.writeSync(fd, head, 0, head.length, 0);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return fs.statSync(file).size;
}
