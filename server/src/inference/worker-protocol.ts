// Messages between the language server's main thread and its inference worker.
import type { ModelProgress } from '../engine/open-model';
import type { Answer, GenerationSettings } from '../engine/pipeline';
import type { ChatTurn } from '../engine/preprocess/prompts';
import type { SetUpCost } from '../engine/store/setup-cost';

export interface EngineSettings {
  model: string;
  precision: string;
  device: string;
  threads: number;
  store?: string;
  offline: boolean;
  /** Convert a damaged conversion again (set-up) instead of refusing it. */
  repair: boolean;
  /** Keep a Hub checkpoint in the Hugging Face cache instead of converting it as it streams. */
  keepSource: boolean;
}

export interface LoadedModel {
  source: string;
  dir: string;
  precision: string;
  device: string;
  fallbackReason?: string;
  /** Why loading stays slow (see Blip2Model.loadNotes). */
  loadNotes: string[];
  loadMs: number;
  /** The language model's positions (the image's query tokens included), as vLLM's max_model_len. */
  maxModelLen: number;
}

/**
 * Why a job failed: 'user' errors carry a sentence for the user, 'noModel' and 'damaged' one that set-up
 * answers, 'cancelled' is a cancellation, 'crashed' the worker's end, 'internal' a bug.
 */
export interface WorkerError {
  kind: 'user' | 'cancelled' | 'internal' | 'noModel' | 'damaged' | 'crashed';
  message: string;
  /** 'crashed': what ended the worker ("ran out of memory (…)"), for a message in other words. */
  cause?: string;
}

/** An image's bytes as the main thread read and hashed them, with the name messages use. */
export interface ImageBytes {
  bytes: Uint8Array;
  name: string;
}

/**
 * A prompt as text, or a question with its chat history, which the worker makes into text with as many of the
 * latest turns as fit in the model's context (it holds the tokenizer).
 */
export type PromptSpec = { text: string } | { question: string; history: ChatTurn[] };

export type ToWorker =
  | { type: 'load'; id: number; settings: EngineSettings }
  | { type: 'plan'; id: number; settings: EngineSettings }
  | { type: 'encode'; id: number; image: ImageBytes }
  | { type: 'generate'; id: number; rows: { features: Float32Array; prompt: PromptSpec }[]; settings: GenerationSettings }
  | { type: 'cancel'; id: number };

export type FromWorker =
  | { type: 'progress'; id: number; progress: ModelProgress }
  | { type: 'loaded'; id: number; model: LoadedModel }
  | { type: 'planned'; id: number; cost: SetUpCost }
  | { type: 'encoded'; id: number; features: Float32Array; preprocessMs: number; visionMs: number }
  | { type: 'token'; id: number; row: number; sequence: number; textSoFar: string }
  /** One row's answer, as soon as the row ends (the job's other rows may go on). */
  | { type: 'answer'; id: number; row: number; answer: Answer }
  /** The whole job is done; every row was answered before this. */
  | { type: 'generated'; id: number; prefillMs: number; decodeMs: number }
  | { type: 'failed'; id: number; error: WorkerError };

/**
 * onnxruntime's run() blocks the worker's thread, so a 'cancel' message would wait behind the whole generation.
 * The main thread writes the id of the job to stop into this shared slot instead; the worker reads it after
 * every token. The slots after it are per row of a batch: `CANCEL_SLOT + 1 + row` holds the id of the job whose
 * row `row` is to end (its request was cancelled) while the other rows go on.
 */
export const CANCEL_SLOT = 0;

/** The most rows one generate job may have (each has a cancellation slot). */
export const MAX_BATCH_ROWS = 64;
