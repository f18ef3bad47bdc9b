// Messages between the language server's main thread and its inference worker.
import type { ModelProgress } from '../engine/open-model';
import type { GenerationSettings } from '../engine/pipeline';
import type { ImageSource } from './types';

export interface EngineSettings {
  model: string;
  precision: string;
  device: string;
  threads: number;
  store?: string;
  offline: boolean;
}

export interface LoadedModel {
  source: string;
  dir: string;
  precision: string;
  device: string;
  fallbackReason?: string;
  loadMs: number;
}

/** Why a job failed: 'user' errors carry a sentence for the user, 'cancelled' is a cancellation, 'internal' a bug. */
export interface WorkerError {
  kind: 'user' | 'cancelled' | 'internal' | 'noModel';
  message: string;
}

export type ToWorker =
  | { type: 'load'; id: number; settings: EngineSettings }
  | { type: 'encode'; id: number; image: ImageSource }
  | { type: 'generate'; id: number; rows: { features: Float32Array; prompt: string }[]; settings: GenerationSettings }
  | { type: 'cancel'; id: number };

export type FromWorker =
  | { type: 'progress'; id: number; progress: ModelProgress }
  | { type: 'loaded'; id: number; model: LoadedModel }
  | { type: 'encoded'; id: number; features: Float32Array; preprocessMs: number; visionMs: number }
  | { type: 'token'; id: number; row: number; textSoFar: string }
  | { type: 'generated'; id: number; texts: string[][]; prefillMs: number; decodeMs: number }
  | { type: 'failed'; id: number; error: WorkerError };

/**
 * onnxruntime's run() blocks the worker's thread, so a 'cancel' message would wait behind the whole generation.
 * The main thread writes the id of the job to stop into this shared slot instead; the worker reads it after
 * every token.
 */
export const CANCEL_SLOT = 0;
