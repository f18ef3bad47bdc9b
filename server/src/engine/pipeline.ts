import * as crypto from 'node:crypto';
import { generate } from './generation/generate';
import type { GenerationOptions, GenerationResult } from './generation/types';
import { throwIfAborted } from './errors';
import { preprocessImages, readImageProcessorConfig, type ImageInput, type ImageProcessorConfig } from './preprocess/image';
import { buildInputs } from './preprocess/prompts';
import { Blip2Model, type LoadOptions } from './runtime/blip2-model';
import type { ImagePrefix } from './runtime/decoder-session';

/** Generation settings as users give them (CLI flags, editor settings); the model's end and pad ids are added here. */
export interface GenerationSettings {
  maxNewTokens: number;
  minNewTokens?: number;
  numBeams?: number;
  numReturnSequences?: number;
  lengthPenalty?: number;
  repetitionPenalty?: number;
  noRepeatNgramSize?: number;
  /** Sampling is on when any of temperature, topK or topP is given (temperature 0 means greedy). */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Overrides generation_config.json's end tokens. */
  eosTokenIds?: number[];
}

export type { ImageInput };

/** The image-side result, which callers may cache by image content: it does not depend on the prompt. */
export interface EncodedImage {
  /** [queries, text hidden] rows that replace the `<image>` tokens. */
  features: Float32Array;
  preprocessMs: number;
  visionMs: number;
}

export interface Request {
  image: EncodedImage;
  /** The full prompt text ('' for a plain caption). */
  prompt: string;
}

export interface Answer {
  text: string;
  /** New tokens only, the end token included when one was generated. */
  tokenIds: number[];
  /** Further beams, best first, when numReturnSequences > 1. */
  alternatives: { text: string; tokenIds: number[] }[];
}

export interface GenerateTimings {
  prefillMs: number;
  decodeMs: number;
  steps: number;
  /** The image's keys and values came from an earlier request, so the first pass ran only the prompt. */
  prefixReused: boolean;
}

/** How many images' first-pass keys and values are kept (about 21 MB each for blip2-opt-2.7b at float32). */
const IMAGE_PREFIXES_KEPT = 2;

export interface StreamCallbacks {
  /** Each row's new token and the text so far, as it is generated. */
  onToken?: (row: number, tokenId: number, textSoFar: string) => void;
  signal?: AbortSignal;
}

/**
 * BLIP-2 captioning, visual questions and chat over a loaded model. The model is loaded once; images are encoded
 * separately from generation so a second question about the same image can skip the vision encoder.
 */
export class Blip2Pipeline {
  /** Most recently used last: the keys and values of the image positions, by the image features' content. */
  private readonly prefixes = new Map<string, ImagePrefix>();

  private constructor(
    readonly model: Blip2Model,
    readonly imageConfig: ImageProcessorConfig,
  ) {}

  static async load(dir: string, opts: LoadOptions): Promise<Blip2Pipeline> {
    const model = await Blip2Model.load(dir, opts);
    return new Blip2Pipeline(model, readImageProcessorConfig(dir, model.imageSize));
  }

  async encodeImages(images: ImageInput[], signal?: AbortSignal): Promise<EncodedImage[]> {
    const t0 = performance.now();
    const { pixelValues, dims } = await preprocessImages(images, this.imageConfig);
    const preprocessMs = performance.now() - t0;
    throwIfAborted(signal);
    const t1 = performance.now();
    const enc = await this.model.encodeImages(pixelValues, dims[0]);
    const visionMs = performance.now() - t1;
    const perImage = enc.imageFeatures.length / dims[0];
    return Array.from({ length: dims[0] }, (_, i) => ({
      features: enc.imageFeatures.slice(i * perImage, (i + 1) * perImage),
      preprocessMs: preprocessMs / dims[0],
      visionMs: visionMs / dims[0],
    }));
  }

