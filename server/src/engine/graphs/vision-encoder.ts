import type { Checkpoint } from '../checkpoint/checkpoint';
import { hasCrossAttention, names } from '../checkpoint/layout';
import { attend, mergeHeads, splitHeads } from './attention';
import { DataType, GraphBuilder } from './onnx-builder';
import type { WeightEmitter, WeightFormat } from './weights';
import { WeightEmitter as Emitter } from './weights';

export interface VisionFormats {
  vision: WeightFormat;
  qformer: WeightFormat;
  projection: WeightFormat;
}

export const VISION_OUTPUTS = {
  imageFeatures: 'image_features',
  visionHidden: 'vision_last_hidden_state',
  qformerHidden: 'qformer_last_hidden_state',
} as const;

/**
 * pixel_values [B,3,S,S] -> image_features [B, queries, text_hidden]: the ViT, the Q-Former and the
 * language projection in one graph (the rows that replace the `<image>` tokens). The two intermediate
 * states are outputs too, so parity with transformers can be checked stage by stage at no cost.
 * Inputs and outputs are float32 at every precision.
 */
export function buildVisionEncoder(ckpt: Checkpoint, formats: VisionFormats): GraphBuilder {
  const cfg = ckpt.config;
  const g = new GraphBuilder('blip2_vision_encoder');
  const v = cfg.vision;
  const q = cfg.qformer;
  const size = v.imageSize;
  const pixels = g.input('pixel_values', DataType.FLOAT, ['batch_size', 3, size, size]);

  const vw = new Emitter(g, ckpt, formats.vision);
  const imageEmbeds = g.withScope('vision_model', () => visionTransformer(g, vw, ckpt, pixels));
  g.output(toFloat32(g, imageEmbeds, vw.floatType), VISION_OUTPUTS.visionHidden, DataType.FLOAT, ['batch_size', (size / v.patchSize) ** 2 + 1, v.hiddenSize]);

  const qw = vw.withFormat(formats.qformer);
  const queryOut = g.withScope('qformer', () => qformer(g, qw, ckpt, castTo(g, imageEmbeds, vw.floatType, qw.floatType)));
  g.output(toFloat32(g, queryOut, qw.floatType), VISION_OUTPUTS.qformerHidden, DataType.FLOAT, ['batch_size', cfg.numQueryTokens, q.hiddenSize]);

  const pw = vw.withFormat(formats.projection);
  const features = g.withScope('language_projection', () =>
    pw.linear(castTo(g, queryOut, qw.floatType, pw.floatType), [{ weight: `${names.languageProjection}.weight`, bias: `${names.languageProjection}.bias` }], names.languageProjection),
  );
  g.output(toFloat32(g, features, pw.floatType), VISION_OUTPUTS.imageFeatures, DataType.FLOAT, ['batch_size', cfg.numQueryTokens, cfg.text.hiddenSize]);
  return g;
}

function visionTransformer(g: GraphBuilder, w: WeightEmitter, ckpt: Checkpoint, pixels: string): string {
  const v = ckpt.config.vision;
  const n = names.vision;
  const heads = v.numHeads;
  const dim = v.hiddenSize / heads;
  const ft = w.floatType;

  let x = castTo(g, pixels, DataType.FLOAT, ft);
  x = g.op('Conv', [x, w.tensor(n.patchWeight), w.tensor(n.patchBias)], {
    kernel_shape: [v.patchSize, v.patchSize],
    strides: [v.patchSize, v.patchSize],
  });
  x = g.transpose(g.reshape(x, [0, v.hiddenSize, -1]), [0, 2, 1]);
  const batch = g.shape(x, 0, 1);
  const cls = g.op('Expand', [w.tensor(n.classEmbedding), g.concat([batch, g.constInt64([1, v.hiddenSize])], 0)]);
  x = g.concat([cls, x], 1);
  x = g.add(x, w.tensor(n.positionEmbedding));

  for (let i = 0; i < v.numLayers; i++) {
    const p = n.layer(i);
    x = g.withScope(`layers.${i}`, () => {
      const h = w.layerNorm(x, `${p}.layer_norm1`, v.layerNormEps);
      const qkv = w.linear(h, [{ weight: `${p}.self_attn.qkv.weight`, bias: v.qkvBias ? `${p}.self_attn.qkv.bias` : undefined, scaleRows: { rows: v.hiddenSize, factor: dim ** -0.5 } }], `${p}.self_attn.qkv`);
      const [qh, kh, vh] = g.split(qkv, [v.hiddenSize, v.hiddenSize, v.hiddenSize], 2).map((t) => splitHeads(g, t, heads, dim));
      const attn = mergeHeads(g, attend(g, qh, kh, vh, { floatType: ft }), heads, dim);
      let y = g.add(x, w.linear(attn, [{ weight: `${p}.self_attn.projection.weight`, bias: `${p}.self_attn.projection.bias` }], `${p}.self_attn.projection`));
      const h2 = w.layerNorm(y, `${p}.layer_norm2`, v.layerNormEps);
      const mlp = w.linear(g.gelu(w.linear(h2, [{ weight: `${p}.mlp.fc1.weight`, bias: `${p}.mlp.fc1.bias` }], `${p}.mlp.fc1`)), [{ weight: `${p}.mlp.fc2.weight`, bias: `${p}.mlp.fc2.bias` }], `${p}.mlp.fc2`);
      y = g.add(y, mlp);
      return y;
    });
  }
  return w.layerNorm(x, n.postLayerNorm, v.layerNormEps);
}

