// What the benchmarks share: the machine's description, waiting for a quiet machine, child processes timed with
// their peak resident memory (GNU time), and the random-weight checkpoint of the real model with its conversions.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { CONVERTER_VERSION } from '../../server/src/engine/convert/manifest';
import type { Precision } from '../../server/src/engine/convert/precision';

export const ROOT = path.resolve(__dirname, '../..');

export function log(line: string): void {
  process.stderr.write(line + '\n');
}

// ---------------------------------------------------------------------------------------------------------------
// The machine

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  features: { avx2: boolean; avx512f: boolean; avx512_vnni: boolean; avx_vnni: boolean; amx: boolean };
  node: string;
  onnxruntime: string;
  os: string;
  threads: number;
}

export function machine(threads: number): Machine {
  const info = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const flags = new Set((/^flags\s*:(.*)$/m.exec(info)?.[1] ?? '').trim().split(/\s+/));
  return {
    cpu: /^model name\s*:(.*)$/m.exec(info)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: os.totalmem() / 2 ** 30,
    features: {
      avx2: flags.has('avx2'),
      avx512f: flags.has('avx512f'),
      avx512_vnni: flags.has('avx512_vnni'),
      avx_vnni: flags.has('avx_vnni'),
      amx: flags.has('amx_tile'),
    },
    node: process.version,
    onnxruntime: ort.env.versions.common,
    os: `${os.type()} ${os.release()}`,
    threads,
  };
}

/** "AVX2 true, AVX-512 true, VNNI true, AMX false": the features that decide which kernels are fast. */
export function featureSummary(m: Machine): string {
  return `AVX2 ${m.features.avx2}, AVX-512 ${m.features.avx512f}, VNNI ${m.features.avx512_vnni || m.features.avx_vnni}, AMX ${m.features.amx}`;
}

/** bench/results/<date>-<avx512|avx2|cpu>[-vnni][-amx].json: one file per host kind and day, so hosts do not overwrite each other. */
export function resultFileName(m: Machine, started: Date, kind = ''): string {
  const isa = m.features.avx512f ? 'avx512' : m.features.avx2 ? 'avx2' : 'cpu';
  const vnni = m.features.avx512_vnni || m.features.avx_vnni ? '-vnni' : '';
  return `${started.toISOString().slice(0, 10)}-${isa}${vnni}${m.features.amx ? '-amx' : ''}${kind ? `-${kind}` : ''}.json`;
}

export function loadavg(): number[] {
  return fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
}

/** Busy share of all cores over `ms` while this process sleeps: what others are running right now. */
export async function busyShare(ms = 2000): Promise<number> {
  const sample = () => {
    const cpu = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = cpu[3] + cpu[4];
    return { idle, total: cpu.reduce((a, b) => a + b, 0) };
  };
  const a = sample();
  await new Promise((r) => setTimeout(r, ms));
  const b = sample();
  return 1 - (b.idle - a.idle) / Math.max(1, b.total - a.total);
}

/** Waits until other processes leave the cores alone (under 10% busy), for up to quietWaitS; says so if not. */
export async function waitForQuiet(what: string, quietWaitS: number): Promise<{ busy: number; waitedS: number; loadavg: number[] }> {
  const start = Date.now();
  let busy = await busyShare();
  let told = false;
  while (busy > 0.1 && (Date.now() - start) / 1000 < quietWaitS) {
    if (!told) log(`  waiting for a quiet machine before ${what} (others use ${(busy * 100).toFixed(0)}% of the cores) ...`);
    told = true;
    busy = await busyShare(5000);
  }
  if (busy > 0.1) log(`  still ${(busy * 100).toFixed(0)}% busy after ${quietWaitS} s; measuring ${what} anyway`);
  return { busy, waitedS: (Date.now() - start) / 1000, loadavg: loadavg() };
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes

export interface ChildResult<T> {
  ok: boolean;
  value?: T;
  error?: string;
  peakRssMB?: number;
  wallMs: number;
}

/** Runs a command, streams its stderr, and parses the JSON on its last stdout line; peak RSS from GNU time when present. */
export function runChild<T>(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<ChildResult<T>> {
  const timeFile = path.join(os.tmpdir(), `blip2-bench-time-${process.pid}-${Date.now()}`);
  const useTime = fs.existsSync('/usr/bin/time');
  const [c, a] = useTime ? ['/usr/bin/time', ['-f', '%M', '-o', timeFile, cmd, ...args]] : [cmd, args];
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(c, a, { cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let errTail = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      process.stderr.write(d);
      errTail = (errTail + d.toString()).slice(-2000);
    });
    child.on('close', (code, signal) => {
      const wallMs = performance.now() - started;
      let peakRssMB: number | undefined;
      try {
        peakRssMB = Number(fs.readFileSync(timeFile, 'utf8').trim().split('\n').pop()) / 1024;
        fs.rmSync(timeFile, { force: true });
      } catch {
        // no GNU time
      }
      const line = out.trim().split('\n').pop() ?? '';
      if (code === 0) {
        try {
          resolve({ ok: true, value: JSON.parse(line) as T, peakRssMB, wallMs });
          return;
        } catch {
          // fall through
        }
      }
      const why = signal ? `killed by ${signal}` : code === 137 || /Killed|out of memory/i.test(errTail) ? 'killed (out of memory?)' : `exit ${code}`;
      resolve({ ok: false, error: `${why}: ${errTail.trim().split('\n').slice(-1)[0] ?? ''}`, peakRssMB, wallMs });
    });
  });
}

