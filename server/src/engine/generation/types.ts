/**
 * The contract between the generation loop and the language model that feeds it.
 * The runtime (onnxruntime sessions, KV cache) implements LanguageModelSession; the loop owns
 * the decisions (which token, which beam, when to stop), so it can stream, stop between tokens
 * and be tested with a model written in plain TypeScript.
 */
export interface LanguageModelSession {
  /** Rows of the logits this model returns (the embedding table's row count, not the tokenizer's). */
  readonly vocabSize: number;
  /**
   * The first forward pass over the prompt rows the session was created with.
   * Returns the last-position logits of every row: rows * vocabSize floats, row-major.
   */
  prefill(): Promise<Float32Array>;
  /** Appends one token to every current row (attention mask extended by one) and returns the new last-position logits. */
  next(tokens: readonly number[]): Promise<Float32Array>;
  /**
   * Re-arranges the rows of the cached state: new row i is old row rows[i]. Used to expand a prompt to
   * its beams (rows may repeat) and to follow the beams that survive a step.
   */
  reorder(rows: readonly number[]): void;
  /** Releases the cached state. */
  dispose(): void;
}

/** Generation settings, named and defaulted as transformers' GenerationConfig. */
export interface GenerationOptions {
  maxNewTokens: number;
  minNewTokens?: number;
  numBeams?: number;
  lengthPenalty?: number;
  earlyStopping?: boolean | 'never';
  numReturnSequences?: number;
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  repetitionPenalty?: number;
  noRepeatNgramSize?: number;
  /** End tokens; generation of a row stops after it emits one of these (the token is kept). */
  eosTokenIds: readonly number[];
  padTokenId: number;
}

/** What the loop needs to know about the prompt: the full id sequence per row (image tokens, BOS, prompt; padding included). */
export interface GenerationInput {
  inputIds: readonly (readonly number[])[];
}

export interface GeneratedSequence {
  /** New tokens only, the end token included when one was generated. */
  tokenIds: number[];
  /** Beam score (sum of log-probs / length^lengthPenalty) for beam search; sum of chosen log-probs otherwise. */
  score: number;
}

export interface GenerationResult {
  /** Per input row, numReturnSequences sequences, best first. */
  sequences: GeneratedSequence[][];
  /** Greedy and sampling only: the processed scores of every step, [step][row * vocab] (for parity checks and diagnostics). */
  stepScores?: Float32Array[];
}

export interface GenerationCallbacks {
  /** Called after every step with each input row's newest token (greedy/sampling) or best beam so far. */
  onToken?: (row: number, tokenId: number) => void;
  signal?: AbortSignal;
  /** Keep the processed scores of every step in the result. */
  keepStepScores?: boolean;
}
