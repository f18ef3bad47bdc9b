import * as fs from 'node:fs';
import type { Checkpoint } from '../checkpoint/checkpoint';
import { names, OPT_POSITION_OFFSET } from '../checkpoint/layout';
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

/** Where each slot's bytes are in a weights file (its header's offset table); undefined when it is not one of this version. */
export function readNativeOffsets(file: string, slots: number): bigint[] | undefined {
  if (!readNativeHeader(file)) return undefined;
  const table = Buffer.alloc(8 * slots);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, table, 0, table.length, 48);
  } finally {
    fs.closeSync(fd);
  }
  return Array.from({ length: slots }, (_, i) => table.readBigUInt64LE(8 * i));
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
  pieces: NativePiece[];
  /** The header, once every slot's offset is known. */
  header: (offsets: readonly bigint[]) => Uint8Array;
}

/**
 * The file's pieces in the order opt_open reads its offset table (per layer: the attention's norm, q|k|v, the output
 * projection, the feed-forward norm, fc1, fc2; then the final norm, the vocabulary projection and the positions),
 * each computed when its tensors are there. The writer places them where it likes and fills the table at the end.
 */
export function nativeDecoderPieces(ckpt: Checkpoint, blockSize: number): NativeDecoderLayout {
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
      bytes: [(l.n * l.k) / 2, 4 * blocks, 4 * blocks, ...(withBias ? [4 * l.n] : [])],
      sources: [...l.weightSources, ...(withBias ? l.biasSources : [])],
      label,
      produce: async () => {
        const packed = packColumnInterleaved(quantizeBlockwise(await l.weight(), l.n, l.k, 4, blockSize));
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

  const fields = [NATIVE_VERSION, t.numLayers, t.hiddenSize, t.numHeads, dim, kvHeadSize(dim), t.ffnDim, ckpt.info(ckpt.lmHeadName).shape[0], t.maxPositionEmbeddings + OPT_POSITION_OFFSET, blockSize];
  const raw = 8 + 4 * fields.length + 8 * slot;
  return {
    headerBytes: Math.ceil(raw / ALIGN) * ALIGN,
    align: ALIGN,
    slots: slot,
    pieces,
    header: (offsets) => {
      const head = Buffer.alloc(raw);
      head.write(NATIVE_MAGIC, 0, 'latin1');
      fields.forEach((v, i) => head.writeUInt32LE(v, 8 + 4 * i));
      offsets.forEach((o, i) => head.writeBigUInt64LE(o, 8 + 4 * fields.length + 8 * i));
      return head;
    },
  };
}
