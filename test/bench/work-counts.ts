// What one caption asks of the machine, counted from the configuration: the FLOPs of the compute-bound stages and
// the bytes a decoding step streams. The bench divides these by the machine's measured rates to get its bounds.
import type { Blip2Config } from '../../server/src/engine/checkpoint/config';
import { hasCrossAttention } from '../../server/src/engine/checkpoint/layout';

/** Multiply-adds x2 of one image through the vision session: ViT-g, Q-Former (query side) and the projection. */
export function visionFlops(cfg: Blip2Config): number {
  const v = cfg.vision;
  const patches = (v.imageSize / v.patchSize) ** 2;
  const s = patches + 1;
  const d = v.hiddenSize;
  let f = 2 * patches * d * 3 * v.patchSize ** 2;
  f += v.numLayers * (2 * s * d * (3 * d + d + 2 * v.intermediateSize) + 2 * 2 * s * s * d);
  const q = cfg.qformer;
  const nq = cfg.numQueryTokens;
  const h = q.hiddenSize;
  for (let i = 0; i < q.numLayers; i++) {
    f += 2 * nq * h * 4 * h + 2 * 2 * nq * nq * h;
    if (hasCrossAttention(cfg, i)) f += 2 * nq * h * 2 * h + 2 * s * q.encoderHiddenSize * 2 * h + 2 * 2 * nq * s * h;
    f += 2 * nq * h * 2 * q.intermediateSize;
  }
  return f + 2 * nq * h * cfg.text.hiddenSize;
}

/** Weights of the decoder's matmuls (every layer's projections and the vocabulary projection). */
export function decoderMatmulParams(cfg: Blip2Config, vocab: number): number {
  const t = cfg.text;
  const h = t.hiddenSize;
  return t.numLayers * (4 * h * h + 2 * h * t.ffnDim) + vocab * h;
}

/** FLOPs of a decoder pass over `tokens` new positions after `past` cached ones (logits for the last one only). */
export function decoderFlops(cfg: Blip2Config, vocab: number, tokens: number, past = 0): number {
  const t = cfg.text;
  const h = t.hiddenSize;
  const layers = t.numLayers * 2 * tokens * (4 * h * h + 2 * h * t.ffnDim);
  const attention = t.numLayers * 2 * 2 * tokens * (past + (tokens + 1) / 2) * h;
  return layers + attention + 2 * vocab * h;
}
