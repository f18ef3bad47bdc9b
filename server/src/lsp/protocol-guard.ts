/**
 * The LSP lifecycle and the params of every message, enforced before any handler (or the library's own
 * `initialize` handler) sees a message: requests before `initialize` get -32002, a second `initialize` and
 * requests after `shutdown` get -32600, params that do not match their declared shape get -32602 with a sentence.
 * Notifications that break those rules are dropped with a log line, since nobody waits for an answer.
 */
import { ErrorCodes, Message, type MessageStrategy, type NotificationMessage, type RequestMessage } from 'vscode-languageserver/node';
import { NOTIFICATION_PARAMS, paramsProblem, REQUEST_PARAMS } from '../protocol/params';

/** Refused requests are routed here, carrying their error, so the connection answers them under their own id. */
export const REFUSED_METHOD = '$/blip2/refused';

export interface Refusal {
  code: number;
  message: string;
}

type Phase = 'uninitialized' | 'running' | 'shutDown';

export class ProtocolGuard {
  private phase: Phase = 'uninitialized';

  constructor(private readonly log: (line: string) => void) {}

  /** `shutdown` was accepted: an `exit` or a closed stream now ends the process with code 0. */
  get shutDown(): boolean {
    return this.phase === 'shutDown';
  }

  readonly strategy: MessageStrategy = {
    handleMessage: (message, next) => {
      if (Message.isRequest(message)) {
        const refusal = this.check(message);
        return next(refusal ? { ...message, method: REFUSED_METHOD, params: refusal } : message);
      }
      if (Message.isNotification(message) && !this.accepts(message)) return;
      return next(message);
    },
  };

  /** Why a request is refused, or undefined when it goes to its handler (moving the lifecycle on). */
  private check(request: RequestMessage): Refusal | undefined {
    const { method } = request;
    if (this.phase === 'uninitialized' && method !== 'initialize') {
      return { code: ErrorCodes.ServerNotInitialized, message: `The server is not initialized yet: send "initialize" before "${method}".` };
    }
    if (this.phase !== 'uninitialized' && method === 'initialize') {
      return { code: ErrorCodes.InvalidRequest, message: 'The server is already initialized: "initialize" may be sent only once.' };
    }
    if (this.phase === 'shutDown') {
      return { code: ErrorCodes.InvalidRequest, message: `The server is shutting down: "${method}" is not answered any more.` };
    }
    const problem = paramsProblem(REQUEST_PARAMS, method, request.params);
    if (problem) return { code: ErrorCodes.InvalidParams, message: problem };
    if (method === 'initialize') this.phase = 'running';
    else if (method === 'shutdown') this.phase = 'shutDown';
    return undefined;
  }

  private accepts(notification: NotificationMessage): boolean {
    const { method } = notification;
    if (method === 'exit' || method === '$/cancelRequest') return true;
    if (this.phase !== 'running') {
      this.log(`Ignored "${method}": ${this.phase === 'uninitialized' ? 'it came before "initialize"' : 'it came after "shutdown"'}.`);
      return false;
    }
    const problem = paramsProblem(NOTIFICATION_PARAMS, method, notification.params);
    if (problem) this.log(`Ignored ${problem.replace(/^Invalid params/, 'a notification with invalid params')}`);
    return problem === undefined;
  }
}
