import type { ModelStatus } from '../protocol/messages';

/**
 * Passes model status changes on: a new state, model or message at once (the status bar and set-up react to
 * those), progress within a state at most every `intervalMs` (conversion reports hundreds of steps a second).
 */
export class StatusThrottle {
  private last: ModelStatus | undefined;
  private pending: ModelStatus | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly send: (status: ModelStatus) => void,
    private readonly intervalMs = 250,
  ) {}

  push(status: ModelStatus): void {
    const last = this.last;
    if (!last || last.state !== status.state || last.model !== status.model || last.message !== status.message) {
      this.flushNow(status);
      return;
    }
    this.pending = status;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      if (this.pending) this.flushNow(this.pending);
    }, this.intervalMs);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
  }

  private flushNow(status: ModelStatus): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
    this.last = status;
    this.send(status);
  }
}
