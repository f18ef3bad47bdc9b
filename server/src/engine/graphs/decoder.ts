import type { Checkpoint } from '../checkpoint/checkpoint';
import { OPT_LAYER_NORM_EPS } from '../checkpoint/config';
import { names, OPT_POSITION_OFFSET } from '../checkpoint/layout';
import { attend, mergeHeads, minValue, splitHeads } from './attention';
import { DataType, GraphBuilder } from './onnx-builder';
import { WeightEmitter, type WeightFormat } from './weights';

export const DECODER_IO = {
  inputsEmbeds: 'inputs_embeds',
  attentionMask: 'attention_mask',
  positionIds: 'position_ids',
  logits: 'logits',
  pastKey: (i: number) => `past_key_values.${i}.key`,
  pastValue: (i: number) => `past_key_values.${i}.value`,
  presentKey: (i: number) => `present.${i}.key`,
  presentValue: (i: number) => `present.${i}.value`,
};

/**
 * OPT with a KV cache, in the transformers.js/Optimum layout: inputs_embeds + attention_mask +
 * position_ids + past_key_values.N.{key,value} -> logits of the last position + present.N.{key,value}.
 * An empty past (length 0) is the first step, so one graph serves prefill and decoding.
 * The mask is causal and honours left padding; logits are computed for the last position only.
 */
export function buildDecoder(ckpt: Checkpoint, format: WeightFormat): GraphBuilder {
  const t = ckpt.config.text;
  const g = new GraphBuilder('opt_decoder_with_past');
  const w = new WeightEmitter(g, ckpt, format);
  const ft = format.floatType;
  const heads = t.numHeads;
  const dim = t.hiddenSize / heads;
  const kvDims = ['batch_size', heads, 'past_sequence_length', dim];
  const presentDims = ['batch_size', heads, 'total_sequence_length', dim];

  const embeds = g.input(DECODER_IO.inputsEmbeds, DataType.FLOAT, ['batch_size', 'sequence_length', t.hiddenSize]);
  const mask = g.input(DECODER_IO.attentionMask, DataType.INT64, ['batch_size', 'total_sequence_length']);
  const positions = g.input(DECODER_IO.positionIds, DataType.INT64, ['batch_size', 'sequence_length']);
  const past = Array.from({ length: t.numLayers }, (_, i) => ({
    key: g.input(DECODER_IO.pastKey(i), ft, kvDims),
    value: g.input(DECODER_IO.pastValue(i), ft, kvDims),
  }));

  let x = ft === DataType.FLOAT ? embeds : g.cast(embeds, ft);
  x = g.add(x, g.gather(w.tensor(names.text.embedPositions), g.add(positions, g.scalarInt64(OPT_POSITION_OFFSET))));

  // Softmax runs in float32 even for fp16 weights, as OPT upcasts it; the mask bias lives in that type.
  const softmaxType = DataType.FLOAT;
  const bias = g.withScope('mask', () => {
    const scalar = (v: string) => g.op('Squeeze', [v, g.constInt64([0])]);
    const pastLen = scalar(g.shape(past[0].key, 2, 3));
    const seqLen = scalar(g.shape(embeds, 1, 2));
    const totalLen = scalar(g.shape(mask, 1, 2));
    const one = g.scalarInt64(1);
    const queryPos = g.op('Range', [pastLen, g.add(pastLen, seqLen), one]);
    const keyPos = g.op('Range', [g.scalarInt64(0), totalLen, one]);
    const causal = g.op('LessOrEqual', [g.unsqueeze(keyPos, [0]), g.unsqueeze(queryPos, [1])]);
    const notPadding = g.unsqueeze(g.cast(mask, DataType.BOOL), [1, 2]);
    const allowed = g.op('And', [g.unsqueeze(causal, [0, 1]), notPadding]);
    return g.op('Where', [allowed, g.constFloat([0], [], softmaxType), g.constFloat([minValue(softmaxType)], [], softmaxType)]);
  });

  for (let i = 0; i < t.numLayers; i++) {
    const p = names.text.layer(i);
    x = g.withScope(`layers.${i}`, () => {
      const h = w.layerNorm(x, `${p}.self_attn_layer_norm`, OPT_LAYER_NORM_EPS);
      const a = `${p}.self_attn`;
      const qkv = w.linear(h, [
        { weight: `${a}.q_proj.weight`, bias: t.enableBias ? `${a}.q_proj.bias` : undefined, scaleRows: { rows: t.hiddenSize, factor: dim ** -0.5 } },
        { weight: `${a}.k_proj.weight`, bias: t.enableBias ? `${a}.k_proj.bias` : undefined },
        { weight: `${a}.v_proj.weight`, bias: t.enableBias ? `${a}.v_proj.bias` : undefined },
      ], `${a}.qkv_proj`);
      const [q, k, v] = g.split(qkv, [t.hiddenSize, t.hiddenSize, t.hiddenSize], 2).map((s) => splitHeads(g, s, heads, dim));
      const keys = g.concat([past[i].key, k], 2);
      const values = g.concat([past[i].value, v], 2);
      g.output(keys, DECODER_IO.presentKey(i), ft, presentDims);
      g.output(values, DECODER_IO.presentValue(i), ft, presentDims);
      const o = mergeHeads(g, attend(g, q, keys, values, { bias, floatType: ft, softmaxType }), heads, dim);
      let y = g.add(x, w.linear(o, [{ weight: `${a}.out_proj.weight`, bias: t.enableBias ? `${a}.out_proj.bias` : undefined }], `${a}.out_proj`));
      const h2 = w.layerNorm(y, `${p}.final_layer_norm`, OPT_LAYER_NORM_EPS);
      const ffn = w.linear(g.relu(w.linear(h2, [{ weight: `${p}.fc1.weight`, bias: t.enableBias ? `${p}.fc1.bias` : undefined }], `${p}.fc1`)), [{ weight: `${p}.fc2.weight`, bias: t.enableBias ? `${p}.fc2.bias` : undefined }], `${p}.fc2`);
      y = g.add(y, ffn);
      return y;
    });
  }

  // Only the last position's logits are ever used; the vocabulary projection is the costliest matmul.
  const last = g.slice(x, [-1], [Number.MAX_SAFE_INTEGER], [1]);
  const normed = w.layerNorm(last, names.text.finalLayerNorm, OPT_LAYER_NORM_EPS);
  let logits = w.linear(normed, [{ weight: ckpt.lmHeadName }], 'lm_head');
  if (ft !== DataType.FLOAT) logits = g.cast(logits, DataType.FLOAT);
  g.output(logits, DECODER_IO.logits, DataType.FLOAT, ['batch_size', 1, ckpt.vocabSize]);
  return g;
}

/** input_ids [B,S] -> inputs_embeds [B,S,H] float32: OPT's token embedding, without scaling. */
export function buildEmbedTokens(ckpt: Checkpoint, format: WeightFormat): GraphBuilder {
  const g = new GraphBuilder('opt_embed_tokens');
  const w = new WeightEmitter(g, ckpt, format);
  const ids = g.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  const embeds = w.embedding(ids, names.text.embedTokens, DataType.FLOAT);
  g.output(embeds, 'inputs_embeds', DataType.FLOAT, ['batch_size', 'sequence_length', ckpt.config.text.hiddenSize]);
  return g;
}
