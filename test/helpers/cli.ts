import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from './paths';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A private store and Hugging Face cache, offline, so CLI tests never touch the network or the user's folders. */
export function isolatedEnv(): { env: NodeJS.ProcessEnv; store: string; cleanup: () => void } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-cli-'));
  const store = path.join(root, 'store');
  const env = { ...process.env, BLIP2_HOME: store, HF_HOME: path.join(root, 'hf'), HF_HUB_OFFLINE: '1', BLIP2_DEBUG: '' };
  return { env, store, cleanup: () => fs.rmSync(root, { recursive: true, force: true }) };
}

/** Runs the blip2 CLI from its TypeScript source, as the bundle would run it. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, stdin?: string, cwd = repoRoot): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    // tsx by its path: the folder the CLI runs in (a test's temporary folder) has no node_modules.
    const tsx = pathToFileURL(path.join(repoRoot, 'node_modules', 'tsx', 'dist', 'loader.mjs')).href;
    const child = spawn(process.execPath, ['--import', tsx, path.join(repoRoot, 'server/src/cli/blip2.ts'), ...args], {
      cwd,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin ?? '');
  });
}
