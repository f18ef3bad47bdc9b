import * as fs from 'node:fs';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { names, OPT_POSITION_OFFSET } from '../checkpoint/layout';
import { throwIfAborted } from '../errors';
import { kvHeadSize, optLayerLinears } from '../graphs/decoder';
import { packColumnInterleaved, quantizeBlockwise } from '../graphs/quantize';
import { fusedLinear, type LinearHeads, type LinearPart } from '../graphs/weights';

/**
 * The weights of the int4 decoder for server/native/opt-decoder.c, beside the ONNX graphs: the same 4-bit codes,
 * scales and zero points as the decoder graph's MatMulNBits (one quantization, quantize.ts), in that kernel's
 * column-interleaved layout, and the float norms, biases and position table. The header below mirrors opt_open's.
 */
export const NATIVE_MAGIC = 'BLIP2OPT';
export const NATIVE_VERSION = 1;
const PER_LAYER = 20;
const FINAL = 6;
const ALIGN = 64;

/**
 * Whether the kernel can tile this model's sizes (the config parser already refuses the OPT variants it does not
 * compute: projected embeddings, post-norm layers, other activations).
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
}

/** The sizes a weights file was written for; undefined when it is not one of this version. */
export function readNativeHeader(file: string): NativeHeader | undefined {
  const head = Buffer.alloc(48);
  const fd = fs.openSync(file, 'r');
  try {
    if (fs.readSync(fd, head, 0, head.length, 0) < head.length) return undefined;
  } finally {
    fs.closeSync(fd);
  }
  if (head.toString('latin1', 0, 8) !== NATIVE_MAGIC || head.readUInt32LE(8) !== NATIVE_VERSION) return undefined;
  const [layers, hidden, heads, headDim, headSize, ffn, vocab, positions, block] = Array.from({ length: 9 }, (_, i) => head.readUInt32LE(12 + 4 * i));
  return { layers, hidden, heads, headDim, headSize, ffn, vocab, positions, block };
}

/** Writes the file; its bytes. */
export async function writeNativeDecoder(ckpt: Checkpoint, file: string, blockSize: number, signal?: AbortSignal): Promise<number> {
  const t = ckpt.config.text;
  const dim = t.hiddenSize / t.numHeads;
  const offsets: bigint[] = [];
  const header = 8 + 10 * 4 + 8 * (t.numLayers * PER_LAYER + FINAL);
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
      const packed = packColumnInterleaved(quantizeBlockwise(await l.weight(), l.n, l.k, 4, blockSize));
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
    const head = Buffer.alloc(header);
    head.write(NATIVE_MAGIC, 0, 'latin1');
    const fields = [NATIVE_VERSION, t.numLayers, t.hiddenSize, t.numHeads, dim, kvHeadSize(dim), t.ffnDim, ckpt.info(ckpt.lmHeadName).shape[0], t.maxPositionEmbeddings + OPT_POSITION_OFFSET, blockSize];
    fields.forEach((v, i) => head.writeUInt32LE(v, 8 + 4 * i));
    offsets.forEach((o, i) => head.writeBigUInt64LE(o, 8 + 4 * fields.length + 8 * i));
    fs.writeSync(fd, head, 0, head.length, 0);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return fs.statSync(file).size;
}
