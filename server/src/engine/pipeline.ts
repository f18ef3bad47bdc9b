import * as crypto from 'node:crypto';
import { generate } from './generation/generate';
import type { FinishReason, GenerationOptions, GenerationResult } from './generation/types';
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
  /**
   * End tokens besides generation_config.json's (vLLM's stop_token_ids); the answer's text leaves them out. Ids the
   * model cannot generate (past its vocabulary) are ignored.
   */
  stopTokenIds?: number[];
  /** Text that ends a sequence where it first appears (vLLM's stop); the answer stops before it. */
  stop?: string[];
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

/** Why a sequence ended: an end token or stop string, `maxNewTokens`, or the caller's `isCancelled`. */
export type AnswerFinish = 'stop' | 'length' | 'cancelled';

export interface AnswerSequence {
  text: string;
  /** New tokens only, the end token included when one was generated. */
  tokenIds: number[];
  finishReason: AnswerFinish;
}

export interface Answer extends AnswerSequence {
  /** Further beams, best first (or further samples), when numReturnSequences > 1. */
  alternatives: AnswerSequence[];
  /** The row's prompt as the model saw it: the image's query tokens, BOS and the prompt (padding excluded). */
  promptTokens: number;
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
  /** Each row's new token and the text so far of that sequence (0 unless numReturnSequences > 1), as it is generated. */
  onToken?: (row: number, tokenId: number, textSoFar: string, sequence: number) => void;
  /**
   * Each row's answer as soon as it is complete: greedy and sampled rows end independently (and leave the batch,
   * so the others go on without their cost); beam search answers every row at the end.
   */
  onAnswer?: (row: number, answer: Answer) => void;
  /** Asked after every step: true ends the row there, its answer so far kept with finishReason 'cancelled'. */
  isCancelled?: (row: number) => boolean;
  /** Ends the whole batch (rejecting with CancelledError). */
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

  /**
   * Runs one batch of requests (left-padded together, decoding in the same steps) and returns an answer per
   * request. Greedy and sampled rows end independently: a row that ends leaves the batch and is answered at once.
   */
  async generate(requests: Request[], settings: GenerationSettings, callbacks: StreamCallbacks = {}): Promise<{ answers: Answer[]; timings: GenerateTimings; raw: GenerationResult }> {
    const cfg = this.model.config;
    const gen = this.model.generation;
    const tokenizer = this.model.tokenizer;
    const promptIds = requests.map((r) => (r.prompt ? tokenizer.encode(r.prompt) : []));
    const inputs = buildInputs(
      promptIds,
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

    const options = this.options(settings);
    const copies = options.numReturnSequences ?? 1;
    const stops = (settings.stop ?? []).filter((s) => s.length > 0);
    // Per row and sequence: the tokens so far, whether a stop string ended it, and, once ended, how it ended.
    const streamed = requests.map(() => Array.from({ length: copies }, () => [] as number[]));
    const stopped = requests.map(() => new Array<boolean>(copies).fill(false));
    const done = requests.map(() => Array.from<AnswerSequence | undefined>({ length: copies }));
    const answered = new Array<boolean>(requests.length).fill(false);
    const promptTokens = (row: number) => cfg.numQueryTokens + 1 + promptIds[row].length;
    const cancelled = (row: number) => callbacks.isCancelled?.(row) === true;
    const sequence = (row: number, tokenIds: number[], finish: FinishReason | 'cancelled'): AnswerSequence => {
      const raw = tokenizer.decodeRaw(tokenIds);
      const at = firstStop(raw, stops);
      if (at >= 0) return { text: raw.slice(0, at).trim(), tokenIds, finishReason: 'stop' };
      const reason = finish === 'stopped' ? (cancelled(row) ? 'cancelled' : 'stop') : finish;
      return { text: raw.trim(), tokenIds, finishReason: reason };
    };
    const answer = (row: number, seqs: AnswerSequence[]): Answer => {
      const [best, ...alternatives] = seqs;
      return { ...best, alternatives, promptTokens: promptTokens(row) };
    };
    const watchText = stops.length > 0 || callbacks.onToken !== undefined;

    try {
      const raw = await generate(session, { inputIds: inputs.inputIds }, options, {
        signal: callbacks.signal,
        onToken: watchText
          ? (row, token, seq) => {
              const ids = streamed[row][seq];
              ids.push(token);
              if (stops.length > 0 && firstStop(tokenizer.decodeRaw(ids), stops) >= 0) stopped[row][seq] = true;
              callbacks.onToken?.(row, token, tokenizer.decode(ids), seq);
            }
          : undefined,
        onSequenceDone: (row, seq, result, finish) => {
          done[row][seq] = sequence(row, result.tokenIds, finish);
          if (done[row].every((d) => d !== undefined)) {
            answered[row] = true;
            callbacks.onAnswer?.(row, answer(row, done[row] as AnswerSequence[]));
          }
        },
        isStopped: (row, seq) => stopped[row][seq] || cancelled(row),
      });
      const eos = new Set(options.eosTokenIds);
      const answers = raw.sequences.map((seqs, row) => {
        if (answered[row]) return answer(row, done[row] as AnswerSequence[]);
        // Beam search: every row at the end, ended by an end token or by the length limit.
        const a = answer(row, seqs.map((s) => sequence(row, s.tokenIds, eos.has(s.tokenIds[s.tokenIds.length - 1]) ? 'stop' : 'length')));
        callbacks.onAnswer?.(row, a);
        return a;
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
    const sampling = isSampling(s);
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
      // The model cannot generate ids past its logits: asking to stop on one is asking for nothing.
      eosTokenIds: [...new Set([...this.model.generation.eosTokenIds, ...(s.stopTokenIds ?? []).filter((id) => Number.isInteger(id) && id >= 0 && id < this.model.manifest.vocabSize)])],
      padTokenId: this.model.generation.padTokenId,
    };
  }

  dispose(): Promise<void> {
    this.prefixes.clear();
    return this.model.dispose();
  }
}

/** Any sampling setting turns sampling on, except an explicit temperature of 0, which always means greedy. */
export function isSampling(s: GenerationSettings): boolean {
  return s.temperature !== 0 && (s.temperature !== undefined || s.topK !== undefined || s.topP !== undefined);
}

/** Where the first of the stop strings starts in `text`, or -1. */
function firstStop(text: string, stops: readonly string[]): number {
  let first = -1;
  for (const stop of stops) {
    const at = text.indexOf(stop);
    if (at >= 0 && (first < 0 || at < first)) first = at;
  }
  return first;
}

function featuresKey(features: Float32Array): string {
  return crypto.createHash('sha1').update(new Uint8Array(features.buffer, features.byteOffset, features.byteLength)).digest('hex');
}