  /** Runs one batch of requests (left-padded together) and returns an answer per request. */
  async generate(requests: Request[], settings: GenerationSettings, callbacks: StreamCallbacks = {}): Promise<{ answers: Answer[]; timings: GenerateTimings; raw: GenerationResult }> {
    const cfg = this.model.config;
    const gen = this.model.generation;
    const inputs = buildInputs(
      requests.map((r) => (r.prompt ? this.model.tokenizer.encode(r.prompt) : [])),
      { imageToken: this.model.imageTokenId, bos: gen.bosTokenId, pad: gen.padTokenId, numQueryTokens: cfg.numQueryTokens },
      { maxPositions: cfg.text.maxPositionEmbeddings, numQueryTokens: cfg.numQueryTokens, maxNewTokens: settings.maxNewTokens },
    );
    const features = new Float32Array(requests.reduce((s, r) => s + r.image.features.length, 0));
    let offset = 0;
    for (const r of requests) {
      features.set(r.image.features, offset);
      offset += r.image.features.length;
    }
    // One row about one image: its image positions may have been run already, by a caption or an earlier question.
    const prefixKey = requests.length === 1 ? featuresKey(features) : undefined;
    const reusePrefix = prefixKey ? this.prefixes.get(prefixKey) : undefined;
    const session = this.model.startDecoding(inputs.inputIds, inputs.attentionMask, features, {
      capacity: inputs.inputIds[0].length + settings.maxNewTokens,
      reusePrefix,
      onPrefix: prefixKey ? (p) => this.keepPrefix(prefixKey, p) : undefined,
    });
    if (prefixKey && reusePrefix) this.keepPrefix(prefixKey, reusePrefix);
    const streamed: number[][] = requests.map(() => []);
    try {
      const raw = await generate(session, { inputIds: inputs.inputIds }, this.options(settings), {
        signal: callbacks.signal,
        onToken: callbacks.onToken
          ? (row, token) => {
              streamed[row].push(token);
              callbacks.onToken!(row, token, this.model.tokenizer.decode(streamed[row]));
            }
          : undefined,
      });
      const answers = raw.sequences.map((seqs) => {
        const [best, ...rest] = seqs.map((s) => ({ text: this.model.tokenizer.decode(s.tokenIds), tokenIds: s.tokenIds }));
        return { ...best, alternatives: rest };
      });
      return { answers, timings: { ...session.timings }, raw };
    } finally {
      session.dispose();
    }
  }

  private keepPrefix(key: string, prefix: ImagePrefix): void {
    this.prefixes.delete(key);
    this.prefixes.set(key, prefix);
    while (this.prefixes.size > IMAGE_PREFIXES_KEPT) this.prefixes.delete(this.prefixes.keys().next().value!);
  }

  options(s: GenerationSettings): GenerationOptions {
    // Any sampling setting turns sampling on, except an explicit temperature of 0, which always means greedy.
    const sampling = s.temperature !== 0 && (s.temperature !== undefined || s.topK !== undefined || s.topP !== undefined);
    return {
      maxNewTokens: s.maxNewTokens,
      minNewTokens: s.minNewTokens,
      numBeams: s.numBeams,
      numReturnSequences: s.numReturnSequences,
      lengthPenalty: s.lengthPenalty,
      repetitionPenalty: s.repetitionPenalty,
      noRepeatNgramSize: s.noRepeatNgramSize,
      doSample: sampling,
      temperature: s.temperature,
      topK: s.topK,
      topP: s.topP,
      seed: s.seed,
      eosTokenIds: s.eosTokenIds ?? this.model.generation.eosTokenIds,
      padTokenId: this.model.generation.padTokenId,
    };
  }

  dispose(): Promise<void> {
    this.prefixes.clear();
    return this.model.dispose();
  }
}

function featuresKey(features: Float32Array): string {
  return crypto.createHash('sha1').update(new Uint8Array(features.buffer, features.byteOffset, features.byteLength)).digest('hex');
}
