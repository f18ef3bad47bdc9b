import type { CancellationToken } from 'vscode-languageserver';
import type { ChatTurn, GenerationResult, InferenceCounters, ModelStatus, SetUpPlan } from '../protocol/messages';
import type { Blip2Settings } from '../protocol/settings';

/** An image as the inference service takes it: a file on disk, or bytes already in memory (remote, data: URI). */
export type ImageSource = { kind: 'file'; path: string } | { kind: 'bytes'; bytes: Uint8Array; name: string };

/** Captions and answers decoded together by default: decoding is bound by memory, so eight rows cost little more than one. */
export const DEFAULT_MAX_BATCH = 8;

/**
 * Distinct model runs waiting at once. Requests for the same image and prompt share one run, so this bounds work,
 * not requests: 500 hovers over 50 images wait on at most 50 runs.
 */
export const DEFAULT_MAX_QUEUED = 64;

/** Interactive work (a hover, a command) runs before background work (captions queued when a document opens). */
export type Priority = 'interactive' | 'background';

export interface CaptionOptions {
  /** Overrides the setting's caption prompt. */
  prompt?: string;
  priority: Priority;
  /** Also the `generation.alternatives` other captions, from a beam search run for them (slower than a caption). */
  alternatives?: boolean;
}

export interface AskOptions {
  priority: Priority;
  history?: ChatTurn[];
  /** The answer so far, after every generated token. */
  onPartial?: (textSoFar: string) => void;
}

export interface SetUpReporter {
  /** A short line and, when known, a 0..1 fraction. */
  report(message: string, fraction?: number): void;
  /** What set-up will download and use on disk, once known and before any weight moves. */
  cost?(cost: SetUpPlan): void;
}

/**
 * The BLIP-2 engine as the language features use it: one queue, one model run at a time in a worker thread,
 * duplicate requests sharing one run, results cached in memory and on disk. Features never see the connection;
 * the LSP layer never sees the worker.
 */
export interface InferenceService {
  caption(image: ImageSource, options: CaptionOptions, token: CancellationToken): Promise<GenerationResult>;
  ask(image: ImageSource, question: string, options: AskOptions, token: CancellationToken): Promise<GenerationResult>;
  /** What setting up the configured model (or `model`) would cost; reads the Hub's listing, downloads no weight. */
  planSetUp(model: string | undefined, token: CancellationToken): Promise<SetUpPlan>;
  /** Downloads, converts and loads the configured model (or `model`), reporting progress; cancellable. */
  setUp(model: string | undefined, reporter: SetUpReporter, token: CancellationToken): Promise<ModelStatus>;
  status(): ModelStatus;
  onStatusChange(listener: (status: ModelStatus) => void): { dispose(): void };
  counters(): InferenceCounters;
  /** New settings; a change that needs the model reloaded unloads it (the next request loads it again). */
  updateSettings(settings: Blip2Settings): void;
  dispose(): Promise<void>;
}
