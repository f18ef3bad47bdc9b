import { UserError } from '../errors';

export interface VisionConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  imageSize: number;
  patchSize: number;
  layerNormEps: number;
  qkvBias: boolean;
}

export interface QFormerConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  layerNormEps: number;
  crossAttentionFrequency: number;
  encoderHiddenSize: number;
}

export interface TextConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  ffnDim: number;
  maxPositionEmbeddings: number;
  enableBias: boolean;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
}

export interface Blip2Config {
  vision: VisionConfig;
  qformer: QFormerConfig;
  text: TextConfig;
  numQueryTokens: number;
  /** Undefined for legacy checkpoints that concatenate the query embeddings instead of replacing `<image>` tokens. */
  imageTokenIndex: number | undefined;
}

type Json = Record<string, unknown>;

/** OPT's LayerNorm is torch's default; the config does not carry it. */
export const OPT_LAYER_NORM_EPS = 1e-5;

export function parseBlip2Config(json: unknown, where = 'config.json'): Blip2Config {
  const c = (json ?? {}) as Json;
  const modelType = c.model_type;
  if (modelType !== 'blip-2') {
    throw new UserError(
      `${where} describes a model of type "${String(modelType ?? 'unknown')}", not a BLIP-2 model.`,
      'Pass a BLIP-2 OPT checkpoint such as Salesforce/blip2-opt-2.7b.',
    );
  }
  const text = (c.text_config ?? {}) as Json;
  const textType = String(text.model_type ?? 'opt');
  if (textType !== 'opt') {
    throw new UserError(
      `This BLIP-2 checkpoint uses a ${textType === 't5' ? 'Flan-T5' : textType} language model (text_config.model_type "${textType}"); only BLIP-2 OPT checkpoints are supported.`,
      'Use Salesforce/blip2-opt-2.7b, blip2-opt-6.7b or a fine-tune of them.',
    );
  }
  const vision = (c.vision_config ?? {}) as Json;
  const qformer = (c.qformer_config ?? {}) as Json;

  const textHidden = num(text, 'hidden_size', 2560);
  if (num(text, 'word_embed_proj_dim', textHidden) !== textHidden) {
    throw new UserError('This OPT variant projects its word embeddings (word_embed_proj_dim differs from hidden_size), which BLIP-2 OPT checkpoints do not; it is not supported.');
  }
  if (text.do_layer_norm_before === false) {
    throw new UserError('This OPT variant applies layer norm after attention (do_layer_norm_before false), which BLIP-2 OPT checkpoints do not; it is not supported.');
  }
  const act = String(text.activation_function ?? 'relu');
  if (act !== 'relu') throw new UserError(`The language model's activation "${act}" is not supported; BLIP-2 OPT uses relu.`);
  // use_qformer_text_input only adds the Q-Former's text FFN, which generation never feeds; its weights are ignored.
  const visionHidden = num(vision, 'hidden_size', 1408);
  return {
    vision: {
      hiddenSize: visionHidden,
      numLayers: num(vision, 'num_hidden_layers', 39),
      numHeads: num(vision, 'num_attention_heads', 16),
      intermediateSize: num(vision, 'intermediate_size', 6144),
      imageSize: num(vision, 'image_size', 224),
      patchSize: num(vision, 'patch_size', 14),
      layerNormEps: num(vision, 'layer_norm_eps', 1e-6),
      qkvBias: vision.qkv_bias !== false,
    },
    qformer: {
      hiddenSize: num(qformer, 'hidden_size', 768),
      numLayers: num(qformer, 'num_hidden_layers', 12),
      numHeads: num(qformer, 'num_attention_heads', 12),
      intermediateSize: num(qformer, 'intermediate_size', 3072),
      layerNormEps: num(qformer, 'layer_norm_eps', 1e-12),
      crossAttentionFrequency: num(qformer, 'cross_attention_frequency', 2),
      // Blip2Config forces this to the vision width, whatever the file says.
      encoderHiddenSize: visionHidden,
    },
    text: {
      hiddenSize: textHidden,
      numLayers: num(text, 'num_hidden_layers', 32),
      numHeads: num(text, 'num_attention_heads', 32),
      ffnDim: num(text, 'ffn_dim', 10240),
      maxPositionEmbeddings: num(text, 'max_position_embeddings', 2048),
      enableBias: text.enable_bias !== false,
      bosTokenId: num(text, 'bos_token_id', 2),
      eosTokenId: num(text, 'eos_token_id', 2),
      padTokenId: num(text, 'pad_token_id', 1),
    },
    numQueryTokens: num(c, 'num_query_tokens', 32),
    imageTokenIndex: typeof c.image_token_index === 'number' ? c.image_token_index : undefined,
  };
}

function num(obj: Json, key: string, fallback: number): number {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new UserError(`config.json has a non-numeric ${key}: ${JSON.stringify(v)}.`);
  return v;
}

/** generation_config.json, the parts our generator uses. */
export interface GenerationDefaults {
  bosTokenId: number;
  eosTokenIds: number[];
  padTokenId: number;
}

export function parseGenerationConfig(json: unknown, text: TextConfig): GenerationDefaults {
  const g = (json ?? {}) as Json;
  const eos = g.eos_token_id ?? text.eosTokenId;
  return {
    bosTokenId: typeof g.bos_token_id === 'number' ? g.bos_token_id : text.bosTokenId,
    eosTokenIds: (Array.isArray(eos) ? eos : [eos]).map(Number),
    padTokenId: typeof g.pad_token_id === 'number' ? g.pad_token_id : text.padTokenId,
  };
}
