import { CancellationTokenSource, type CancellationToken } from 'vscode-languageserver-protocol';
import { CancelledError } from '../engine/errors';

export function throwIfCancelled(token: CancellationToken): void {
  if (token.isCancellationRequested) throw new CancelledError();
}

/** A source cancelled when `parent` is; `dispose` unlinks it (the source keeps whatever state it has). */
export function linkedSource(parent: CancellationToken): { source: CancellationTokenSource; dispose(): void } {
  const source = new CancellationTokenSource();
  const subscription = parent.onCancellationRequested(() => source.cancel());
  if (parent.isCancellationRequested) source.cancel();
  return { source, dispose: () => subscription.dispose() };
}

export type Waited<T> = { kind: 'done'; value: T } | { kind: 'timeout' } | { kind: 'cancelled' };

/**
 * Waits for `promise` at most `ms` milliseconds, or until `token` is cancelled, whichever comes first. The
 * promise goes on either way; its rejection is re-thrown only when it settles within the wait.
 */
export function waitAtMost<T>(promise: Promise<T>, ms: number, token: CancellationToken): Promise<Waited<T>> {
  return new Promise<Waited<T>>((resolve, reject) => {
    let settled = false;
    const finish = (action: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      subscription.dispose();
      action();
    };
    const timer = setTimeout(() => finish(() => resolve({ kind: 'timeout' })), ms);
    const subscription = token.onCancellationRequested(() => finish(() => resolve({ kind: 'cancelled' })));
    if (token.isCancellationRequested) finish(() => resolve({ kind: 'cancelled' }));
    promise.then(
      (value) => finish(() => resolve({ kind: 'done', value })),
      (error: unknown) => finish(() => reject(error)),
    );
  });
}
