import type { Blip2Config } from './config';

/** A tensor a BLIP-2 OPT checkpoint holds, by the name transformers saves it under. */
export interface TensorSpec {
  name: string;
  shape: number[];
}

const VISION = 'vision_model';
const DECODER = 'language_model.model.decoder';

export const names = {
  vision: {
    classEmbedding: `${VISION}.embeddings.class_embedding`,
    patchWeight: `${VISION}.embeddings.patch_embedding.weight`,
    patchBias: `${VISION}.embeddings.patch_embedding.bias`,
    positionEmbedding: `${VISION}.embeddings.position_embedding`,
    layer: (i: number) => `${VISION}.encoder.layers.${i}`,
    postLayerNorm: `${VISION}.post_layernorm`,
  },
  qformer: {
    queryTokens: 'query_tokens',
    layerNorm: 'qformer.layernorm',
    layer: (i: number) => `qformer.encoder.layer.${i}`,
  },
  languageProjection: 'language_projection',
  text: {
    embedTokens: `${DECODER}.embed_tokens.weight`,
    embedPositions: `${DECODER}.embed_positions.weight`,
    finalLayerNorm: `${DECODER}.final_layer_norm`,
    layer: (i: number) => `${DECODER}.layers.${i}`,
    lmHead: 'language_model.lm_head.weight',
  },
};

/** OPT's learned positions are looked up at position + 2 (fairseq's padding offset). */
export const OPT_POSITION_OFFSET = 2;

export function hasCrossAttention(config: Blip2Config, layer: number): boolean {
  return layer % config.qformer.crossAttentionFrequency === 0;
}

/**
 * Every tensor of a BLIP-2 OPT checkpoint with its shape, in the order transformers saves them.
 * The converter checks a checkpoint against this list; the random-checkpoint tool writes it.
 * The tied lm_head is not listed: checkpoints normally omit it.
 */
export function expectedTensors(config: Blip2Config, vocabSize: number): TensorSpec[] {
  const v = config.vision;
  const q = config.qformer;
  const t = config.text;
  const out: TensorSpec[] = [];
  const add = (name: string, ...shape: number[]) => out.push({ name, shape });
  const linear = (prefix: string, outF: number, inF: number, bias = true) => {
    add(`${prefix}.weight`, outF, inF);
    if (bias) add(`${prefix}.bias`, outF);
  };
  const norm = (prefix: string, n: number) => {
    add(`${prefix}.weight`, n);
    add(`${prefix}.bias`, n);
  };

  const patches = (v.imageSize / v.patchSize) ** 2;
  add(names.vision.classEmbedding, 1, 1, v.hiddenSize);
  add(names.vision.patchWeight, v.hiddenSize, 3, v.patchSize, v.patchSize);
  add(names.vision.patchBias, v.hiddenSize);
  add(names.vision.positionEmbedding, 1, patches + 1, v.hiddenSize);
  for (let i = 0; i < v.numLayers; i++) {
    const p = names.vision.layer(i);
    norm(`${p}.layer_norm1`, v.hiddenSize);
    linear(`${p}.self_attn.qkv`, 3 * v.hiddenSize, v.hiddenSize, v.qkvBias);
    linear(`${p}.self_attn.projection`, v.hiddenSize, v.hiddenSize);
    norm(`${p}.layer_norm2`, v.hiddenSize);
    linear(`${p}.mlp.fc1`, v.intermediateSize, v.hiddenSize);
    linear(`${p}.mlp.fc2`, v.hiddenSize, v.intermediateSize);
  }
  norm(names.vision.postLayerNorm, v.hiddenSize);

  add(names.qformer.queryTokens, 1, config.numQueryTokens, q.hiddenSize);
  norm(names.qformer.layerNorm, q.hiddenSize);
  for (let i = 0; i < q.numLayers; i++) {
    const p = names.qformer.layer(i);
    for (const k of ['query', 'key', 'value']) linear(`${p}.attention.attention.${k}`, q.hiddenSize, q.hiddenSize);
    linear(`${p}.attention.output.dense`, q.hiddenSize, q.hiddenSize);
    norm(`${p}.attention.output.LayerNorm`, q.hiddenSize);
    if (hasCrossAttention(config, i)) {
      linear(`${p}.crossattention.attention.query`, q.hiddenSize, q.hiddenSize);
      linear(`${p}.crossattention.attention.key`, q.hiddenSize, q.encoderHiddenSize);
      linear(`${p}.crossattention.attention.value`, q.hiddenSize, q.encoderHiddenSize);
      linear(`${p}.crossattention.output.dense`, q.hiddenSize, q.hiddenSize);
      norm(`${p}.crossattention.output.LayerNorm`, q.hiddenSize);
    }
    linear(`${p}.intermediate_query.dense`, q.intermediateSize, q.hiddenSize);
    linear(`${p}.output_query.dense`, q.hiddenSize, q.intermediateSize);
    norm(`${p}.output_query.LayerNorm`, q.hiddenSize);
  }
  linear(names.languageProjection, t.hiddenSize, q.hiddenSize);

  add(names.text.embedTokens, vocabSize, t.hiddenSize);
  add(names.text.embedPositions, t.maxPositionEmbeddings + OPT_POSITION_OFFSET, t.hiddenSize);
  // transformers registers the final norm before the layers, so it saves it there too.
  norm(names.text.finalLayerNorm, t.hiddenSize);
  for (let i = 0; i < t.numLayers; i++) {
    const p = names.text.layer(i);
    for (const k of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) linear(`${p}.self_attn.${k}`, t.hiddenSize, t.hiddenSize, t.enableBias);
    norm(`${p}.self_attn_layer_norm`, t.hiddenSize);
    linear(`${p}.fc1`, t.ffnDim, t.hiddenSize, t.enableBias);
    linear(`${p}.fc2`, t.hiddenSize, t.ffnDim, t.enableBias);
    norm(`${p}.final_layer_norm`, t.hiddenSize);
  }
  return out;
}
