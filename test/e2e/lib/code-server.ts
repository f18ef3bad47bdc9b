// A code-server (real VS Code, served to a browser) of its own: its own user data, extensions and config
// folders under one temporary root, on 127.0.0.1, in its own process group, which stop() always ends whole.
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { E2eTools } from './env';

const execFileAsync = promisify(execFile);

export interface CodeServerOptions {
  tools: E2eTools;
  /** Everything code-server writes goes under here. */
  root: string;
  /** VS Code user settings (code-server keeps them in <user-data-dir>/User/settings.json). */
  userSettings?: Record<string, unknown>;
  /** More environment for code-server, hence for the extension host and the language server. */
  env?: Record<string, string>;
}

export class CodeServer {
  readonly userDataDir: string;
  readonly extensionsDir: string;
  private readonly configFile: string;
  private readonly xdgDir: string;
  private readonly logFile: string;
  private pgid: number | undefined;
  private exited: Promise<void> | undefined;
  private forgetGroup = () => {};
  url = '';

  constructor(private readonly options: CodeServerOptions) {
    const root = options.root;
    this.userDataDir = path.join(root, 'user-data');
    this.extensionsDir = path.join(root, 'extensions');
    this.configFile = path.join(root, 'config.yaml');
    this.xdgDir = path.join(root, 'xdg');
    this.logFile = path.join(root, 'code-server.log');
    for (const dir of [this.userDataDir, this.extensionsDir, path.join(this.xdgDir, 'config'), path.join(this.xdgDir, 'data'), path.join(this.userDataDir, 'User')]) {
      fs.mkdirSync(dir, { recursive: true });
    }
    fs.writeFileSync(this.configFile, 'auth: none\ncert: false\n');
    fs.writeFileSync(path.join(this.userDataDir, 'User', 'settings.json'), JSON.stringify(options.userSettings ?? {}, null, 2));
  }

  private env(): NodeJS.ProcessEnv {
    const { tools } = this.options;
    return {
      ...process.env,
      // Node 24 first: code-server needs it, and the extension host and the language server run on it.
      PATH: `${path.dirname(tools.node)}${path.delimiter}${process.env.PATH ?? ''}`,
      XDG_CONFIG_HOME: path.join(this.xdgDir, 'config'),
      XDG_DATA_HOME: path.join(this.xdgDir, 'data'),
      // Nothing of the test runner's own Node set-up leaks into code-server or the extension host.
      NODE_OPTIONS: '',
      ...this.options.env,
    };
  }

  private commonArgs(): string[] {
    return ['--user-data-dir', this.userDataDir, '--extensions-dir', this.extensionsDir, '--config', this.configFile];
  }

  /** `code-server --install-extension x.vsix`; returns the installed extension's folder. */
  async installExtension(vsix: string): Promise<string> {
    const { tools } = this.options;
    const { stdout, stderr } = await execFileAsync(tools.node, [tools.codeServer, ...this.commonArgs(), '--install-extension', vsix], {
      env: this.env(),
      timeout: 120_000,
    });
    fs.appendFileSync(this.logFile, `--- install-extension\n${stdout}${stderr}`);
    const installed = fs.readdirSync(this.extensionsDir).filter((d) => fs.existsSync(path.join(this.extensionsDir, d, 'package.json')));
    if (installed.length !== 1) throw new Error(`expected one installed extension in ${this.extensionsDir}, found: ${installed.join(', ') || 'none'}\n${stdout}${stderr}`);
    return path.join(this.extensionsDir, installed[0]);
  }

  /** Starts code-server in its own process group; resolves with its URL once it listens. */
  async start(timeoutMs = 60_000): Promise<string> {
    const { tools } = this.options;
    const args = [
      tools.codeServer,
      ...this.commonArgs(),
      '--bind-addr', '127.0.0.1:0',
      '--auth', 'none',
      '--disable-telemetry',
      '--disable-update-check',
      '--disable-workspace-trust',
      '--disable-getting-started-override',
      '--ignore-last-opened',
    ];
    const log = fs.openSync(this.logFile, 'a');
    // detached: the child calls setsid(), so it leads a new process group that holds every process code-server
    // forks (file watcher, extension host, the language server, ...), and stop() ends them all with one signal.
    const child = spawn(tools.node, args, { env: this.env(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pgid = child.pid;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    // Should the test process end without reaching stop() (killed by a timeout, Ctrl-C), the group goes too.
    const pgid = child.pid!;
    const killGroup = () => {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const onSignal = (signal: NodeJS.Signals) => {
      killGroup();
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    process.once('exit', killGroup);
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    this.forgetGroup = () => {
      process.off('exit', killGroup);
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    };
    return await new Promise<string>((resolve, reject) => {
      let seen = '';
      const timer = setTimeout(() => fail(new Error(`code-server did not report listening within ${timeoutMs} ms:\n${seen}`)), timeoutMs);
      const fail = (e: Error) => {
        clearTimeout(timer);
        reject(e);
      };
      const onData = (chunk: Buffer) => {
        fs.writeSync(log, chunk);
        seen += chunk.toString();
        const m = /HTTP server listening on (http:\/\/127\.0\.0\.1:\d+)\//.exec(seen);
        if (m && !this.url) {
          this.url = m[1];
          clearTimeout(timer);
          resolve(this.url);
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('error', fail);
      child.once('exit', (code, signal) => {
        fs.closeSync(log);
        if (!this.url) fail(new Error(`code-server exited (${signal ?? code}) before listening:\n${seen}`));
      });
    });
  }

  /** The processes of code-server's group now (code-server itself and everything it started). */
  processes(): { pid: number; cmdline: string }[] {
    if (this.pgid === undefined) return [];
    const found: { pid: number; cmdline: string }[] = [];
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
        // Fields after the command name, which is in parentheses and may contain spaces: state ppid pgrp ...
        const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
        if (pgrp !== this.pgid) continue;
        found.push({ pid: Number(entry), cmdline: fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim() });
      } catch {
        // The process ended while we looked.
      }
    }
    return found;
  }

  /** Ends the whole process group: SIGTERM, then SIGKILL for what is left after a grace period. */
  async stop(graceMs = 5_000): Promise<void> {
    const pgid = this.pgid;
    if (pgid === undefined) return;
    const signal = (sig: NodeJS.Signals) => {
      try {
        process.kill(-pgid, sig);
        return true;
      } catch {
        return false; // ESRCH: the group is empty.
      }
    };
    signal('SIGTERM');
    const deadline = Date.now() + graceMs;
    while (this.processes().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    signal('SIGKILL');
    await this.exited;
    while (this.processes().length > 0) await new Promise((r) => setTimeout(r, 50));
    this.pgid = undefined;
    this.forgetGroup();
  }

  /** code-server's own output and VS Code's logs (extension host, our output channels) copied to `dest`. */
  copyLogs(dest: string): void {
    fs.mkdirSync(dest, { recursive: true });
    if (fs.existsSync(this.logFile)) fs.copyFileSync(this.logFile, path.join(dest, 'code-server.log'));
    const logs = path.join(this.userDataDir, 'logs');
    if (fs.existsSync(logs)) fs.cpSync(logs, path.join(dest, 'vscode-logs'), { recursive: true });
  }
}
