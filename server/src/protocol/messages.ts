/**
 * The custom protocol between the BLIP-2 language server and its clients, beyond LSP. Declared once; the server
 * and the VS Code extension both import it. Methods are named `blip2/<verb>`; each says which side sends it.
 */
import { NotificationType, ProgressType, RequestType, RequestType0 } from 'vscode-languageserver-protocol';
import type { WorkDoneProgressParams, PartialResultParams, WorkspaceEdit } from 'vscode-languageserver-protocol';

export type ModelState = 'noModel' | 'downloading' | 'converting' | 'loading' | 'ready' | 'busy' | 'unloaded' | 'error';

export interface ModelStatus {
  state: ModelState;
  /** What the settings name (repo id or folder); with a server, the model it serves ('' until it says). */
  model: string;
  /** The BLIP-2 server that computes instead of this machine (its origin), when `blip2.server.url` names one. */
  server?: string;
  precision?: string;
  /** The provider running the model, after any fallback. */
  device?: string;
  /** Why the requested device is not used. */
  fallbackReason?: string;
  /** Sentences for the user about the loaded model, such as why its loads stay slow. */
  notes?: string[];
  /** A sentence for the user when state is 'noModel' or 'error'. */
  message?: string;
  /** 0..1 while downloading or converting. */
  progress?: number;
  /** Resident memory of the server process, bytes. */
  memoryBytes?: number;
  /** Requests waiting or running. */
  queued: number;
  cache: { entries: number; bytes: number; dir?: string };
}

export interface ChatTurn {
  question: string;
  answer: string;
}

export interface CaptionParams extends WorkDoneProgressParams {
  /** A file: or http(s): URI of the image. */
  image: string;
  /** Text the caption continues; the setting's prompt when absent. */
  prompt?: string;
  /**
   * Also the `blip2.generation.alternatives` other captions, from a beam search run for them (slower than the
   * caption, which is then the same as without them).
   */
  alternatives?: boolean;
}

export interface AskParams extends WorkDoneProgressParams, PartialResultParams {
  image: string;
  question: string;
  /** Earlier turns of a chat about the same image, oldest first. */
  history?: ChatTurn[];
}

export interface GenerationResult {
  text: string;
  /** Other beams, best first (captions only). */
  alternatives: string[];
  model: string;
  precision: string;
  device: string;
  /** Time the request took, queueing included; 0 when served from the cache. */
  durationMs: number;
  cached: boolean;
}

/** Streamed through the request's partialResultToken while an answer is generated. */
export interface AnswerPartial {
  textSoFar: string;
}
export const AnswerPartialType = new ProgressType<AnswerPartial>();

export interface SetUpModelParams extends WorkDoneProgressParams {
  /** Overrides the `blip2.model` setting for this set-up (a folder the user picked, say). */
  model?: string;
  /**
   * The client showed the set-up's cost (blip2/setUpPlan) and the user agreed: the server does not announce it
   * again. Clients that do not ask first get it as a window/showMessage when set-up starts.
   */
  costShown?: boolean;
}

/** What setting the model up will do and cost, before anything is downloaded (blip2/setUpPlan). */
export interface SetUpPlan {
  model: string;
  precision: string;
  /**
   * 'ready': nothing to do; 'convert': a checkpoint on this machine converted here; 'stream': a Hub checkpoint
   * converted as it downloads, not stored; 'download': downloaded into the Hugging Face cache and kept, then converted;
   * 'converted': a converted model downloaded, nothing converted.
   */
  kind: 'ready' | 'convert' | 'stream' | 'download' | 'converted';
  /** Bytes fetched from the network. */
  downloadBytes: number;
  /** Disk used at the peak of set-up and once it is done, on top of what is used now. */
  peakDiskBytes: number;
  finalDiskBytes: number;
  /** Where the model goes, and the free space there. */
  storeDir: string;
  freeBytes?: number;
  /** The checkpoint's storage type when it is not float32 (a half-size download). */
  sourceDtype?: string;
  /** The plan in one sentence, sizes and places included. */
  message: string;
  /** Why the disk cannot hold it, and what to do, when it cannot; set-up would refuse. */
  refusal?: { message: string; hint?: string };
}

/** What the server has done since it started; for "Show Model Status" and for tests. */
export interface InferenceCounters {
  visionRuns: number;
  generations: number;
  /** Generation runs: captions and answers decoded together as one batch count once. */
  batches: number;
  tokensGenerated: number;
  cancelledGenerations: number;
  /** Captions and answers served from the cache. */
  captionCacheHits: number;
  visionCacheHits: number;
  sharedRequests: number;
}

export interface AltTextCommandArgs {
  /** A document URI for one file; absent for the whole workspace. */
  uri?: string;
  /** Apply through workspace/applyEdit (for clients without their own review step); otherwise only return the edit. */
  apply?: boolean;
}

export interface AltTextCommandResult {
  /** One edit for every image given alt text, annotated as needing confirmation. */
  edit: WorkspaceEdit;
  images: number;
  files: number;
  /** Images that could not be captioned, with the reason. */
  failures: { uri: string; image: string; reason: string }[];
}

