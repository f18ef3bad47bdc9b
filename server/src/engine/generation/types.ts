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
   * The loop processes the returned array in place, so it must not be one the session reads again.
   */
  prefill(): Promise<Float32Array>;
  /**
   * Appends one token to every current row (attention mask extended by one) and returns the new last-position logits
   * (same ownership rule as prefill). Rows that have finished still get a token (the pad id), as in transformers.
   */
  next(tokens: readonly number[]): Promise<Float32Array>;
  /**
   * Re-arranges the rows of the cached state: new row i is old row rows[i]. Used to expand a prompt to
   * its beams (rows may repeat) and to follow the beams that survive a step.
   */
  reorder(rows: readonly number[]): void;
  /** Releases the cached state. */
  dispose(): void;
}

/**
 * Generation settings, named and defaulted as transformers' GenerationConfig: numBeams 1, lengthPenalty 1,
 * earlyStopping false, numReturnSequences 1, doSample false, temperature 1, topK 50, topP 1, repetitionPenalty 1,
 * noRepeatNgramSize 0, minNewTokens 0; seed random when left out. Sampling settings are ignored unless doSample.
 */
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
  /**
   * Beam search: transformers' sequences_scores, sum of the (processed) log-probs / generated length ** lengthPenalty.
   * Greedy and sampling: the sum over steps of log_softmax(processed scores) at the chosen token.
   */
  score: number;
}

export interface GenerationResult {
  /** Per input row, numReturnSequences sequences, best first. */
  sequences: GeneratedSequence[][];
  /**
   * The scores of every step as transformers' output_scores records them, [step][row * vocab]: greedy and sampling,
   * the processed logits of every row (numReturnSequences rows per prompt when sampling several); beam search, the
   * processed log-probabilities of every beam (numBeams rows per prompt), before the running beam score is added.
   */
  stepScores?: Float32Array[];
}

/** Why a sequence ended: its end token, `maxNewTokens`, or `isStopped` (the caller's stop string or cancellation). */
export type FinishReason = 'stop' | 'length' | 'stopped';

export interface GenerationCallbacks {
  /**
   * Called after every step for each input row still generating. Greedy/sampling: the row's newest token, and which
   * of its numReturnSequences sequences it extends. Beam search: the newest token of the row's best running beam
   * (sequence 0), a preview only, since the best beam can change and the result comes from the finished beams.
   */
  onToken?: (row: number, tokenId: number, sequence: number) => void;
  signal?: AbortSignal;
  /** Keep the processed scores of every step in the result. */
  keepStepScores?: boolean;
  /**
   * Greedy and sampling: rows finish independently. Each sequence is reported here the step it ends, and its row
   * leaves the session then (`reorder` to the rows still going), so the rows left compute only their own steps;
   * transformers instead feeds ended rows the pad id until the last one ends, which the loop does without this.
   * Not with keepStepScores (the rows of later steps would no longer be the input rows). Beam search ignores it.
   */
  onSequenceDone?: (row: number, sequence: number, result: GeneratedSequence, finish: FinishReason) => void;
  /** With onSequenceDone: asked after every step for each sequence still going; true ends it there ('stopped'). */
  isStopped?: (row: number, sequence: number) => boolean;
}
