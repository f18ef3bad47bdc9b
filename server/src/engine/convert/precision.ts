import { UserError } from '../errors';
import { DataType } from '../graphs/onnx-builder';
import type { QuantSettings, WeightFormat } from '../graphs/weights';

export const PRECISIONS = ['fp32', 'fp16', 'int8', 'int4'] as const;
export type Precision = (typeof PRECISIONS)[number];
export type PrecisionChoice = Precision | 'auto';

/** File suffixes as transformers.js names its dtypes. */
export const PRECISION_SUFFIX: Record<Precision, string> = { fp32: '', fp16: '_fp16', int8: '_int8', int4: '_q4' };

/** The preferred MatMulNBits block (smaller only where it does not divide K). Measured in docs/performance.md's levers. */
export const DEFAULT_BLOCK_SIZE = 256;

export function parsePrecision(value: string): PrecisionChoice {
  if ((PRECISIONS as readonly string[]).includes(value) || value === 'auto') return value as PrecisionChoice;
  throw new UserError(`Unknown precision "${value}".`, `Use one of: auto, ${PRECISIONS.join(', ')}.`);
}

/** Quantized weights: repacked at load (from an optimized copy), and small enough to fault in again at every image. */
export function isQuantized(precision: Precision): boolean {
  return precision === 'int4' || precision === 'int8';
}

/** What `auto` means on a device: 4-bit weights on CPU (fastest and smallest there), fp16 on GPUs. */
export function resolvePrecision(choice: PrecisionChoice, device: string): Precision {
  if (choice !== 'auto') return choice;
  return device === 'cpu' ? 'int4' : 'fp16';
}

export interface ModuleFormats {
  vision: WeightFormat;
  qformer: WeightFormat;
  projection: WeightFormat;
  decoder: WeightFormat;
  embed: WeightFormat;
}

/**
 * How each part of BLIP-2 is stored at a precision (see the levers in docs/performance.md for the measurements):
 *  - the vision encoder, the Q-Former and the projection are compute-bound (534 GFLOP per image): per-channel int8
 *    weights with DynamicQuantizeMatMul run them twice as fast as 4-bit MatMulNBits on CPUs with int8 dot products;
 *  - the decoder is memory-bound (every weight is read once per token): the smallest weights, block-wise.
 * The Q-Former stays float32 at fp16, as transformers keeps it (`_keep_in_fp32_modules`).
 */
export function moduleFormats(precision: Precision, blockSize = DEFAULT_BLOCK_SIZE): ModuleFormats {
  const f32: WeightFormat = { floatType: DataType.FLOAT };
  switch (precision) {
    case 'fp32':
      return { vision: f32, qformer: f32, projection: f32, decoder: f32, embed: f32 };
    case 'fp16': {
      const f16: WeightFormat = { floatType: DataType.FLOAT16 };
      return { vision: f16, qformer: f32, projection: f16, decoder: f16, embed: f16 };
    }
    case 'int8':
    case 'int4': {
      const int8: WeightFormat = { floatType: DataType.FLOAT, quant: { kind: 'int8-dynamic' } };
      const quant: QuantSettings = { kind: 'nbits', bits: precision === 'int8' ? 8 : 4, blockSize, accuracyLevel: 4 };
      const q: WeightFormat = { floatType: DataType.FLOAT, quant };
      return { vision: int8, qformer: int8, projection: int8, decoder: q, embed: q };
    }
  }
}
