import type { Checkpoint } from '../checkpoint/checkpoint';
import { OPT_LAYER_NORM_EPS } from '../checkpoint/config';
import { names, OPT_POSITION_OFFSET } from '../checkpoint/layout';
import { mergeHeads, minValue } from './attention';
import { DataType, GraphBuilder, MS_DOMAIN, valueInfo } from './onnx-builder';
import { WeightEmitter, type HeadPadding, type LinearHeads, type LinearPart, type WeightFormat } from './weights';

export const DECODER_IO = {
  inputsEmbeds: 'inputs_embeds',
  attentionMask: 'attention_mask',
  positionIds: 'position_ids',
  logits: 'logits',
  pastKey: (i: number) => `past_key_values.${i}.key`,
  pastValue: (i: number) => `past_key_values.${i}.value`,
  /** This run's keys and values of layer i, [B, heads, S, padded head size]: the caller writes them into its cache. */
  newKey: (i: number) => `new_key_values.${i}.key`,
  newValue: (i: number) => `new_key_values.${i}.value`,
};

/**
 * The cache's head size: a multiple of 8, the layout onnxruntime's GroupQueryAttention required when the decoder used
 * it (converter versions up to 3). The zero features it adds cost nothing at OPT-2.7b's head size of 80.
 */
export function kvHeadSize(headDim: number): number {
  return Math.ceil(headDim / 8) * 8;
}

/** One OPT layer's Linears as the decoder fuses them, for the graph and for the native decoder's weights. */
export function optLayerLinears(ckpt: Checkpoint, i: number): Record<'qkv' | 'out' | 'fc1' | 'fc2', { parts: LinearPart[]; heads?: LinearHeads }> {
  const t = ckpt.config.text;
  const p = names.text.layer(i);
  const a = `${p}.self_attn`;
  const dim = t.hiddenSize / t.numHeads;
  const padding: HeadPadding = { heads: t.numHeads, dim, padded: kvHeadSize(dim) };
  const bias = (name: string) => (t.enableBias ? `${name}.bias` : undefined);
  return {
    // q|k|v packed in one matmul: the layer's input is read once instead of three times. The attention's
    // 1/sqrt(head_dim) is folded into q.
    qkv: {
      parts: [
        { weight: `${a}.q_proj.weight`, bias: bias(`${a}.q_proj`), scaleRows: { rows: t.hiddenSize, factor: dim ** -0.5 } },
        { weight: `${a}.k_proj.weight`, bias: bias(`${a}.k_proj`) },
        { weight: `${a}.v_proj.weight`, bias: bias(`${a}.v_proj`) },
      ],
      heads: { output: padding },
    },
    out: { parts: [{ weight: `${a}.out_proj.weight`, bias: bias(`${a}.out_proj`) }], heads: { input: padding } },
    fc1: { parts: [{ weight: `${p}.fc1.weight`, bias: bias(`${p}.fc1`) }] },
    fc2: { parts: [{ weight: `${p}.fc2.weight`, bias: bias(`${p}.fc2`) }] },
  };
}

/**
 * OPT with a KV cache: inputs_embeds + attention_mask + position_ids +
 * past_key_values.N.{key,value} -> logits of the last position + new_key_values.N.{key,value}.
 *
 * The cache is the caller's buffer of fixed length (`max_sequence_length`), [B, heads, length, head size], filled
 * in its first positions; the run returns only its own positions' keys and values, [B, heads, S, head size], which
 * the caller writes after the filled ones (a few hundred kilobytes a step instead of the whole cache back).
 * `attention_mask` [B, total] says which positions are real (0 for left padding) and how many are filled (its
 * length, less S). Logits are computed for the last position only. Heads whose
 * size is not a multiple of 8 are padded with zero features (see HeadPadding).
 */
