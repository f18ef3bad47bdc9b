import { UserError } from '../errors';

/** One earlier exchange of a chat about an image. */
export interface ChatTurn {
  question: string;
  answer: string;
}

/** Captioning: no prompt, or a prefix such as "a photo of" that the caption continues. */
export function captionPrompt(prefix?: string): string {
  return prefix?.trim() ?? '';
}

/** The visual-question form BLIP-2 OPT was trained on. */
export function questionPrompt(question: string): string {
  const q = question.trim();
  if (!q) throw new UserError('The question is empty.', 'Type a question about the image.');
  return `Question: ${q} Answer:`;
}

/** Chat: earlier turns as "Question: … Answer: …." before the new question, as in the BLIP-2 model card. */
export function chatPrompt(history: readonly ChatTurn[], question: string): string {
  const turns = history.map((t) => `Question: ${t.question.trim()} Answer: ${promptedAnswer(t.answer)}`);
  return [...turns, questionPrompt(question)].join(' ');
}

/** An earlier answer as a chat prompt gives it: trimmed, and ended with a full stop unless it ends a sentence. */
export function promptedAnswer(answer: string): string {
  const a = answer.trim();
  return /[.!?]$/.test(a) ? a : `${a}.`;
}

/** What bounds a prompt: the language model's positions, shared by the image's query tokens, BOS and the answer. */
export interface PromptLimits {
  maxPositions: number;
  numQueryTokens: number;
  maxNewTokens: number;
}

/** The most prompt tokens that leave room for the query tokens, BOS and `maxNewTokens` new tokens. */
export function promptBudget(limits: PromptLimits): number {
  return limits.maxPositions - limits.numQueryTokens - 1 - limits.maxNewTokens;
}

/**
 * The chat prompt for `question` with as many of the latest turns as fit in `budget` tokens: the oldest turns are
 * dropped first, as a chat window scrolls. `countTokens` tokenizes; it is called O(log turns) times.
 */
export function fitChatPrompt(history: readonly ChatTurn[], question: string, countTokens: (prompt: string) => number, budget: number): string {
  const prompt = (dropped: number): string => chatPrompt(history.slice(dropped), question);
  if (countTokens(prompt(0)) <= budget) return prompt(0);
  // The fewest turns to drop: more dropped never makes the prompt longer.
  let low = 1;
  let high = history.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (countTokens(prompt(mid)) <= budget) high = mid;
    else low = mid + 1;
  }
  return prompt(low);
}

export interface ModelInputs {
  inputIds: number[][];
  attentionMask: number[][];
}

/**
 * The language model's input rows as Blip2Processor builds them: the `<image>` placeholders, then BOS and the
 * prompt; rows of different lengths are left-padded between the placeholders and BOS, as the tokenizer pads
 * the text before the processor prepends the image tokens.
 */
export function buildInputs(
  promptIds: readonly (readonly number[])[],
  ids: { imageToken: number; bos: number; pad: number; numQueryTokens: number },
  limits?: PromptLimits,
): ModelInputs {
  const longest = Math.max(...promptIds.map((p) => p.length + 1));
  if (limits && promptBudget(limits) < 0) {
    // The answer alone would run past the last position, whatever the prompt.
    const most = limits.maxPositions - limits.numQueryTokens - 1;
    throw new UserError(
      `Up to ${limits.maxNewTokens} new tokens do not fit in the model's context of ${limits.maxPositions} positions with the image's ${limits.numQueryTokens} tokens: at most ${most} can be generated, fewer after a prompt.`,
      'Lower the number of new tokens (maxNewTokens, --max-new-tokens).',
    );
  }
  if (limits && longest - 1 > promptBudget(limits)) {
    // Past the last position the model has no embedding: onnxruntime would fail with an index out of bounds.
    throw new UserError(
      `The prompt is ${longest - 1} tokens long, more than the ${promptBudget(limits)} that fit in the model's context of ${limits.maxPositions} positions with the image's ${limits.numQueryTokens} tokens and up to ${limits.maxNewTokens} new ones.`,
      'Shorten the question or the prompt.',
    );
  }
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  for (const prompt of promptIds) {
    const text = [ids.bos, ...prompt];
    const pad = longest - text.length;
    inputIds.push([...Array(ids.numQueryTokens).fill(ids.imageToken), ...Array(pad).fill(ids.pad), ...text]);
    attentionMask.push([...Array(ids.numQueryTokens).fill(1), ...Array(pad).fill(0), ...Array(text.length).fill(1)]);
  }
  return { inputIds, attentionMask };
}
