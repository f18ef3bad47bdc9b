import * as path from 'node:path';
import * as readline from 'node:readline';
import { readImageFile } from '../engine/preprocess/image-file';
import { captionPrompt, type ChatTurn } from '../engine/preprocess/prompts';
import { answerText, chatRequestFor, type RemotePrompt } from '../inference/remote/chat-request';
import { imageDataUrl } from '../inference/remote/image-data-url';
import { OpenAiChatClient } from '../inference/remote/openai-client';
import { DEFAULT_MAX_BATCH } from '../inference/types';
import { BLIP2_SERVE_OWNER, type ModelCard } from '../protocol/openai-chat';
import type { CliArgs } from './args';

/** A server may take its time (a queue, a model loading): a CPU server at full load, minutes. */
const TIMEOUT_MS = 300_000;

/**
 * `caption`, `ask` and `chat` with `--server URL`: the same output as the model here, computed by that BLIP-2
 * server (blip2 serve, or vLLM); each image is sent there, once per request, and nowhere else.
 */
export async function viaServer(args: CliArgs, signal: AbortSignal): Promise<number> {
  const client = new OpenAiChatClient({ baseUrl: args.server!, apiKey: process.env.BLIP2_API_KEY || undefined, timeoutMs: TIMEOUT_MS });
  const card = await client.blip2Model(signal);
  const ask = async (image: string, prompt: RemotePrompt, onText?: (text: string) => void): Promise<string[]> => {
    const bytes = await readImageFile(image, { maxBytes: args.maxImageBytes, raiseHint: 'Pass --max-image-mb with a larger limit to caption it.' });
    const request = chatRequestFor(await imageDataUrl(bytes), prompt, args.generation, card.id);
    const completion = await client.complete(request, { signal, onText: onText && ((i, text) => i === 0 && onText(text.split('\n')[0].trim())) });
    const texts = completion.choices.map((c) => answerText(c.text, args.generation.noRepeatNgramSize, card.owned_by === BLIP2_SERVE_OWNER));
    return texts.slice(0, Math.max(1, args.generation.numReturnSequences ?? 1));
  };
  if (args.command === 'chat') return chat(args, card, ask);
  const images = args.command === 'ask' ? [args.positionals[0]] : args.positionals;
  const prompt: RemotePrompt = args.command === 'ask' ? { question: args.positionals[1], history: [] } : { caption: captionPrompt(args.prompt) };
  // Sent together, so that the server can decode them as one batch; printed in order.
  for (let i = 0; i < images.length; i += DEFAULT_MAX_BATCH) {
    const chunk = images.slice(i, i + DEFAULT_MAX_BATCH);
    const results = await Promise.all(chunk.map((image) => ask(image, prompt)));
    chunk.forEach((image, j) => print(args, card, image, results[j]));
  }
  return 0;
}

function print(args: CliArgs, card: ModelCard, image: string, [text, ...alternatives]: string[]): void {
  if (args.json) {
    const record = { image, text, ...(alternatives.length > 0 && { alternatives: alternatives.map((a) => ({ text: a })) }), model: card.id, server: new URL(args.server!).origin };
    process.stdout.write(JSON.stringify(record) + '\n');
    return;
  }
  const lines = [text, ...alternatives.map((a) => `  alternative: ${a}`)];
  process.stdout.write((args.command === 'caption' && args.positionals.length > 1 ? `${image}: ` : '') + lines.join('\n') + '\n');
}

async function chat(args: CliArgs, card: ModelCard, ask: (image: string, prompt: RemotePrompt, onText?: (text: string) => void) => Promise<string[]>): Promise<number> {
  const image = args.positionals[0];
  const history: ChatTurn[] = [];
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY === true });
  process.stderr.write(`Chatting about ${path.basename(image)} with ${card.id} at ${new URL(args.server!).origin}. Ask a question; an empty line or Ctrl-D ends.\n`);
  for await (const line of rl) {
    const question = line.trim();
    if (!question) break;
    let printed = '';
    const [answer] = await ask(image, { question, history }, args.json ? undefined : (text) => {
      if (text.startsWith(printed)) process.stdout.write(text.slice(printed.length));
      printed = text;
    });
    if (args.json) process.stdout.write(JSON.stringify({ image, question, text: answer }) + '\n');
    else process.stdout.write((answer.startsWith(printed) ? answer.slice(printed.length) : `\n${answer}`) + '\n');
    history.push({ question, answer });
  }
  rl.close();
  return 0;
}
