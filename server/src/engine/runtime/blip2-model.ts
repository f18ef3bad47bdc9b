import * as path from 'node:path';
import { readJson } from '../checkpoint/checkpoint';
import { parseBlip2Config, parseGenerationConfig, type Blip2Config, type GenerationDefaults } from '../checkpoint/config';
import { readManifest, type ConvertedManifest } from '../convert/manifest';
import { onnxDecoderGraph, storesOnnxDecoder } from '../convert/decoder-forms';
import { damaged } from '../convert/integrity';
import { readNativeHeader } from '../convert/native-weights';
import { isQuantized } from '../convert/precision';
import { VISION_OUTPUTS } from '../graphs/vision-encoder';
import { TextTokenizer } from '../preprocess/tokenizer';
import { DecoderSession, type DecoderOptions } from './decoder-session';
import { MappedWeights } from './mapped-weights';
import { NativeDecoder, nativeDecoderAvailable, type NativeKernel } from './native-decoder';
import { openSession, Tensor, type Device, type OpenedSession, type SessionSettings } from './ort';
import { SessionThread } from './session-thread';

/** The model folder's cache of optimized graphs (one folder per onnxruntime version and CPU kind). */
export const OPTIMIZED_DIR = 'optimized';

export interface LoadOptions {
  device: Exclude<Device, 'auto'>;
  threads: number;
  /**
   * Whether onnxruntime repacks the weights at load (see SessionSettings.prepack). By default only quantized models
   * are repacked, from an optimized copy made once: a float model is used where it is mapped, so it loads in a
   * fraction of a second instead of copying 14 GB (the benchmark measures both).
   */
  prepack?: boolean;
  /**
   * Whether a quantized model's vision encoder is repacked for onnxruntime's int8 kernels from an optimized copy made
   * at the first load (its weights a second time on disk, about 1 GB for blip2-opt-2.7b), or computed from the
   * converter's weights as they are, each run packing what it multiplies (default: no copy; the benchmark measures
   * both, see docs/performance.md).
   */
  visionCopy?: boolean;
  /**
   * Who computes the int4 or int8 decoder on the CPU: 'auto' (default) the native decoder where the conversion has
   * its weights and the CPU one of its vector kernels (AVX-512 VNNI or AVX2), else onnxruntime; 'native' the native
   * decoder's widest kernel for this CPU; 'avx2' and 'portable' its AVX2 and scalar kernels even where a wider one
   * runs (tests compare them, the benchmark measures them).
   */
  decoder?: 'auto' | 'onnxruntime' | 'native' | 'avx2' | 'portable';
}

export interface ImageEncoding {
  /** [batch, queries, text hidden]: the rows that replace the `<image>` tokens. */
  imageFeatures: Float32Array;
  batch: number;
  /** Present when asked for: the ViT output and the Q-Former output, for parity checks. */
  visionHidden?: Float32Array;
  qformerHidden?: Float32Array;
}

/** A converted BLIP-2 model loaded into onnxruntime: its three sessions, configs and tokenizer. */
export class Blip2Model {
  /**
   * The vision encoder and the decoder run one after the other, never together: at int4 and int8 each one's weights
   * are dropped from memory while the other runs (int4: 1.7 instead of 2.7 GiB at the peak of a caption; see
   * mapped-weights.ts). Float weights stay: 4 and 10 GB at fp32 would be faulted in again at every image, and in
   * a page cache they nearly fill on a 16 GB machine they may have to be read from disk again.
   */
  private readonly visionWeights: MappedWeights;
  private readonly decoderWeights: MappedWeights;

  private constructor(
    readonly dir: string,
    readonly manifest: ConvertedManifest,
    readonly config: Blip2Config,
    readonly generation: GenerationDefaults,
    readonly tokenizer: TextTokenizer,
    private readonly vision: SessionThread,
    private readonly embed: OpenedSession,
    private readonly decoder: OpenedSession | NativeDecoder,
  ) {
    const quantized = isQuantized(manifest.precision);
    this.visionWeights = new MappedWeights(quantized ? vision.info.weightFiles : []);
    this.decoderWeights = new MappedWeights(quantized ? (decoder instanceof NativeDecoder ? [decoder.file] : decoder.weightFiles) : []);
  }

