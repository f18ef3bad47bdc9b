// A chat completion request as blip2 serve takes it: validated, its image decoded from its data: URL, its
// messages made into the prompt the local engine would use, its sampling fields into generation settings.
import { z } from 'zod';
import type { GenerationSettings } from '../engine/pipeline';
import { captionPrompt, type ChatTurn } from '../engine/preprocess/prompts';
import type { PromptSpec } from '../inference/worker-protocol';
import type { ChatContentPart, ChatMessage } from '../protocol/openai-chat';
import { NUMBER_LIMITS } from '../protocol/settings';
import { badRequest } from './api-error';

export interface RequestLimits {
  /** The largest image, decoded, in bytes. */
  maxImageBytes: number;
  /** The most new tokens a request may ask for. */
  maxNewTokens: number;
  /** New tokens when a request names none. */
  defaultMaxTokens: number;
}

export interface ChatRequest {
  image: Uint8Array;
  prompt: PromptSpec;
  settings: GenerationSettings;
  /** Choices to answer with: beams kept, or samples. */
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** The model the request names, if any. */
  model?: string;
}

const int = z.number().int();
const part = z.object({ type: z.string() }).loose();
const message = z.object({ role: z.string(), content: z.union([z.string(), z.array(part), z.null()]).optional() });

/** The fields blip2 serve reads; any other field is ignored, as vLLM ignores (and logs) fields it does not know. */
const schema = z.object({
  model: z.string().nullish(),
  messages: z.array(message).min(1),
  max_completion_tokens: int.min(1).nullish(),
  max_tokens: int.min(1).nullish(),
  min_tokens: int.min(0).nullish(),
  n: int.min(1).max(NUMBER_LIMITS['generation.numBeams'].max!).nullish(),
  use_beam_search: z.boolean().nullish(),
  length_penalty: z.number().nullish(),
  temperature: z.number().min(0).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  // vLLM's "off" is 0 or -1.
  top_k: int.min(-1).nullish(),
  seed: int.nullish(),
  repetition_penalty: z.number().gt(0).nullish(),
  no_repeat_ngram_size: int.min(0).max(NUMBER_LIMITS['generation.noRepeatNgramSize'].max!).nullish(),
  stop: z.union([z.string().max(256), z.array(z.string().max(256)).max(16)]).nullish(),
  stop_token_ids: z.array(int.min(0)).max(64).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  add_generation_prompt: z.boolean().nullish(),
});

/** The request in `body` (parsed JSON), or an ApiError (400) naming the field that is wrong. */
export function parseChatRequest(body: unknown, limits: RequestLimits): ChatRequest {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue.path.join('.') || 'the request';
    throw badRequest(`${field}: ${issue.message}.`, issue.path.length ? String(issue.path[0]) : null);
  }
  const r = parsed.data;
  const maxNewTokens = r.max_completion_tokens ?? r.max_tokens ?? limits.defaultMaxTokens;
  if (maxNewTokens > limits.maxNewTokens) {
    throw badRequest(`max_completion_tokens is ${maxNewTokens}, more than this server's limit of ${limits.maxNewTokens}.`, 'max_completion_tokens');
  }
  if ((r.min_tokens ?? 0) > maxNewTokens) throw badRequest(`min_tokens (${r.min_tokens}) is more than max_completion_tokens (${maxNewTokens}).`, 'min_tokens');

  const n = r.n ?? 1;
  const beams = r.use_beam_search === true;
  const sampling = !beams && r.temperature !== undefined && r.temperature !== null && r.temperature > 0;
  if (n > 1 && !beams && !sampling) {
    throw badRequest('n > 1 needs sampling (a temperature above 0) or use_beam_search: greedy decoding gives one answer.', 'n');
  }
  const settings: GenerationSettings = {
    maxNewTokens,
    ...(r.min_tokens ? { minNewTokens: r.min_tokens } : {}),
    ...(beams ? { numBeams: n, numReturnSequences: n, lengthPenalty: r.length_penalty ?? 1 } : {}),
    ...(sampling
      ? {
          numReturnSequences: n,
          temperature: r.temperature!,
          ...(r.top_p != null && { topP: r.top_p }),
          ...(r.top_k != null && { topK: Math.max(0, r.top_k) }),
          ...(r.seed != null && { seed: r.seed }),
        }
      : { temperature: 0 }),
    ...(r.repetition_penalty != null && r.repetition_penalty !== 1 && { repetitionPenalty: r.repetition_penalty }),
    ...(r.no_repeat_ngram_size ? { noRepeatNgramSize: r.no_repeat_ngram_size } : {}),
    ...(r.stop != null && { stop: typeof r.stop === 'string' ? [r.stop] : r.stop }),
    ...(r.stop_token_ids?.length ? { stopTokenIds: r.stop_token_ids } : {}),
  };
  if (!sampling) delete settings.temperature;
  const { image, prompt } = readMessages(r.messages as ChatMessage[], r.add_generation_prompt ?? true, limits);
  return {
    image,
    prompt,
    settings,
    n,
    stream: r.stream === true,
    includeUsage: r.stream_options?.include_usage === true,
    ...(r.model ? { model: r.model } : {}),
  };
}

