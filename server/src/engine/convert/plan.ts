/**
 * What a conversion writes, as a list of outputs each computed from named checkpoint tensors. The converter
 * (convert.ts) produces an output as soon as the last of its tensors has arrived, in the order the checkpoint's
 * bytes come in, so a checkpoint streamed from the Hub never has to be on disk whole, and memory holds only the
 * tensors still waiting for a partner (a layer's q, k and v projections, say).
 */
import type { Checkpoint } from '../checkpoint/checkpoint';
import { buildDecoder, buildEmbedTokens } from '../graphs/decoder';
import { onnx } from 'onnx-proto';
import { DataType, type GraphBuilder, type LazyInitializer } from '../graphs/onnx-builder';
import { buildVisionEncoder } from '../graphs/vision-encoder';
import { nativeDecoderPieces, type NativeDecoderLayout, type NativePiece } from './native-weights';
import { DEFAULT_BLOCK_SIZE, moduleFormats, PRECISION_SUFFIX, type Precision } from './precision';

/** Who computes the decoder, and so which form of its weights a conversion stores (see decoderFormsFor). */
export type DecoderForm = 'onnxruntime' | 'native';

export type GraphPhase = 'vision_encoder' | 'embed_tokens' | 'decoder_model_merged';

export interface PlannedGraph {
  phase: GraphPhase;
  /** Relative to the model folder. */
  file: string;
  builder: GraphBuilder;
  /** Whether its weights are written: the decoder graph without them when only the native form is stored. */
  withWeights: boolean;
}

export type PlannedOutput =
  | { kind: 'initializer'; graph: number; init: LazyInitializer; sources: readonly string[] }
  | ({ kind: 'native' } & NativePiece);

export interface ConversionPlan {
  precision: Precision;
  graphs: PlannedGraph[];
  native?: NativeDecoderLayout & { file: string };
  /** Every output, in the order ties are broken: the graphs' weights in graph order, then the native pieces. */
  outputs: PlannedOutput[];
  blockSize: number;
  decoderForms: DecoderForm[];
}

export function graphFiles(precision: Precision): Record<GraphPhase, string> {
  const suffix = PRECISION_SUFFIX[precision];
  return {
    vision_encoder: `onnx/vision_encoder${suffix}.onnx`,
    embed_tokens: `onnx/embed_tokens${suffix}.onnx`,
    decoder_model_merged: `onnx/decoder_model_merged${suffix}.onnx`,
  };
}

export function planConversion(ckpt: Checkpoint, precision: Precision, decoderForms: readonly DecoderForm[], blockSize = DEFAULT_BLOCK_SIZE): ConversionPlan {
  const formats = moduleFormats(precision, blockSize);
  const files = graphFiles(precision);
  const graphs: PlannedGraph[] = [
    { phase: 'vision_encoder', file: files.vision_encoder, builder: buildVisionEncoder(ckpt, formats), withWeights: true },
    { phase: 'embed_tokens', file: files.embed_tokens, builder: buildEmbedTokens(ckpt, formats.embed), withWeights: true },
    { phase: 'decoder_model_merged', file: files.decoder_model_merged, builder: buildDecoder(ckpt, formats.decoder), withWeights: decoderForms.includes('onnxruntime') },
  ];
  const outputs: PlannedOutput[] = [];
  graphs.forEach((g, graph) => {
    if (!g.withWeights) return;
    for (const init of g.builder.lazy) outputs.push({ kind: 'initializer', graph, init, sources: init.sources });
  });
  let native: ConversionPlan['native'];
  const quant = formats.decoder.quant;
  if (decoderForms.includes('native')) {
    if (quant?.kind !== 'nbits') throw new Error(`no native decoder weights at ${precision}`);
    const layout = nativeDecoderPieces(ckpt, quant.bits, quant.blockSize);
    native = { ...layout, file: `onnx/decoder_native${PRECISION_SUFFIX[precision]}.bin` };
    for (const piece of layout.pieces) outputs.push({ kind: 'native', ...piece });
  }
  return { precision, graphs, native, outputs, blockSize, decoderForms: [...decoderForms] };
}

const ELEMENT_BYTES: Partial<Record<number, number>> = {
  [DataType.FLOAT]: 4,
  [DataType.FLOAT16]: 2,
  [DataType.UINT8]: 1,
  [DataType.INT8]: 1,
  [DataType.INT64]: 8,
  [DataType.INT32]: 4,
};

/**
 * What a conversion will write, in bytes, before it starts: every weight's size from its shape and type, padded to
 * the alignments the writers use (an upper bound by at most one alignment per weight), and the graph files.
 */
export function plannedBytes(plan: ConversionPlan): number {
  let total = 0;
  for (const o of plan.outputs) {
    if (o.kind === 'initializer') {
      const bytes = o.init.dims.reduce((a, d) => a * d, 1) * (ELEMENT_BYTES[o.init.dataType] ?? 4);
      total += bytes <= 1024 ? bytes : Math.ceil(bytes / 4096) * 4096;
    } else {
      total += o.bytes.reduce((s, b) => s + Math.ceil(b / plan.native!.align) * plan.native!.align, 0);
    }
  }
  if (plan.native) total += plan.native.headerBytes;
  // The manifest and the integrity records written beside the graphs.
  total += 16 << 10;
  // The graph files: their nodes and small constants, as encoded (the weights' references add a few bytes each).
  for (const g of plan.graphs) if (g.withWeights) total += onnx.ModelProto.encode(g.builder.toModel([], '')).finish().length + 64 * g.builder.lazy.length;
  return total;
}
