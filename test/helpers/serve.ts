// A real `blip2 serve` process on loopback, from source, on the tiny fixture model: what the client-side tests talk to.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot, tinyCheckpointDir } from './paths';

export interface RunningServe {
  /** http://127.0.0.1:PORT (no /v1). */
  url: string;
  process: ChildProcess;
  /** Everything it wrote on stderr so far. */
  log(): string;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>;
}

/**
 * Starts `blip2 serve --port 0` (the tiny model at fp32 unless `args` say otherwise) and resolves once it listens.
 * `env` should come from isolatedEnv() (a private model store, offline).
 */
export function startServe(env: NodeJS.ProcessEnv, args: string[] = []): Promise<RunningServe> {
  const tsx = pathToFileURL(path.join(repoRoot, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
  const child = spawn(
    process.execPath,
    ['--import', tsx, path.join(repoRoot, 'server/src/cli/blip2.ts'), 'serve', '--model', tinyCheckpointDir, '--precision', 'fp32', '--device', 'cpu', '--port', '0', ...args],
    { cwd: repoRoot, env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`blip2 serve did not start within 120 s:\n${stderr}`));
    }, 120_000);
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /answers at (http:\/\/\S+?)\/v1/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve({
          url: m[1],
          process: child,
          log: () => stderr,
          stop: async () => {
            if (child.exitCode === null) child.kill('SIGTERM');
            return exited;
          },
        });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`blip2 serve exited with ${code} before it listened:\n${stderr}`));
    });
  });
}
