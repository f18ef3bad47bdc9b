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
  const turns = history.map((t) => {
    const answer = t.answer.trim();
    return `Question: ${t.question.trim()} Answer: ${/[.!?]$/.test(answer) ? answer : `${answer}.`}`;
  });
  return [...turns, questionPrompt(question)].join(' ');
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
): ModelInputs {
  const longest = Math.max(...promptIds.map((p) => p.length + 1));
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
