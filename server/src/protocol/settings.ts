// The `blip2.*` settings: one type and one set of defaults, read by the server and contributed by the extension.
import { DEFAULT_MAX_IMAGE_FILE_BYTES } from '../engine/preprocess/image-file';
import { DEFAULT_ALT_RULE_SETTINGS, type AltRuleSettings } from '../features/alt-text/rules';

export type PrecisionSetting = 'auto' | 'fp32' | 'fp16' | 'int8' | 'int4';
export type DeviceSetting = 'auto' | 'cpu' | 'cuda' | 'dml' | 'coreml' | 'webgpu';

export interface Blip2Settings {
  /** Hub repo id, checkpoint folder or converted folder. */
  model: string;
  precision: PrecisionSetting;
  device: DeviceSetting;
  /** Threads per operator; 0 lets onnxruntime choose. */
  threads: number;
  /** Folder of converted models; '' for BLIP2_HOME or the per-user cache. */
  modelStore: string;
  /** Never contact the Hugging Face Hub. */
  offline: boolean;
  generation: {
    maxNewTokens: number;
    /** Keeps the end token away until this many tokens exist, for longer captions. */
    minNewTokens: number;
    numBeams: number;
    /** Captions offered besides the best one (beam search keeps this many more beams). */
    alternatives: number;
    repetitionPenalty: number;
    noRepeatNgramSize: number;
    /** Text the caption continues, e.g. "a photo of"; '' for none. */
    captionPrompt: string;
  };
  altText: AltRuleSettings & {
    /** Queue captions for a document's images when it opens, so hovers are instant. */
    captionOnOpen: boolean;
  };
  localImages: {
    /** The largest image file read; larger ones are refused before a byte is read. */
    maxBytes: number;
    /**
     * Read images that documents name outside the workspace folders (absolute paths, `..`, symbolic links
     * leading out); off, so a document cannot make the server read, caption and write out the user's other files.
     */
    outsideWorkspace: boolean;
  };
  remoteImages: {
    /** Fetch http(s) images for hovers and alt text; off, because it sends requests off the machine. */
    enabled: boolean;
    maxBytes: number;
  };
  cache: {
    /** Disk cache size for captions and image encodings, in megabytes. */
    maxMegabytes: number;
  };
  /** Unload the model after this many idle minutes (0 keeps it loaded). */
  unloadAfterMinutes: number;
}

export const DEFAULT_SETTINGS: Blip2Settings = {
  model: 'Salesforce/blip2-opt-2.7b',
  precision: 'auto',
  device: 'auto',
  threads: 0,
  modelStore: '',
  offline: false,
  generation: {
    maxNewTokens: 30,
    minNewTokens: 0,
    numBeams: 3,
    alternatives: 2,
    repetitionPenalty: 1.0,
    noRepeatNgramSize: 3,
    captionPrompt: '',
  },
  altText: { ...DEFAULT_ALT_RULE_SETTINGS, captionOnOpen: true },
  localImages: { maxBytes: DEFAULT_MAX_IMAGE_FILE_BYTES, outsideWorkspace: false },
  remoteImages: { enabled: false, maxBytes: 10 * 1024 * 1024 },
  cache: { maxMegabytes: 256 },
  unloadAfterMinutes: 15,
};

/** Settings whose change needs the model reloaded (the client offers "Restart now" for these). */
export const RELOAD_SETTINGS = ['model', 'precision', 'device', 'threads', 'modelStore'] as const;
