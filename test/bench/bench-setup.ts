// `npm run bench:setup`: what the first run costs, measured. A loopback Hub (test/helpers/fake-hub.ts: resolve
// answers 302 to signed CDN addresses on another origin that expire, Range requests, ETags, the tree API's SHA-256)
// serves the full-size random checkpoint of the real configuration at a set bandwidth, and the built CLI sets the
// model up from it as a user's first caption does (set-up, load, one token), each in a fresh store and cache:
//
// 1. per precision: streamed (converted as it arrives) and, for comparison, the download-then-convert of
//    BLIP2_BENCH_BASELINE_CLI (a build of the code before streaming; this tree's --keep-source otherwise), at the
//    same bandwidth: bytes downloaded, peak and final disk of the store plus the Hugging Face cache (sampled every
//    250 ms), peak RSS (GNU time), wall time;
// 2. a repository of conversions (the streamed int4 conversion served as `int4/`): downloaded with no conversion;
// 3. the streamed int4 set-up killed (SIGKILL) at three random points of its download and restarted: the bytes it
//    downloaded in all, and its conversion compared byte for byte with the uninterrupted one and with a conversion
//    of the same checkpoint from its folder.
//
// Environment: BLIP2_BENCH_DIR (~/.cache/blip2-bench), BLIP2_BENCH_BANDWIDTH_MBPS (100: megabytes per second),
// BLIP2_BENCH_SETUP_PRECISIONS ("int4 int8"), BLIP2_BENCH_BASELINE_CLI, BLIP2_BENCH_SEED (kill points),
// BLIP2_BENCH_QUIET_WAIT_S (600), BLIP2_BENCH_OUT (the JSON file).
import { createHash } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MANIFEST_FILE, readManifest, type ConvertedManifest } from '../../server/src/engine/convert/manifest';
import { FakeHub, readFolderFiles, type DiskFile, type FakeFile } from '../helpers/fake-hub';
import { featureSummary, log, loadavg, machine, resultFileName, ROOT, runChild, tsx, waitForQuiet } from './bench-lib';

const WORK = process.env.BLIP2_BENCH_DIR ?? path.join(os.homedir(), '.cache', 'blip2-bench');
// The real model's configuration; BLIP2_BENCH_CONFIG=test/fixtures/tiny-blip2 (with its own BLIP2_BENCH_DIR) makes a dry run.
const CONFIG = path.resolve(ROOT, process.env.BLIP2_BENCH_CONFIG ?? 'test/fixtures/blip2-opt-2.7b-config');
const CHECKPOINT = path.join(WORK, 'checkpoint-F32-seed0');
const BANDWIDTH = Number(process.env.BLIP2_BENCH_BANDWIDTH_MBPS ?? 100) * 1e6;
const PRECISIONS = (process.env.BLIP2_BENCH_SETUP_PRECISIONS ?? 'int4 int8').split(/\s+/).filter(Boolean);
const BASELINE_CLI = process.env.BLIP2_BENCH_BASELINE_CLI;
const SEED = Number(process.env.BLIP2_BENCH_SEED ?? Date.now() % 100000);
const QUIET_WAIT_S = Number(process.env.BLIP2_BENCH_QUIET_WAIT_S ?? 600);
const CLI = path.join(ROOT, 'dist/cli.js');
const IMAGE = path.join(ROOT, 'test/fixtures/tiny-blip2/reference/images/cat.png');
const REPO = 'bench/blip2-opt-2.7b';
const CONVERTED_REPO = 'bench/blip2-opt-2.7b-onnx';
/** Signed addresses that expire during a set-up, so the bench goes through resolving again as users' long downloads do. */
const SIGNED_URL_TTL_MS = 120_000;

interface SetUpRecord {
  source: 'hub-float32' | 'converted-repo';
  precision: string;
  source_bytes: number;
  bytes_downloaded: number;
  peak_disk_bytes: number;
  final_disk_bytes: number;
  peak_rss_mb: number;
  wall_ms: number;
  baseline_wall_ms: number;
  baseline?: { bytes_downloaded: number; peak_disk_bytes: number; final_disk_bytes: number; peak_rss_mb: number; cli: string };
  /** Requests to the Hub's resolve endpoint and range requests to the CDN, and the CPU share of the set-up. */
  resolves: number;
  ranges: number;
  cpu_percent: number;
  load_average_at_start: number[];
}

/** Bytes on disk under `dir`, links as links. */
function diskBytes(dir: string): number {
  let total = 0;
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += diskBytes(p);
    else {
      try {
        total += fs.lstatSync(p).blocks * 512;
      } catch {
        // gone meanwhile
      }
    }
  }
  return total;
}