export function buildDecoder(ckpt: Checkpoint, format: WeightFormat): GraphBuilder {
  const t = ckpt.config.text;
  const g = new GraphBuilder('opt_decoder_with_past');
  const w = new WeightEmitter(g, ckpt, format);
  const ft = format.floatType;
  const heads = t.numHeads;
  const dim = t.hiddenSize / heads;
  const padding: HeadPadding = { heads, dim, padded: kvHeadSize(dim) };
  const kvDims = ['batch_size', heads, 'max_sequence_length', padding.padded];

  const embeds = g.input(DECODER_IO.inputsEmbeds, DataType.FLOAT, ['batch_size', 'sequence_length', t.hiddenSize]);
  const mask = g.input(DECODER_IO.attentionMask, DataType.INT64, ['batch_size', 'total_sequence_length']);
  const positions = g.input(DECODER_IO.positionIds, DataType.INT64, ['batch_size', 'sequence_length']);
  const past = Array.from({ length: t.numLayers }, (_, i) => ({
    key: g.input(DECODER_IO.pastKey(i), ft, kvDims),
    value: g.input(DECODER_IO.pastValue(i), ft, kvDims),
  }));

  let x = ft === DataType.FLOAT ? embeds : g.cast(embeds, ft);
  x = g.add(x, g.gather(w.tensor(names.text.embedPositions), g.add(positions, g.scalarInt64(OPT_POSITION_OFFSET))));

  const { bias, cacheAndNew } = g.withScope('mask', () => {
    // Which positions each new position may attend to, as an additive bias [B, 1, S, capacity + S] over the cache
    // buffer followed by the run's own positions: a cache slot where it is filled (its first total - S positions) and
    // not padding, and a new position at or before itself (causality) and not padding. Masked scores get
    // transformers' most negative value, in float32 (the softmax's type).
    const total = g.shape(mask, 1, 2);
    const seqLen = g.shape(embeds, 1, 2);
    const capacity = g.shape(past[0].key, 2, 3);
    const filled = g.sub(total, seqLen);
    const zero = g.constInt64([0]);
    const one = g.constInt64([1]);
    const allowed = (m: string) => g.unsqueeze(g.cast(m, DataType.BOOL), [1, 2]);
    const pastMask = g.op('Pad', [g.op('Slice', [mask, zero, filled, one]), g.concat([zero, zero, zero, g.sub(capacity, filled)], 0)]);
    const steps = g.op('Range', [g.scalarInt64(0), g.op('Squeeze', [seqLen, zero]), g.scalarInt64(1)]);
    const causal = g.op('LessOrEqual', [g.unsqueeze(steps, [0]), g.unsqueeze(steps, [1])]);
    const newAllowed = g.op('And', [allowed(g.op('Slice', [mask, filled, total, one])), causal]);
    const batch = g.shape(mask, 0, 1);
    const pastAllowed = g.op('Expand', [allowed(pastMask), g.concat([batch, one, seqLen, capacity], 0)]);
    const both = g.concat([pastAllowed, newAllowed], 3);
    return {
      bias: g.op('Where', [both, g.constFloat([0]), g.constFloat([minValue(DataType.FLOAT)])]),
      cacheAndNew: g.concat([capacity, seqLen], 0),
    };
  });

  for (let i = 0; i < t.numLayers; i++) {
    const p = names.text.layer(i);
    x = g.withScope(`layers.${i}`, () => {
      const h = w.layerNorm(x, `${p}.self_attn_layer_norm`, OPT_LAYER_NORM_EPS);
      const linears = optLayerLinears(ckpt, i);
      const qkv = w.linear(h, linears.qkv.parts, `${p}.self_attn.qkv_proj`, linears.qkv.heads);
      // The cache is the caller's buffer, never a graph output: onnxruntime-node copies every fetched output into a
      // new ArrayBuffer, and fetching the whole cache at each step cost a 33 MB copy and a garbage collection per
      // token. The step's own keys and values go out instead, head-major as the cache is so that the caller copies
      // one run of positions per head.
      const width = heads * padding.padded;
      const part = (from: number, name?: string) => {
        const heads_ = g.reshape(g.slice(qkv, [from * width], [(from + 1) * width], [-1]), [0, 0, heads, padding.padded]);
        return g.op('Transpose', [heads_], { perm: [0, 2, 1, 3] }, name ? { outputs: [name] } : {});
      };
      const q = part(0);
      const k = part(1, DECODER_IO.newKey(i));
      const v = part(2, DECODER_IO.newValue(i));
      for (const name of [DECODER_IO.newKey(i), DECODER_IO.newValue(i)]) g.outputs.push(valueInfo(name, ft, ['batch_size', heads, 'sequence_length', padding.padded]));
      // Attention over the whole cache buffer (masked past its filled part) and the run's own positions, as plain
      // MatMul/Softmax: on CPU, onnxruntime's GroupQueryAttention took 3x as long per step (it copies the past into
      // a present buffer of its own and runs two small GEMMs per head; see the levers in docs/performance.md).
      // The 1/sqrt(head_dim) scale is folded into q_proj at conversion.
      let scores = g.concat([g.matmul(q, g.transpose(past[i].key, [0, 1, 3, 2])), g.matmul(q, g.transpose(k, [0, 1, 3, 2]))], 3);
      if (ft !== DataType.FLOAT) scores = g.cast(scores, DataType.FLOAT);
      let probs = g.softmax(g.add(scores, bias), -1);
      if (ft !== DataType.FLOAT) probs = g.cast(probs, ft);
      const [toCache, toNew] = g.opMulti('Split', [probs, cacheAndNew], { axis: 3 }, { count: 2 });
      const o = mergeHeads(g, g.add(g.matmul(toCache, past[i].value), g.matmul(toNew, v)), heads, padding.padded);
      let y = g.add(x, w.linear(o, linears.out.parts, `${p}.self_attn.out_proj`, linears.out.heads));
      const h2 = w.layerNorm(y, `${p}.final_layer_norm`, OPT_LAYER_NORM_EPS);
      const ffn = w.linear(g.relu(w.linear(h2, linears.fc1.parts, `${p}.fc1`)), linears.fc2.parts, `${p}.fc2`);
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