  static async load(dir: string, opts: LoadOptions): Promise<Blip2Model> {
    const manifest = readManifest(dir);
    const config = parseBlip2Config(readJson(path.join(dir, 'config.json')));
    let generationJson: unknown = {};
    try {
      generationJson = readJson(path.join(dir, 'generation_config.json'));
    } catch {
      // Optional file: the text config carries the same ids.
    }
    const generation = parseGenerationConfig(generationJson, config.text);
    const tokenizer = TextTokenizer.load(dir);
    // Only quantized graphs keep an optimized copy: their repacking is what makes a load slow, and their copy is
    // about the size of the model, where an fp32 copy would add 14 GB for a load that is mostly reading the file.
    const quantized = isQuantized(manifest.precision);
    const settings: SessionSettings = {
      device: opts.device,
      threads: opts.threads,
      optimizedDir: quantized ? path.join(dir, OPTIMIZED_DIR) : undefined,
      prepack: opts.prepack ?? quantized,
    };
    // The vision encoder and the token embedding keep no copy by default: a copy holds onnxruntime's packed weights
    // beside the converter's, twice the disk, for an encoder whose image of 257 rows amortizes its own packing
    // (docs/performance.md); the embedding is a lookup with nothing to pack.
    const unpacked: SessionSettings = quantized ? { ...settings, optimizedDir: undefined, prepack: false } : settings;
    const visionSettings = quantized && opts.visionCopy ? settings : unpacked;
    // The vision encoder opens in a thread of its own while this one opens the decoder: onnxruntime-node blocks the
    // calling thread while it opens a session, and at int4 each large graph takes 1-2 s of single-threaded
    // repacking, so one after the other they took 2.6-2.9 s and side by side 1.9 s (SessionThread).
    const visionOpening = SessionThread.open(path.join(dir, manifest.graphs.visionEncoder), { ...visionSettings, arena: false });
    // Awaited below, after the decoder: a failure meanwhile is not an unhandled rejection.
    visionOpening.catch(() => undefined);
    let rest = settings;
    // Once one session fell back to the CPU the others would too; skip the second failed attempt. Only a device
    // other than the CPU can fall back, so only there do the others wait for the vision encoder.
    if (opts.device !== 'cpu') {
      const vision = await visionOpening;
      if (vision.info.fallbackReason) rest = { ...settings, device: 'cpu' };
    }
    const embedSettings = rest.device === 'cpu' && quantized ? { ...rest, optimizedDir: undefined, prepack: false } : rest;
    const opened: OpenedSession[] = [];
    try {
      // A lookup of a few rows: a thread pool of its own would only spin beside the decoder's between steps.
      opened.push(await openSession(path.join(dir, manifest.graphs.embedTokens), { ...embedSettings, threads: 1 }));
      const native = Blip2Model.nativeDecoder(dir, manifest, config, rest, opts.decoder ?? 'auto');
      if (!native) opened.push(await openSession(await onnxDecoderGraph(dir, manifest), rest));
      const vision = await visionOpening;
      return new Blip2Model(dir, manifest, config, generation, tokenizer, vision, opened[0], native ?? opened[1]);
    } catch (e) {
      // Nothing half-loaded stays behind: the sessions that did open are released, the vision thread ended.
      await Promise.all([...opened.map((o) => o.session.release()), visionOpening.then((v) => v.release(), () => undefined)]);
      throw e;
    }
  }