/**
 * `initializationOptions` of the initialize request (client → server). Every field is optional: a generic LSP
 * client may send nothing and answer `workspace/configuration` instead.
 */
export interface InitializationOptions {
  /**
   * The `blip2` settings, for clients that do not answer `workspace/configuration` (same shape, any subset).
   * The server also takes them bare (the settings as initializationOptions themselves) or as `{ blip2: … }`.
   */
  settings?: unknown;
  /** Where the server keeps its disk cache of captions and image encodings (VS Code: the global storage folder). */
  cacheDir?: string;
  /** How long a hover waits for a caption not yet cached before it says "Captioning…", in milliseconds. */
  hoverWaitMs?: number;
}

/** The code action kind of "Generate missing alt text in this file" (a client may bind a key to it). */
export const GenerateAltTextActionKind = 'source.blip2.generateAltText';

/** client → server: caption an image. */
export namespace CaptionRequest {
  export const method = 'blip2/caption';
  export const type = new RequestType<CaptionParams, GenerationResult, void>(method);
}

/** client → server: answer a question (with optional chat history), streaming partial text. */
export namespace AskRequest {
  export const method = 'blip2/ask';
  export const type = new RequestType<AskParams, GenerationResult, void>(method);
}

/** client → server: the model's state now. */
export namespace ModelStatusRequest {
  export const method = 'blip2/modelStatus';
  export const type = new RequestType0<ModelStatus, void>(method);
}

/** client → server: download, convert and load the model now, reporting work-done progress; cancellable. */
export namespace SetUpModelRequest {
  export const method = 'blip2/setUpModel';
  export const type = new RequestType<SetUpModelParams, ModelStatus, void>(method);
}

/** client → server: what set-up would download and use on disk (reads the Hub's listing; downloads no weight). */
export namespace SetUpPlanRequest {
  export const method = 'blip2/setUpPlan';
  export const type = new RequestType<SetUpModelParams, SetUpPlan, void>(method);
}

/** client → server: the inference counters. */
export namespace CountersRequest {
  export const method = 'blip2/counters';
  export const type = new RequestType0<InferenceCounters, void>(method);
}

/**
 * server → client: the BLIP-2 server that `blip2.server.url` names failed (refused, 401, 429, 5xx, a time-out, not
 * BLIP-2): one sentence. Sent once per failure until it answers again; the VS Code client offers "Use the Local
 * Model" with it. Other clients get the same sentence as a `window/showMessage` notice instead.
 */
export namespace ServerFailureNotification {
  export const method = 'blip2/serverFailed';
  export const type = new NotificationType<{ message: string }>(method);
}

/** server → client: the model's state changed (status bar, first-run set-up). */
export namespace ModelStatusNotification {
  export const method = 'blip2/modelStatusChanged';
  export const type = new NotificationType<ModelStatus>(method);
}

/** Commands the server executes through workspace/executeCommand. */
export const ServerCommands = {
  /** Args: AltTextCommandArgs. Result: AltTextCommandResult. */
  generateMissingAltText: 'blip2.server.generateMissingAltText',
  /**
   * The quick fix for clients without `codeAction/resolve`: captions one image and applies the edit with
   * `workspace/applyEdit`. Args: the action's data (an image anchor). Result: null.
   */
  fixAltText: 'blip2.server.fixAltText',
} as const;

/** Commands the client implements, which server-made code actions and hovers link to. */
export const ClientCommands = {
  /** Args: [uri: string, range: Range, alternatives: string[]] — offer the other captions for an alt text just inserted. */
  chooseAltText: 'blip2.chooseAltText',
  /** Args: [image: string] */
  askAboutImage: 'blip2.askAboutImage',
  /** Args: [uri: string, range: Range, text: string] — replace the alt text of the image at range with text. */
  useAsAltText: 'blip2.useAsAltText',
  openChat: 'blip2.openImageChat',
  captionImage: 'blip2.captionImage',
  /** No args: the model set-up picker. */
  setUpModel: 'blip2.setUpModel',
  /** No args: clears the user's `blip2.server.url`, so the model on this machine computes again. */
  useLocalModel: 'blip2.useLocalModel',
} as const;

/**
 * Error codes of failed `blip2/*` requests, outside the ranges JSON-RPC and LSP reserve. The client reacts to
 * these (offers model set-up) instead of showing the message alone.
 */
export const Blip2ErrorCodes = {
  /** No model is set up (nothing at `blip2.model`, or not converted yet): the client offers set-up. */
  NoModel: 4001,
  /** The BLIP-2 server `blip2.server.url` names failed: the client offers to use the local model. */
  ServerFailed: 4002,
} as const;

/**
 * The only commands hover markdown links to. A client renders hovers with `isTrusted: { enabledCommands }` set
 * to this list (vscode-languageclient: `markdown.isTrusted` in LanguageClientOptions); LSP's MarkupContent has no
 * trust field, so the server cannot set it per hover.
 */
export const HOVER_COMMANDS: readonly string[] = [ClientCommands.useAsAltText, ClientCommands.askAboutImage, ClientCommands.setUpModel, ClientCommands.useLocalModel];
