import type { InferenceService } from '../inference/types';
import { describeError, kindOf } from './user-message';

export const NO_MODEL_HINT = 'Run "BLIP-2: Set Up Model…" to download or choose one.';

/** Whether a failed request failed because no model is set up (the client then offers set-up). */
export function isNoModel(error: unknown, inference: Pick<InferenceService, 'status'>): boolean {
  return kindOf(error) === 'noModel' || inference.status().state === 'noModel';
}

/** The sentence a hover, a result or a failure list shows for a failed caption or answer. */
export function failureSentence(error: unknown, inference: Pick<InferenceService, 'status'>): string {
  // A damaged model's sentence already says what is wrong and that set-up converts it again.
  if (!isNoModel(error, inference) || kindOf(error) === 'damaged') return describeError(error);
  const status = inference.status();
  const why = status.message ?? describeError(error);
  return `No BLIP-2 model is set up yet: ${why.replace(/[.\s]+$/, '')}. ${NO_MODEL_HINT}`;
}
