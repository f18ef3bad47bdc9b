// Messages between the image chat webview (media/chat.js) and the extension. A webview is a web page: what it
// posts is checked here before it reaches the server.
import type { ChatTurn } from '../../server/src/protocol/messages';

/** The webview panel's type; package.json activates the extension on it to restore chats after a reload. */
export const CHAT_VIEW_TYPE = 'blip2.imageChat';

export const MAX_QUESTION_LENGTH = 2000;
/** Earlier turns sent with a question; older ones are dropped, as the model's context is short anyway. */
export const MAX_HISTORY_TURNS = 20;

/** webview → extension */
export type WebviewMessage =
  /** The page (re)loaded: send it whatever it missed while hidden. */
  | { type: 'ready' }
  | { type: 'ask'; requestId: string; question: string; history: ChatTurn[] }
  | { type: 'cancel'; requestId: string }
  | { type: 'copy'; text: string };

export interface AnswerMeta {
  model: string;
  precision: string;
  device: string;
  durationMs: number;
  cached: boolean;
}

/** extension → webview */
export type ExtensionMessage =
  | { type: 'partial'; requestId: string; textSoFar: string }
  | { type: 'answer'; requestId: string; question: string; text: string; meta: AnswerMeta }
  | { type: 'error'; requestId: string; question: string; message: string }
  /** The answer to 'ready': which questions still run, so the page can drop one the extension forgot (a reload). */
  | { type: 'hello'; activeRequestIds: string[] }
  /** The model's state in a few words, shown under the conversation. */
  | { type: 'status'; text: string; ready: boolean };

/** The message if it is one the webview may send, else undefined. */
export function parseWebviewMessage(value: unknown): WebviewMessage | undefined {
  if (!isRecord(value)) return undefined;
  switch (value.type) {
    case 'ready':
      return { type: 'ready' };
    case 'ask': {
      if (!isRequestId(value.requestId) || typeof value.question !== 'string') return undefined;
      const question = value.question.trim();
      if (!question || question.length > MAX_QUESTION_LENGTH) return undefined;
      const history = Array.isArray(value.history) ? value.history.filter(isTurn).slice(-MAX_HISTORY_TURNS) : [];
      return { type: 'ask', requestId: value.requestId, question, history: history.map(({ question, answer }) => ({ question, answer })) };
    }
    case 'cancel':
      return isRequestId(value.requestId) ? { type: 'cancel', requestId: value.requestId } : undefined;
    case 'copy':
      return typeof value.text === 'string' && value.text.length <= 100_000 ? { type: 'copy', text: value.text } : undefined;
    default:
      return undefined;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isRequestId(value: unknown): value is string {
  return typeof value === 'string' && /^[\w-]{1,64}$/.test(value);
}

function isTurn(value: unknown): value is ChatTurn {
  return (
    isRecord(value) &&
    typeof value.question === 'string' &&
    typeof value.answer === 'string' &&
    value.question.length <= MAX_QUESTION_LENGTH &&
    value.answer.length <= 10 * MAX_QUESTION_LENGTH
  );
}