interface Turn {
  role: 'user' | 'assistant';
  text: string;
}

/** The one image and the prompt of a conversation; system and developer messages say nothing to BLIP-2. */
function readMessages(messages: ChatMessage[], addGenerationPrompt: boolean, limits: RequestLimits): { image: Uint8Array; prompt: PromptSpec } {
  const turns: Turn[] = [];
  const images: Uint8Array[] = [];
  messages.forEach((m, i) => {
    if (m.role !== 'user' && m.role !== 'assistant') return;
    const parts: ChatContentPart[] = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : ((m.content ?? []) as ChatContentPart[]);
    const texts: string[] = [];
    for (const p of parts) {
      if (p.type === 'text' && typeof (p as { text?: unknown }).text === 'string') texts.push(p.text);
      else if (p.type === 'image_url' && m.role === 'user') images.push(decodeImage(p.image_url, `messages.${i}`, limits));
      else throw badRequest(`messages.${i}: blip2 serve takes text and image_url parts in user messages (got ${p.type}).`, 'messages');
    }
    // vLLM's "string" content format joins a message's text parts with newlines.
    turns.push({ role: m.role, text: texts.join('\n') });
  });
  if (images.length !== 1) {
    throw badRequest(images.length === 0 ? 'BLIP-2 needs an image: send one image_url part.' : `At most 1 image may be provided in one prompt (got ${images.length}).`, 'messages');
  }
  return { image: images[0], prompt: promptOf(turns, addGenerationPrompt) };
}

/**
 * The prompt, as the chat template in deploy/vllm renders the same messages for vLLM: a user message is
 * "Question: … ", an assistant message "Answer: … ", and "Answer:" follows a final question; an image alone asks for
 * a caption, and a final assistant message is the text the caption continues ("a photo of"). A question with
 * earlier turns goes as a chat, so the worker fits it to the model's context as the local engine does.
 */
export function promptOf(turns: readonly Turn[], addGenerationPrompt = true): PromptSpec {
  const spoken = turns.filter((t) => t.text.trim() !== '');
  const last = turns[turns.length - 1];
  if (spoken.length === 0) return { text: '' };
  if (spoken.length === 1 && last?.role === 'assistant' && spoken[0] === last) return { text: captionPrompt(last.text) };
  if (last?.role === 'user' && last.text.trim() && addGenerationPrompt) {
    const history = chatHistory(spoken.slice(0, -1));
    if (history) return { question: last.text, history };
  }
  return { text: renderTurns(spoken, addGenerationPrompt).trim() };
}

/** Earlier turns as question and answer pairs, or undefined when they do not alternate so. */
function chatHistory(turns: readonly Turn[]): ChatTurn[] | undefined {
  if (turns.length % 2 !== 0) return undefined;
  const history: ChatTurn[] = [];
  for (let i = 0; i < turns.length; i += 2) {
    if (turns[i].role !== 'user' || turns[i + 1].role !== 'assistant') return undefined;
    history.push({ question: turns[i].text, answer: turns[i + 1].text });
  }
  return history;
}

function renderTurns(turns: readonly Turn[], addGenerationPrompt: boolean): string {
  let text = '';
  turns.forEach((t, i) => {
    const final = i === turns.length - 1;
    if (t.role === 'user') text += `Question: ${t.text.trim()} `;
    else text += final && !addGenerationPrompt ? t.text.trim() : `Answer: ${t.text.trim()} `;
  });
  if (addGenerationPrompt && turns[turns.length - 1]?.role === 'user') text += 'Answer:';
  return text;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** The bytes of a `data:…;base64,` image URL; blip2 serve fetches nothing, so any other URL is refused. */
function decodeImage(value: unknown, where: string, limits: RequestLimits): Uint8Array {
  const url = typeof value === 'string' ? value : typeof value === 'object' && value !== null ? (value as { url?: unknown }).url : undefined;
  if (typeof url !== 'string') throw badRequest(`${where}: image_url needs a url.`, 'messages');
  if (!url.startsWith('data:')) {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1] ?? 'that';
    throw badRequest(`${where}: blip2 serve does not fetch images from ${scheme} URLs; send the image's bytes as a data: URL (data:image/png;base64,…).`, 'messages');
  }
  const comma = url.indexOf(',');
  const meta = url.slice(5, comma < 0 ? undefined : comma);
  if (comma < 0 || !/;base64$/i.test(meta)) throw badRequest(`${where}: the image's data: URL must be base64 (data:image/png;base64,…).`, 'messages');
  const data = url.slice(comma + 1).replace(/\s+/g, '');
  if (data.length === 0 || data.length % 4 !== 0 || !BASE64.test(data)) throw badRequest(`${where}: the image's data: URL is not valid base64.`, 'messages');
  const bytes = Buffer.from(data, 'base64');
  if (bytes.length > limits.maxImageBytes) {
    throw badRequest(`${where}: the image is ${mb(bytes.length)}, more than this server's limit of ${mb(limits.maxImageBytes)}.`, 'messages');
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
}

function mb(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}
