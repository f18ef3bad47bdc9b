// The part of the OpenAI chat completions API that vLLM implements for BLIP-2, as `blip2 serve` answers it and the
// editor's and the CLI's client send it. Field names and shapes follow vLLM's source (docs/server.md cites the
// files): vllm/entrypoints/openai/chat_completion/protocol.py for the request and the responses,
// vllm/entrypoints/openai/engine/protocol.py for errors and the model list.

/** A content part of a message: text, or an image as a URL (blip2 serve takes `data:` URLs only). */
export type ChatContentPart =
  | { type: 'text'; text: string }
  | { type: 'image_url'; image_url: { url: string; detail?: string } | string };

export interface ChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | string;
  content: string | ChatContentPart[] | null;
}

/** The request fields either side uses; others are ignored by blip2 serve, as vLLM ignores unknown fields. */
export interface ChatCompletionRequest {
  model?: string;
  messages: ChatMessage[];
  max_completion_tokens?: number;
  /** Deprecated by OpenAI in favour of max_completion_tokens; vLLM reads it when the other is absent. */
  max_tokens?: number;
  min_tokens?: number;
  n?: number;
  use_beam_search?: boolean;
  length_penalty?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  repetition_penalty?: number;
  stop?: string | string[];
  stop_token_ids?: number[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  /** vLLM: whether the tokenizer adds BOS to the rendered prompt (default false for chat); transformers does. */
  add_special_tokens?: boolean;
  add_generation_prompt?: boolean;
  continue_final_message?: boolean;
  /** blip2 serve's own extension (transformers' no_repeat_ngram_size); vLLM ignores it. */
  no_repeat_ngram_size?: number;
}

export type FinishReason = 'stop' | 'length';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: { index: number; message: { role: 'assistant'; content: string }; logprobs: null; finish_reason: FinishReason; stop_reason: null }[];
  usage: Usage;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: { index: number; delta: { role?: 'assistant'; content?: string }; logprobs?: null; finish_reason?: FinishReason | null }[];
  usage?: Usage;
}

/** vLLM's error body since v0.10.1: `code` is the HTTP status. */
export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

export interface ModelCard {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  root?: string | null;
  parent?: string | null;
  max_model_len?: number | null;
  permission?: unknown[];
}

export interface ModelList {
  object: 'list';
  data: ModelCard[];
}

/** `owned_by` of blip2 serve's model card: a client that sees it knows the server honours no_repeat_ngram_size. */
export const BLIP2_SERVE_OWNER = 'blip2';
