// What the editor and the CLI send a BLIP-2 server for a caption or an answer, and what they make of its reply, so
// that blip2 serve and vLLM (with the chat template in deploy/vllm) see the prompt the local engine would build.
import { isSampling, type GenerationSettings } from '../../engine/pipeline';
import { promptedAnswer, type ChatTurn } from '../../engine/preprocess/prompts';
import type { ChatCompletionRequest, ChatContentPart, ChatMessage } from '../../protocol/openai-chat';

/**
 * "\n" in blip2-opt's vocabulary: its generation config's end token. vLLM stops on the tokenizer's `</s>` unless told
 * otherwise; this tells it (vllm/entrypoints/openai/chat_completion/protocol.py: stop_token_ids).
 */
export const OPT_NEWLINE_TOKEN = 50118;

export type RemotePrompt = { caption: string } | { question: string; history: readonly ChatTurn[] };

/**
 * The request for an image (a `data:` URL) and a prompt: the caption prompt as a final assistant message to
 * continue, or the question after the earlier turns, each earlier answer as chatPrompt() writes it.
 * `add_special_tokens` puts BOS before the prompt, as transformers' Blip2Processor does (vLLM's chat default is
 * false); the sampling fields keep greedy greedy (vLLM's default temperature is 1).
 */
export function chatRequestFor(imageUrl: string, prompt: RemotePrompt, g: GenerationSettings, model: string): ChatCompletionRequest {
  const image: ChatContentPart = { type: 'image_url', image_url: { url: imageUrl } };
  const messages: ChatMessage[] = [];
  let continued = false;
  if ('caption' in prompt) {
    messages.push({ role: 'user', content: [image] });
    if (prompt.caption.trim()) {
      messages.push({ role: 'assistant', content: prompt.caption.trim() });
      continued = true;
    }
  } else {
    const turns = [...prompt.history.map((t) => ({ question: t.question.trim(), answer: t.answer })), { question: prompt.question.trim(), answer: '' }];
    turns.forEach((t, i) => {
      messages.push({ role: 'user', content: i === 0 ? [image, { type: 'text', text: t.question }] : t.question });
      // The answer as chatPrompt() writes it, ended with a full stop, so that the server's prompt is the engine's.
      if (i < turns.length - 1) messages.push({ role: 'assistant', content: promptedAnswer(t.answer) });
    });
  }
  const beams = (g.numBeams ?? 1) > 1;
  const sampling = !beams && isSampling(g);
  return {
    model,
    messages,
    ...(continued ? { add_generation_prompt: false, continue_final_message: true } : {}),
    add_special_tokens: true,
    max_completion_tokens: g.maxNewTokens,
    // Servers before max_completion_tokens read this one.
    max_tokens: g.maxNewTokens,
    ...(g.minNewTokens ? { min_tokens: g.minNewTokens } : {}),
    ...(beams ? { use_beam_search: true, n: g.numBeams, length_penalty: g.lengthPenalty ?? 1 } : {}),
    ...(sampling
      ? { temperature: g.temperature ?? 1, ...(g.topP !== undefined && { top_p: g.topP }), ...(g.topK !== undefined && { top_k: g.topK }), ...(g.seed !== undefined && { seed: g.seed }), n: g.numReturnSequences ?? 1 }
      : beams ? {} : { temperature: 0 }),
    ...(g.repetitionPenalty !== undefined && g.repetitionPenalty !== 1 ? { repetition_penalty: g.repetitionPenalty } : {}),
    ...(g.noRepeatNgramSize ? { no_repeat_ngram_size: g.noRepeatNgramSize } : {}),
    stop_token_ids: [OPT_NEWLINE_TOKEN],
    stream: true,
    stream_options: { include_usage: true },
  };
}

/**
 * A server's text as the engine would have given it: up to its first newline (vLLM's beam search stops only on
 * `</s>`, and its text keeps what came after a stop token), trimmed; and, where the server does not honour
 * no_repeat_ngram_size (vLLM has no such parameter), cut before the first word n-gram that repeats, where
 * transformers would have blocked the repetition.
 */
export function answerText(text: string, noRepeatNgramSize: number | undefined, serverBlocksNgrams: boolean): string {
  let out = text.split('\n')[0].trim();
  if (noRepeatNgramSize && noRepeatNgramSize > 0 && !serverBlocksNgrams) out = beforeRepeatedNgram(out, noRepeatNgramSize);
  return out;
}

/** The text up to (not including) the word that completes an n-gram seen before. */
export function beforeRepeatedNgram(text: string, n: number): string {
  const words = text.split(/\s+/).filter(Boolean);
  const seen = new Set<string>();
  for (let end = n; end <= words.length; end++) {
    const gram = words.slice(end - n, end).join(' ').toLowerCase();
    if (seen.has(gram)) return words.slice(0, end - 1).join(' ');
    seen.add(gram);
  }
  return text;
}