/** The shards' SHA-256, computed once per checkpoint file and kept beside it (hashing 15 GB takes a while). */
function shardFiles(): Record<string, FakeFile> {
  const cacheFile = `${CHECKPOINT}.sha256.json`;
  const cached = fs.existsSync(cacheFile) ? (JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as Record<string, { size: number; mtimeMs: number; sha256: string }>) : {};
  const files: Record<string, FakeFile> = {};
  for (const [name, bytes] of Object.entries(readFolderFiles(CHECKPOINT, (n) => !n.endsWith('.safetensors')))) files[name] = bytes;
  for (const name of fs.readdirSync(CHECKPOINT).filter((n) => n.endsWith('.safetensors'))) {
    const file = path.join(CHECKPOINT, name);
    const st = fs.statSync(file);
    let entry = cached[name];
    if (!entry || entry.size !== st.size || entry.mtimeMs !== st.mtimeMs) {
      log(`hashing ${name} ...`);
      const hash = createHash('sha256');
      const fd = fs.openSync(file, 'r');
      const buf = Buffer.allocUnsafe(16 << 20);
      for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0; ) hash.update(buf.subarray(0, n));
      fs.closeSync(fd);
      entry = cached[name] = { size: st.size, mtimeMs: st.mtimeMs, sha256: hash.digest('hex') };
    }
    files[name] = { path: file, size: entry.size, sha256: entry.sha256 } satisfies DiskFile;
  }
  fs.writeFileSync(cacheFile, JSON.stringify(cached));
  return files;
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  wallMs: number;
  peakRssMB: number;
  cpuPercent: number;
  peakDisk: number;
  stderr: string;
}

/** Runs the CLI under GNU time while sampling the disk its store and cache use; `kill` may end it early. */
function runSetUp(cli: string, args: string[], dirs: { store: string; hf: string }, extraEnv: NodeJS.ProcessEnv, kill?: (child: ChildProcess) => void): Promise<Run> {
  const timeFile = path.join(os.tmpdir(), `blip2-bench-setup-time-${process.pid}-${Date.now()}`);
  const started = performance.now();
  let peakDisk = 0;
  const sample = () => (peakDisk = Math.max(peakDisk, diskBytes(dirs.store) + diskBytes(dirs.hf)));
  const timer = setInterval(sample, 250);
  return new Promise((resolve) => {
    const child = spawn('/usr/bin/time', ['-f', '%M %P', '-o', timeFile, process.execPath, cli, ...args, '--store', dirs.store], {
      cwd: ROOT,
      env: { ...process.env, HF_HOME: dirs.hf, HF_HUB_OFFLINE: '', BLIP2_DEBUG: '', ...extraEnv },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      process.stderr.write(d);
    });
    kill?.(child);
    child.on('close', (code, signal) => {
      clearInterval(timer);
      sample();
      let peakRssMB = 0;
      let cpuPercent = 0;
      try {
        const [rss, cpu] = fs.readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ');
        peakRssMB = Number(rss) / 1024;
        cpuPercent = Number(cpu.replace('%', ''));
      } catch {
        // killed before time wrote
      }
      fs.rmSync(timeFile, { force: true });
      resolve({ code, signal, wallMs: performance.now() - started, peakRssMB, cpuPercent, peakDisk, stderr });
    });
  });
}

function freshDirs(name: string): { store: string; hf: string; root: string } {
  const root = path.join(WORK, 'setup-runs', name);
  fs.rmSync(root, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  return { root, store: path.join(root, 'store'), hf: path.join(root, 'hf') };
}

/** The converted folder a set-up of REPO at `precision` wrote. */
function convertedDir(store: string, repo: string, commit: string, precision: string): string {
  return path.join(store, 'hub', repo.replace('/', '--'), commit, precision);
}

/** Every file of a conversion by name (dot files, which record load-time stamps, left out); the manifest without what names its source or time. */
function conversionFiles(dir: string): Map<string, Buffer | string> {
  const out = new Map<string, Buffer | string>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const name = rel ? `${rel}/${e.name}` : e.name;
      if (e.name.startsWith('.') || name === 'optimized') continue;
      if (e.isDirectory()) walk(name);
      else if (name === MANIFEST_FILE) {
        const { createdAt: _c, source, ...rest } = readManifest(dir);
        out.set(name, JSON.stringify({ ...rest, files: source.files }));
      } else out.set(name, createHash('sha256').update(fs.readFileSync(path.join(dir, name))).digest('hex'));
    }
  };
  walk('');
  return out;
}

function sameConversion(a: string, b: string): { identical: boolean; differences: string[] } {
  const x = conversionFiles(a);
  const y = conversionFiles(b);
  const names = new Set([...x.keys(), ...y.keys()]);
  const differences = [...names].filter((n) => x.get(n) !== y.get(n) && String(x.get(n)) !== String(y.get(n)));
  return { identical: differences.length === 0, differences };
}

