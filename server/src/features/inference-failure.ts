import type { InferenceService } from '../inference/types';
import { describeError, kindOf } from './user-message';

/**
 * The way out when no model is set up. In VS Code it is the extension's command; every other editor has the
 * `model` setting (and the CLI, which downloads and converts a model once into the store the server reads).
 */
export function noModelHint(vscodeClient: boolean): string {
  return vscodeClient
    ? 'Run "BLIP-2: Set Up Model…" to download or choose one.'
    : 'Set the "model" setting to a folder with a BLIP-2 checkpoint, or download and convert one once with `blip2 convert --model Salesforce/blip2-opt-2.7b`.';
}

/** Whether a request failed because the BLIP-2 server `blip2.server.url` names failed (the client offers the local model). */
export function isServerFailure(error: unknown): boolean {
  return kindOf(error) === 'server';
}

/** The way out of a server's failure where the editor has no button for it. */
export const USE_LOCAL_MODEL_HINT = 'Clear the server.url setting to use the model on this machine.';

/** Whether a failed request failed because no model is set up (the client then offers set-up). */
export function isNoModel(error: unknown, inference: Pick<InferenceService, 'status'>): boolean {
  return kindOf(error) === 'noModel' || inference.status().state === 'noModel';
}

/** Why a caption or answer failed, in one sentence, without the way out. */
export function failureReason(error: unknown, inference: Pick<InferenceService, 'status'>): string {
  // A damaged model's sentence already says what is wrong and that set-up converts it again.
  if (!isNoModel(error, inference) || kindOf(error) === 'damaged') return describeError(error);
  const why = inference.status().message ?? describeError(error);
  return `No BLIP-2 model is set up yet: ${why.replace(/[.\s]+$/, '')}.`;
}

/** The sentence a result, a message or a failure list shows for a failed caption or answer, with the way out. */
export function failureSentence(error: unknown, inference: Pick<InferenceService, 'status'>, vscodeClient = false): string {
  const reason = failureReason(error, inference);
  if (isServerFailure(error)) return vscodeClient ? reason : `${reason} ${USE_LOCAL_MODEL_HINT}`;
  return isNoModel(error, inference) && kindOf(error) !== 'damaged' ? `${reason} ${noModelHint(vscodeClient)}` : reason;
}
