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
  /** Rows of the embedding table the config promises; undefined when it does not say. */
  vocabSize: number | undefined;
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
  const parsed: Blip2Config = {
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
      vocabSize: text.vocab_size === undefined || text.vocab_size === null ? undefined : num(text, 'vocab_size', 0),
    },
    numQueryTokens: num(c, 'num_query_tokens', 32),
    imageTokenIndex: typeof c.image_token_index === 'number' ? c.image_token_index : undefined,
  };
  checkArchitecture(parsed, where);
  return parsed;
}

/**
 * The sizes a BLIP-2 OPT graph can be built from and run with: whole positive numbers, widths that split into
 * heads, images that split into patches, and bounds far above every published BLIP-2 (2.7b: 2560 wide, 32 layers;
 * 6.7b: 4096, 32) but below what would make one request allocate gigabytes from a crafted config.json.
 */
const LIMITS = {
  width: 16384,
  layers: 256,
  heads: 512,
  ffn: 65536,
  imageSize: 1024,
  positions: 32768,
  queryTokens: 256,
  tokenId: 1 << 24,
};

function checkArchitecture(c: Blip2Config, where: string): void {
  const problems: string[] = [];
  const whole = (name: string, value: number, min: number, max: number): boolean => {
    if (Number.isInteger(value) && value >= min && value <= max) return true;
    problems.push(`${name} is ${value}, not a whole number from ${min} to ${max}`);
    return false;
  };
  const splits = (name: string, width: number, heads: number): void => {
    if (whole(`${name}.hidden_size`, width, 1, LIMITS.width) && whole(`${name}.num_attention_heads`, heads, 1, LIMITS.heads) && width % heads !== 0) {
      problems.push(`${name}.hidden_size ${width} does not split into ${heads} attention heads`);
    }
  };
  splits('vision_config', c.vision.hiddenSize, c.vision.numHeads);
  whole('vision_config.num_hidden_layers', c.vision.numLayers, 1, LIMITS.layers);
  whole('vision_config.intermediate_size', c.vision.intermediateSize, 1, LIMITS.ffn);
  if (whole('vision_config.image_size', c.vision.imageSize, 1, LIMITS.imageSize) && whole('vision_config.patch_size', c.vision.patchSize, 1, c.vision.imageSize)) {
    if (c.vision.imageSize % c.vision.patchSize !== 0) problems.push(`vision_config.image_size ${c.vision.imageSize} is not a multiple of patch_size ${c.vision.patchSize}`);
  }
  splits('qformer_config', c.qformer.hiddenSize, c.qformer.numHeads);
  whole('qformer_config.num_hidden_layers', c.qformer.numLayers, 1, LIMITS.layers);
  whole('qformer_config.intermediate_size', c.qformer.intermediateSize, 1, LIMITS.ffn);
  whole('qformer_config.cross_attention_frequency', c.qformer.crossAttentionFrequency, 1, LIMITS.layers);
  splits('text_config', c.text.hiddenSize, c.text.numHeads);
  whole('text_config.num_hidden_layers', c.text.numLayers, 1, LIMITS.layers);
  whole('text_config.ffn_dim', c.text.ffnDim, 1, LIMITS.ffn);
  whole('text_config.max_position_embeddings', c.text.maxPositionEmbeddings, 1, LIMITS.positions);
  // The query tokens and at least BOS and one new token have to fit in the positions.
  whole('num_query_tokens', c.numQueryTokens, 1, Math.min(LIMITS.queryTokens, c.text.maxPositionEmbeddings - 2));
  for (const [name, id] of [['bos_token_id', c.text.bosTokenId], ['eos_token_id', c.text.eosTokenId], ['pad_token_id', c.text.padTokenId]] as const) {
    whole(`text_config.${name}`, id, 0, LIMITS.tokenId);
  }
  if (c.text.vocabSize !== undefined) whole('text_config.vocab_size', c.text.vocabSize, 1, LIMITS.tokenId);
  if (c.imageTokenIndex !== undefined) whole('image_token_index', c.imageTokenIndex, 0, LIMITS.tokenId);
  if (problems.length > 0) {
    throw new UserError(
      `${where} describes sizes a BLIP-2 OPT model cannot have: ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? `; and ${problems.length - 3} more` : ''}.`,
      'Use the config.json that comes with the checkpoint.',
    );
  }
}

function num(obj: Json, key: string, fallback: number): number {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new UserError(`config.json has a non-numeric ${key}: ${JSON.stringify(v)?.slice(0, 40)}.`);
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