/** A seeded generator (mulberry32), so a run's kill points can be repeated. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function main(): Promise<void> {
  const started = new Date();
  const m = machine(2);
  log(`bench:setup on ${m.cpu} (${m.cores} cores; ${featureSummary(m)}), ${BANDWIDTH / 1e6} MB/s, seed ${SEED}`);
  if (!fs.existsSync(CLI)) throw new Error('dist/cli.js is missing: run npm run build first');
  const hasCheckpoint = () => ['model.safetensors.index.json', 'model.safetensors'].some((f) => fs.existsSync(path.join(CHECKPOINT, f)));
  if (!hasCheckpoint()) {
    log(`writing the random checkpoint to ${CHECKPOINT} ...`);
    const r = await runChild(...tsx('server/src/tools/random-checkpoint.ts', '--config', CONFIG, '--out', CHECKPOINT, '--seed', '0', '--dtype', 'F32', '--force'));
    if (!hasCheckpoint()) throw new Error(`writing the checkpoint failed: ${r.error}`);
  }
  const files = shardFiles();
  const sourceBytes = Object.entries(files).filter(([n]) => n.endsWith('.safetensors')).reduce((s, [, f]) => s + (Buffer.isBuffer(f) ? f.length : f.size), 0);
  const hub = await FakeHub.start([{ id: REPO, files, cardData: { license: 'mit' } }]);
  hub.bytesPerSecond = BANDWIDTH;
  hub.signedUrlTtlMs = SIGNED_URL_TTL_MS;
  const env = { HF_ENDPOINT: hub.url };
  const commit = hub.commitOf(REPO);
  const setups: SetUpRecord[] = [];
  const requestsSince = (from: number) => {
    const l = hub.log.slice(from);
    return { bytes: l.reduce((s, r) => s + r.bytes, 0), resolves: l.filter((r) => r.method === 'HEAD' && r.url.includes('/resolve/')).length, ranges: l.filter((r) => r.host === 'cdn').length };
  };
  const streamedDirs: Record<string, string> = {};

  try {
    for (const precision of PRECISIONS) {
      const caption = ['caption', IMAGE, '--model', REPO, '--precision', precision, '--max-new-tokens', '1'];
      const quiet = await waitForQuiet(`the streamed ${precision} set-up`, QUIET_WAIT_S);
      const dirs = freshDirs(`stream-${precision}`);
      const from = hub.log.length;
      log(`\n${precision}: streamed set-up ...`);
      const run = await runSetUp(CLI, caption, dirs, env);
      if (run.code !== 0) throw new Error(`the streamed ${precision} set-up failed: ${run.stderr.slice(-500)}`);
      const traffic = requestsSince(from);
      const finalDisk = diskBytes(dirs.store) + diskBytes(dirs.hf);
      streamedDirs[precision] = convertedDir(dirs.store, REPO, commit, precision);

      await waitForQuiet(`the download-then-convert ${precision} set-up`, QUIET_WAIT_S);
      const baseDirs = freshDirs(`baseline-${precision}`);
      const baseFrom = hub.log.length;
      log(`${precision}: download-then-convert set-up (${BASELINE_CLI ?? 'this tree, --keep-source'}) ...`);
      const base = await runSetUp(BASELINE_CLI ?? CLI, BASELINE_CLI ? caption : [...caption, '--keep-source'], baseDirs, env);
      if (base.code !== 0) throw new Error(`the baseline ${precision} set-up failed: ${base.stderr.slice(-500)}`);
      const baseTraffic = requestsSince(baseFrom);
      const baseFinal = diskBytes(baseDirs.store) + diskBytes(baseDirs.hf);
      fs.rmSync(baseDirs.root, { recursive: true, force: true });

      setups.push({
        source: 'hub-float32',
        precision,
        source_bytes: sourceBytes,
        bytes_downloaded: traffic.bytes,
        peak_disk_bytes: run.peakDisk,
        final_disk_bytes: finalDisk,
        peak_rss_mb: Math.round(run.peakRssMB),
        wall_ms: Math.round(run.wallMs),
        baseline_wall_ms: Math.round(base.wallMs),
        baseline: { bytes_downloaded: baseTraffic.bytes, peak_disk_bytes: base.peakDisk, final_disk_bytes: baseFinal, peak_rss_mb: Math.round(base.peakRssMB), cli: BASELINE_CLI ?? 'this tree --keep-source' },
        resolves: traffic.resolves,
        ranges: traffic.ranges,
        cpu_percent: run.cpuPercent,
        load_average_at_start: quiet.loadavg,
      });
      log(JSON.stringify(setups.at(-1)));
    }

    // A repository of conversions: the streamed int4 conversion, served as its int4/ folder.
    const precision = PRECISIONS.includes('int4') ? 'int4' : PRECISIONS[0];
    const published = streamedDirs[precision];
    const manifest: ConvertedManifest = readManifest(published);
    const repoFiles: Record<string, FakeFile> = { [`${precision}/${MANIFEST_FILE}`]: fs.readFileSync(path.join(published, MANIFEST_FILE)) };
    for (const f of manifest.files!) repoFiles[`${precision}/${f.name}`] = { path: path.join(published, ...f.name.split('/')), size: f.bytes, sha256: f.sha256 };
    hub.addRepo({ id: CONVERTED_REPO, files: repoFiles });
    const repoBytes = Object.values(repoFiles).reduce((s, f) => s + (Buffer.isBuffer(f) ? f.length : f.size), 0);
    const quiet = await waitForQuiet('the converted repository set-up', QUIET_WAIT_S);
    const dirs = freshDirs(`converted-${precision}`);
    const from = hub.log.length;
    log(`\n${precision}: converted repository set-up ...`);
    const run = await runSetUp(CLI, ['caption', IMAGE, '--model', CONVERTED_REPO, '--precision', precision, '--max-new-tokens', '1'], dirs, env);
    if (run.code !== 0) throw new Error(`the converted repository set-up failed: ${run.stderr.slice(-500)}`);
    const traffic = requestsSince(from);
    const stream = setups.find((s) => s.precision === precision)!;
    setups.push({
      source: 'converted-repo',
      precision,
      source_bytes: repoBytes,
      bytes_downloaded: traffic.bytes,
      peak_disk_bytes: run.peakDisk,
      final_disk_bytes: diskBytes(dirs.store) + diskBytes(dirs.hf),
      peak_rss_mb: Math.round(run.peakRssMB),
      wall_ms: Math.round(run.wallMs),
      baseline_wall_ms: stream.baseline_wall_ms,
      resolves: traffic.resolves,
      ranges: traffic.ranges,
      cpu_percent: run.cpuPercent,
      load_average_at_start: quiet.loadavg,
    });
    log(JSON.stringify(setups.at(-1)));
    fs.rmSync(dirs.root, { recursive: true, force: true });

    // Killed three times at random points of the download, restarted each time.
    const rand = random(SEED);
    const points = [rand(), rand(), rand()].map((r) => 0.05 + 0.9 * r).sort((a, b) => a - b);
    const killDirs = freshDirs('killed');
    const killFrom = hub.log.length;
    const convert = ['convert', '--model', REPO, '--precision', precision];
    log(`\nkill test: SIGKILL at ${points.map((p) => `${(p * 100).toFixed(1)}%`).join(', ')} of the source's bytes`);
    const kills: { at_fraction: number; downloaded_before_kill: number }[] = [];
    for (const point of points) {
      await runSetUp(CLI, convert, killDirs, env, (child) => {
        const timer = setInterval(() => {
          const sent = requestsSince(killFrom).bytes;
          if (sent >= point * sourceBytes) {
            clearInterval(timer);
            kills.push({ at_fraction: point, downloaded_before_kill: sent });
            child.kill('SIGKILL');
          }
        }, 20);
        child.on('close', () => clearInterval(timer));
      });
    }
    const last = await runSetUp(CLI, convert, killDirs, env);
    if (last.code !== 0) throw new Error(`the resumed set-up failed: ${last.stderr.slice(-500)}`);
    const killedTotal = requestsSince(killFrom).bytes;
    const killedDir = convertedDir(killDirs.store, REPO, commit, precision);
    const localDirs = freshDirs('local');
    const local = await runSetUp(CLI, ['convert', '--model', CHECKPOINT, '--precision', precision, '--out', path.join(localDirs.root, precision)], localDirs, {});
    if (local.code !== 0) throw new Error(`the conversion from the folder failed: ${local.stderr.slice(-500)}`);
    const killTest = {
      precision,
      seed: SEED,
      kills,
      bytes_downloaded_in_all: killedTotal,
      ratio_to_source: killedTotal / sourceBytes,
      identical_to_uninterrupted: sameConversion(killedDir, streamedDirs[precision]),
      identical_to_local_folder: sameConversion(killedDir, path.join(localDirs.root, precision)),
    };
    log(JSON.stringify(killTest));

    const result = {
      machine: { ...m, loadavg_at_end: loadavg() },
      settings: { bandwidth_bytes_per_s: BANDWIDTH, signed_url_ttl_ms: SIGNED_URL_TTL_MS, checkpoint: path.relative(ROOT, CONFIG), started: started.toISOString() },
      setups,
      kill_test: killTest,
    };
    const out = process.env.BLIP2_BENCH_OUT ?? path.join(ROOT, 'bench/results', resultFileName(m, started, 'setup'));
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
    log(`\nwrote ${path.relative(ROOT, out)}`);
  } finally {
    await hub.close();
  }
}

main().catch((e) => {
  log(String(e?.stack ?? e));
  process.exitCode = 1;
});
