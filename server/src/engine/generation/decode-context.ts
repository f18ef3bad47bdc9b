import type { LogitsProcessor } from './logits-processors';
import type { ResolvedGenerationOptions } from './options';
import type { GenerationCallbacks, LanguageModelSession } from './types';

/** Everything a decoding strategy needs, checked and resolved by generate(). */
export interface DecodeContext {
  session: LanguageModelSession;
  /** The full id sequence of every input row (image ids, BOS, prompt, left padding); all rows the same length. */
  prompts: readonly (readonly number[])[];
  options: ResolvedGenerationOptions;
  processors: readonly LogitsProcessor[];
  callbacks: GenerationCallbacks;
}