export const tsx = (script: string, ...args: string[]): [string, string[]] => [process.execPath, ['--import', 'tsx', path.join(ROOT, script), ...args]];

export const WORK = process.env.BLIP2_BENCH_DIR ?? path.join(os.homedir(), '.cache', 'blip2-bench');
// The real model's configuration; BLIP2_BENCH_CONFIG=test/fixtures/tiny-blip2 (with its own BLIP2_BENCH_DIR) makes a dry run.
export const CONFIG = path.resolve(ROOT, process.env.BLIP2_BENCH_CONFIG ?? 'test/fixtures/blip2-opt-2.7b-config');
export const CHECKPOINT = path.join(WORK, 'checkpoint-F32-seed0');

// ---------------------------------------------------------------------------------------------------------------
// Checkpoint and conversions

export const hasCheckpoint = () => ['model.safetensors.index.json', 'model.safetensors'].some((f) => fs.existsSync(path.join(CHECKPOINT, f)));

export async function ensureCheckpoint(): Promise<void> {
  if (hasCheckpoint()) {
    log(`checkpoint: reusing ${CHECKPOINT}`);
    return;
  }
  log(`checkpoint: writing a random float32 checkpoint of ${path.relative(ROOT, CONFIG)} to ${CHECKPOINT} (15 GB for the real model) ...`);
  const r = await runChild(...tsx('server/src/tools/random-checkpoint.ts', '--config', CONFIG, '--out', CHECKPOINT, '--seed', '0', '--dtype', 'F32', '--force'));
  if (!hasCheckpoint()) throw new Error(`writing the checkpoint failed: ${r.error}`);
}

export interface Conversion {
  dir: string;
  seconds: number;
  peakRssMB: number;
  bytesOnDisk: number;
  /** Measured when the conversion was made (an earlier bench run), not in this run. */
  cached: boolean;
}

export async function ensureConverted(p: Precision, quietWaitS: number): Promise<Conversion | undefined> {
  const dir = path.join(WORK, `converted-v${CONVERTER_VERSION}-${p}`);
  const record = `${dir}.conversion.json`;
  if (fs.existsSync(record) && fs.existsSync(path.join(dir, 'blip2-onnx.json'))) {
    return { ...(JSON.parse(fs.readFileSync(record, 'utf8')) as Conversion), dir, cached: true };
  }
  fs.rmSync(dir, { recursive: true, force: true });
  log(`${p}: converting ...`);
  await waitForQuiet(`converting ${p}`, quietWaitS);
  const r = await runChild<{ seconds: number }>(...tsx('test/bench/convert-checkpoint.ts', CHECKPOINT, dir, p));
  if (!r.ok) {
    log(`${p}: conversion failed: ${r.error}`);
    return undefined;
  }
  const conversion: Conversion = { dir, seconds: r.value!.seconds, peakRssMB: r.peakRssMB ?? NaN, bytesOnDisk: folderBytes(dir), cached: false };
  fs.writeFileSync(record, JSON.stringify(conversion, null, 2));
  return conversion;
}

export function folderBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? folderBytes(p) : fs.statSync(p).size;
  }
  return total;
}
