import { DataType, type ElemType, type GraphBuilder } from './onnx-builder';

/** [B, T, heads*dim] -> [B, heads, T, dim] */
export function splitHeads(g: GraphBuilder, x: string, heads: number, dim: number): string {
  return g.transpose(g.reshape(x, [0, 0, heads, dim]), [0, 2, 1, 3]);
}

/** [B, heads, T, dim] -> [B, T, heads*dim] */
export function mergeHeads(g: GraphBuilder, x: string, heads: number, dim: number): string {
  return g.reshape(g.transpose(x, [0, 2, 1, 3]), [0, 0, heads * dim]);
}

/**
 * softmax(q·kᵀ + bias)·v on head-split tensors. The 1/sqrt(dim) scale is folded into q's weights at
 * conversion. `softmaxType` lets fp16 graphs take the softmax in float32, as OPT does under fp16.
 */
export function attend(
  g: GraphBuilder,
  q: string,
  k: string,
  v: string,
  opts: { bias?: string; floatType: ElemType; softmaxType?: ElemType },
): string {
  let scores = g.matmul(q, g.transpose(k, [0, 1, 3, 2]));
  const softmaxType = opts.softmaxType ?? opts.floatType;
  if (softmaxType !== opts.floatType) scores = g.cast(scores, softmaxType);
  if (opts.bias) scores = g.add(scores, opts.bias);
  let probs = g.softmax(scores, -1);
  if (softmaxType !== opts.floatType) probs = g.cast(probs, opts.floatType);
  return g.matmul(probs, v);
}

/** The most negative finite value of a float type, which transformers adds to masked attention scores. */
export function minValue(t: ElemType): number {
  return t === DataType.FLOAT16 ? -65504 : -3.4028234663852886e38;
}
