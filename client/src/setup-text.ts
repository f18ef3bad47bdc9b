// What the model set-up offer says. Sizes are stated as they are: the download is always the original
// float32 checkpoint, whatever precision it is converted to afterwards on this machine.
import type { DeviceSetting, PrecisionSetting } from '../../server/src/protocol/settings';
import { isLocalModel } from './config';
import { statusBarView, type ServerState } from './status-text';

type Precision = Exclude<PrecisionSetting, 'auto'>;

interface KnownModel {
  /** Bytes of the Hub repository's safetensors shards (its index's `total_size`). */
  downloadBytes: number;
  /** The model card's memory table, in GB as it prints them. */
  convertedGB: Record<Precision, number>;
}

/** Models whose sizes are known; for any other repo the offer says nothing it does not know. */
const KNOWN_MODELS: Readonly<Record<string, KnownModel>> = {
  'salesforce/blip2-opt-2.7b': {
    downloadBytes: 14_979_047_424,
    convertedGB: { fp32: 14.4, fp16: 7.2, int8: 3.6, int4: 1.8 },
  },
};

/**
 * The precision `auto` becomes, as the server decides it (4-bit on CPU, fp16 on a GPU). `device` is the
 * provider the server reported when it knows it, else the setting; an `auto` device is assumed to be the CPU,
 * which it is wherever no GPU provider is installed.
 */
export function effectivePrecision(precision: PrecisionSetting, device: DeviceSetting | string | undefined): Precision {
  if (precision !== 'auto') return precision;
  return !device || device === 'auto' || device === 'cpu' ? 'int4' : 'fp16';
}

export interface DownloadOffer {
  /** The notification's text. */
  message: string;
  /** The download button, e.g. "Download Salesforce/blip2-opt-2.7b (about 15 GB)". */
  downloadLabel: string | undefined;
  /** Why there is no download button. */
  noDownloadReason?: string;
}

export interface OfferInput {
  model: string;
  precision: PrecisionSetting;
  device: string | undefined;
  offline: boolean;
  /** The server's sentence about what is missing; shown first when no download can be offered. */
  serverMessage?: string;
}

export function downloadOffer(input: OfferInput): DownloadOffer {
  const { model, offline, serverMessage } = input;
  const why = serverMessage ? `${serverMessage} ` : '';
  if (isLocalModel(model)) {
    return {
      message: `${why}BLIP-2 has no usable model in the folder "${model}". Choose a folder with a BLIP-2 checkpoint (config.json and model.safetensors) or a converted model.`,
      downloadLabel: undefined,
      noDownloadReason: 'The model setting names a folder.',
    };
  }
  if (offline) {
    return {
      message: `${why}BLIP-2 needs the model ${model}, and "blip2.offline" forbids downloading it. Choose a local folder that holds it, or allow downloads.`,
      downloadLabel: undefined,
      noDownloadReason: 'Offline mode is on.',
    };
  }
  const precision = effectivePrecision(input.precision, input.device);
  const known = KNOWN_MODELS[model.trim().toLowerCase().replace(/@.*$/, '')];
  if (!known) {
    return {
      message: `BLIP-2 needs a model. Set-up downloads the original weights of ${model} from the Hugging Face Hub once, then converts them to ONNX (${precision}) on this machine. Your images never leave it.`,
      downloadLabel: `Download ${repoName(model)}`,
    };
  }
  const download = gb(known.downloadBytes);
  return {
    message:
      `BLIP-2 needs a model. Set-up downloads the original float32 weights of ${model} (about ${download} GB) from the Hugging Face Hub once, ` +
      `then converts them on this machine to ${precision} (about ${known.convertedGB[precision]} GB, per the model card). ` +
      'Your images never leave this machine.',
    // The repo's own name: a notification cuts long buttons short, and the message names the whole repo id.
    downloadLabel: `Download ${repoName(model)} (about ${download} GB)`,
  };
}

function repoName(model: string): string {
  return model.trim().replace(/@.*$/, '').split('/').pop() || model;
}

function gb(bytes: number): string {
  const value = bytes / 1e9;
  return value >= 10 ? String(Math.round(value)) : value.toFixed(1);
}

/** The message after a set-up was cancelled: the downloaded parts stay, so running it again resumes. */
export const SETUP_CANCELLED_MESSAGE =
  'BLIP-2 model set-up was cancelled. What was already downloaded is kept; set up again to resume where it stopped.';

/** The set-up picker's title: where things stand, in the words the status bar uses. */
export function setUpPickerTitle(state: ServerState): string {
  return `Set Up the BLIP-2 Model (now: ${statusBarView(state).accessibilityLabel.replace(/^BLIP-2:?\s*/, '')})`;
}
