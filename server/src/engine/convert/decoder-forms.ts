/**
 * A conversion stores the int4 decoder's weights once, in the form this machine computes them in (convert.ts,
 * decoderFormsFor). When a load needs the other form (onnxruntime's decoder on a GPU, or asked for by name), it is
 * derived here from the native decoder's file: the same codes, scales and zero points in MatMulNBits' layout, the
 * same floats, no checkpoint needed. The derived graph is kept beside the model like onnxruntime's optimized copy,
 * checked by its own record.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkpointShapes } from '../checkpoint/checkpoint';
import { DamagedModelError } from '../errors';
import { buildDecoder } from '../graphs/decoder';
import { externalDataPath, writeModel } from '../graphs/external-data';
import { packMatMulNBits, packZeroPoints, unpackColumnInterleaved } from '../graphs/quantize';
import { filesIntact, recordFiles } from './integrity';
import type { ConvertedManifest } from './manifest';
import { nativeDecoderPieces, readNativeOffsets } from './native-weights';
import { moduleFormats } from './precision';

/** Whether the conversion holds onnxruntime's decoder weights as written by the converter. */
export function storesOnnxDecoder(manifest: ConvertedManifest): boolean {
  return !manifest.decoderForms || manifest.decoderForms.includes('onnxruntime');
}

/** The decoder graph onnxruntime loads: the converter's, or one derived from the native weights (made now if needed). */
export async function onnxDecoderGraph(dir: string, manifest: ConvertedManifest): Promise<string> {
  const graph = path.join(dir, manifest.graphs.decoder);
  if (storesOnnxDecoder(manifest)) return graph;
  const record = `${graph}.check.json`;
  const name = path.basename(graph);
  if (fs.existsSync(graph) && (await filesIntact(path.dirname(graph), record))) return graph;
  await deriveOnnxDecoder(dir, manifest, graph);
  await recordFiles(path.dirname(graph), [name, path.basename(externalDataPath(graph))], record);
  return graph;
}

async function deriveOnnxDecoder(dir: string, manifest: ConvertedManifest, target: string): Promise<void> {
  const nativeFile = path.join(dir, manifest.graphs.nativeDecoder ?? '');
  const blockSize = manifest.quantization?.blockSize;
  if (!manifest.graphs.nativeDecoder || !blockSize || !fs.existsSync(nativeFile)) {
    throw new DamagedModelError(`The converted model in ${dir} has neither onnxruntime's decoder weights nor the native decoder's.`, 'Convert it again: "BLIP-2: Set Up Model…" in the editor, or `blip2 verify --repair`.');
  }
  // The shapes come from the config: the decoder graph needs the checkpoint's sizes, not its values.
  const ckpt = checkpointShapes(dir, manifest.vocabSize);
  const bits = manifest.quantization!.bits as 4 | 8;
  const layout = nativeDecoderPieces(ckpt, bits, blockSize);
  const offsets = readNativeOffsets(nativeFile, layout.slots);
  if (!offsets) throw new DamagedModelError(`${nativeFile} is not a native decoder weights file.`, 'Convert the model again.');
  const fd = fs.openSync(nativeFile, 'r');
  const slot = (index: number, bytes: number) => {
    const out = new Uint8Array(new ArrayBuffer(bytes));
    fs.readSync(fd, out, 0, bytes, Number(offsets[index]));
    return out;
  };
  const floats = (index: number, count: number) => new Float32Array(slot(index, count * 4).buffer);
  try {
    // The graph's initializers by name, each from its piece of the native file.
    const producers = new Map<string, () => Uint8Array>();
    for (const piece of layout.pieces) {
      if (piece.linear) {
        const { n, k } = piece.linear;
        const nb = k / blockSize;
        const quantized = () => unpackColumnInterleaved(slot(piece.slots[0], piece.bytes[0]), floats(piece.slots[1], n * nb), floats(piece.slots[2], n * nb), n, k, bits, blockSize);
        producers.set(`${piece.label}.qweight`, () => packMatMulNBits(quantized()));
        producers.set(`${piece.label}.scales`, () => new Uint8Array(quantized().scales.buffer));
        producers.set(`${piece.label}.zero_points`, () => packZeroPoints(quantized()));
        if (piece.slots.length === 4) producers.set(`${piece.label}.bias`, () => slot(piece.slots[3], n * 4));
      } else if (piece.slots.length === 2) {
        const count = ckpt.info(`${piece.label}.weight`).shape[0];
        producers.set(`${piece.label}.weight`, () => slot(piece.slots[0], count * 4));
        producers.set(`${piece.label}.bias`, () => slot(piece.slots[1], count * 4));
      } else {
        const [rows, cols] = ckpt.info(piece.label).shape;
        producers.set(piece.label, () => slot(piece.slots[0], rows * cols * 4));
      }
    }
    const graph = buildDecoder(ckpt, moduleFormats(manifest.precision, blockSize).decoder);
    graph.lazy.forEach((init, i) => {
      const produce = producers.get(init.name);
      if (!produce) throw new Error(`no native piece for ${init.name}`);
      graph.lazy[i] = { ...init, produce: async () => produce() };
    });
    // Written under the final names in a folder of its own (the graph names its data file), then moved in: data first,
    // so a graph file in place always has its data.
    const tmpDir = fs.mkdtempSync(path.join(path.dirname(target), '.derive-'));
    try {
      const tmp = path.join(tmpDir, path.basename(target));
      await writeModel(graph, tmp, `BLIP-2 ${manifest.precision}, derived from the native decoder's weights`);
      fs.renameSync(externalDataPath(tmp), externalDataPath(target));
      fs.renameSync(tmp, target);
    } finally {
      fs.rmSync(tmpDir, { recursive: true, force: true });
    }
  } finally {
    fs.closeSync(fd);
  }
}