function qformer(g: GraphBuilder, w: WeightEmitter, ckpt: Checkpoint, imageEmbeds: string): string {
  const cfg = ckpt.config;
  const q = cfg.qformer;
  const heads = q.numHeads;
  const dim = q.hiddenSize / heads;
  const scale = dim ** -0.5;
  const ft = w.floatType;

  const batch = g.shape(imageEmbeds, 0, 1);
  let x = g.op('Expand', [w.tensor(names.qformer.queryTokens), g.concat([batch, g.constInt64([cfg.numQueryTokens, q.hiddenSize])], 0)]);
  x = w.layerNorm(x, names.qformer.layerNorm, q.layerNormEps);

  for (let i = 0; i < q.numLayers; i++) {
    const p = names.qformer.layer(i);
    x = g.withScope(`layer.${i}`, () => {
      // Self-attention over the queries (the masks are all ones in generation, so there is none).
      const a = `${p}.attention.attention`;
      const qkv = w.linear(x, [
        { weight: `${a}.query.weight`, bias: `${a}.query.bias`, scaleRows: { rows: q.hiddenSize, factor: scale } },
        { weight: `${a}.key.weight`, bias: `${a}.key.bias` },
        { weight: `${a}.value.weight`, bias: `${a}.value.bias` },
      ], `${a}.qkv`);
      const [qh, kh, vh] = g.split(qkv, [q.hiddenSize, q.hiddenSize, q.hiddenSize], 2).map((t) => splitHeads(g, t, heads, dim));
      let h = denseResidualNorm(g, w, mergeHeads(g, attend(g, qh, kh, vh, { floatType: ft }), heads, dim), x, `${p}.attention.output`, q.layerNormEps);

      if (hasCrossAttention(cfg, i)) {
        const c = `${p}.crossattention.attention`;
        const cq = splitHeads(g, w.linear(h, [{ weight: `${c}.query.weight`, bias: `${c}.query.bias`, scaleRows: { rows: q.hiddenSize, factor: scale } }], `${c}.query`), heads, dim);
        const kv = w.linear(imageEmbeds, [
          { weight: `${c}.key.weight`, bias: `${c}.key.bias` },
          { weight: `${c}.value.weight`, bias: `${c}.value.bias` },
        ], `${c}.kv`);
        const [ck, cv] = g.split(kv, [q.hiddenSize, q.hiddenSize], 2).map((t) => splitHeads(g, t, heads, dim));
        h = denseResidualNorm(g, w, mergeHeads(g, attend(g, cq, ck, cv, { floatType: ft }), heads, dim), h, `${p}.crossattention.output`, q.layerNormEps);
      }

      const inter = g.gelu(w.linear(h, [{ weight: `${p}.intermediate_query.dense.weight`, bias: `${p}.intermediate_query.dense.bias` }], `${p}.intermediate_query.dense`));
      return denseResidualNorm(g, w, inter, h, `${p}.output_query`, q.layerNormEps);
    });
  }
  return x;
}

/** BERT's output block: LayerNorm(dense(x) + residual). */
function denseResidualNorm(g: GraphBuilder, w: WeightEmitter, x: string, residual: string, prefix: string, eps: number): string {
  const y = w.linear(x, [{ weight: `${prefix}.dense.weight`, bias: `${prefix}.dense.bias` }], `${prefix}.dense`);
  return w.layerNorm(g.add(y, residual), `${prefix}.LayerNorm`, eps);
}

function castTo(g: GraphBuilder, x: string, from: number, to: number): string {
  return from === to ? x : g.cast(x, to);
}

function toFloat32(g: GraphBuilder, x: string, from: number): string {
  return castTo(g, x, from, DataType.FLOAT);
}