  /** The native decoder when it applies (see LoadOptions.decoder), else undefined and onnxruntime's is opened. */
  private static nativeDecoder(dir: string, manifest: ConvertedManifest, config: Blip2Config, settings: SessionSettings, choice: NonNullable<LoadOptions['decoder']>): NativeDecoder | undefined {
    if (choice === 'onnxruntime' || settings.device !== 'cpu' || !manifest.graphs.nativeDecoder) return undefined;
    if (choice === 'auto' && !nativeDecoderAvailable()) return undefined;
    const file = path.join(dir, manifest.graphs.nativeDecoder);
    const t = config.text;
    const header = readNativeHeader(file);
    // Written by this converter for this model, or the graph decides: a file for other sizes would be misread.
    if (!header || header.layers !== t.numLayers || header.hidden !== t.hiddenSize || header.heads !== t.numHeads || header.vocab !== manifest.vocabSize) {
      if (!storesOnnxDecoder(manifest)) throw damaged(dir, [{ name: manifest.graphs.nativeDecoder, problem: 'is not a native decoder weights file for this model' }]);
      return undefined;
    }
    try {
      return NativeDecoder.open(file, settings.threads, choice === 'portable' || choice === 'avx2' ? choice : undefined);
    } catch (e) {
      // Asked for by name it must open; by default onnxruntime's decoder answers instead, if the conversion stored its
      // weights: a native file that is the only copy of the weights and does not open is a damaged model.
      if (choice !== 'auto') throw e;
      if (!storesOnnxDecoder(manifest)) throw damaged(dir, [{ name: manifest.graphs.nativeDecoder!, problem: `cannot be opened (${(e as Error).message})` }]);
      return undefined;
    }
  }

  get device(): string {
    return this.decoder instanceof NativeDecoder ? 'cpu' : this.decoder.device;
  }

  /** Which decoder computes the text: onnxruntime's, or the native one. */
  get decoderKind(): 'onnxruntime' | 'native' {
    return this.decoder instanceof NativeDecoder ? 'native' : 'onnxruntime';
  }

  /** The native decoder's kernel, when it computes the text. */
  get nativeKernel(): NativeKernel | undefined {
    return this.decoder instanceof NativeDecoder ? this.decoder.kernel : undefined;
  }

  get fallbackReason(): string | undefined {
    return this.vision.info.fallbackReason;
  }

  /** Why loading stays slow, one sentence per graph whose optimized copy could not be made. */
  get loadNotes(): string[] {
    return [this.vision.info, this.embed, ...(this.decoder instanceof NativeDecoder ? [] : [this.decoder])].flatMap((s) => (s.cacheNote ? [s.cacheNote] : []));
  }

  get imageSize(): number {
    return this.config.vision.imageSize;
  }

  get imageTokenId(): number {
    // Legacy checkpoints have no `<image>` token; the placeholders are replaced all the same, and pad is never a penalty target.
    return this.config.imageTokenIndex ?? this.generation.padTokenId;
  }

  async encodeImages(pixelValues: Float32Array, batch: number, withIntermediates = false): Promise<ImageEncoding> {
    const size = this.imageSize;
    const fetches = withIntermediates
      ? [VISION_OUTPUTS.imageFeatures, VISION_OUTPUTS.visionHidden, VISION_OUTPUTS.qformerHidden]
      : [VISION_OUTPUTS.imageFeatures];
    this.decoderWeights.release();
    const out = await this.vision
      .run({ pixel_values: { data: pixelValues, dims: [batch, 3, size, size] } }, fetches)
      .finally(() => this.visionWeights.release());
    return {
      imageFeatures: out[VISION_OUTPUTS.imageFeatures],
      batch,
      visionHidden: out[VISION_OUTPUTS.visionHidden],
      qformerHidden: out[VISION_OUTPUTS.qformerHidden],
    };
  }

  /** input_ids rows (equal length) -> embeddings [rows, len, hidden]. */
  async embedTokens(ids: readonly (readonly number[])[]): Promise<Float32Array> {
    const rows = ids.length;
    const len = ids[0].length;
    const flat = new BigInt64Array(rows * len);
    ids.forEach((row, r) => row.forEach((id, c) => (flat[r * len + c] = BigInt(id))));
    const out = await this.embed.session.run({ input_ids: new Tensor('int64', flat, [rows, len]) });
    return out.inputs_embeds.data as Float32Array;
  }

  /** A decoding session over the given prompt rows, whose `<image>` positions take the image features row by row. */
  startDecoding(inputIds: number[][], attentionMask: number[][], imageFeatures: Float32Array, options: DecoderOptions): DecoderSession {
    return new DecoderSession(this, this.decoder instanceof NativeDecoder ? this.decoder : this.decoder.session, inputIds, attentionMask, imageFeatures, options);
  }

  async dispose(): Promise<void> {
    if (this.decoder instanceof NativeDecoder) this.decoder.close();
    await Promise.all([this.vision.release(), this.embed.session.release(), ...(this.decoder instanceof NativeDecoder ? [] : [this.decoder.session.release()])]);
  }
}
