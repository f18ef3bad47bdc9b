// What a failed request means for the user. Works on the error's shape, so it needs neither vscode nor the
// client library (whose ResponseError carries `code` and `message`).
import { Blip2ErrorCodes } from '../../server/src/protocol/messages';

/** JSON-RPC / LSP codes that mean "nobody failed": the request was called off. */
const CANCELLED_CODES = new Set([-32800 /* RequestCancelled */, -32802 /* ServerCancelled */]);

export type RequestFailure =
  | { kind: 'cancelled' }
  | { kind: 'noModel'; message: string }
  | { kind: 'serverFailed'; message: string }
  | { kind: 'failed'; message: string };

export function describeRequestError(error: unknown): RequestFailure {
  const { code, message } = (typeof error === 'object' && error !== null ? error : {}) as { code?: unknown; message?: unknown };
  const text = typeof message === 'string' && message.trim() ? message.trim() : String(error);
  if (typeof code === 'number' && CANCELLED_CODES.has(code)) return { kind: 'cancelled' };
  if (code === Blip2ErrorCodes.NoModel) return { kind: 'noModel', message: text };
  if (code === Blip2ErrorCodes.ServerFailed) return { kind: 'serverFailed', message: text };
  return { kind: 'failed', message: text };
}
