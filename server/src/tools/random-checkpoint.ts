// Writes a seeded random-weight BLIP-2 OPT checkpoint of the size a config.json describes, for measuring
// conversion and inference on real shapes without downloading real weights.
//
//   npx tsx server/src/tools/random-checkpoint.ts --config DIR --out DIR [--seed N] [--dtype F32|F16|BF16]
//       [--shard-size 5GB] [--layout index|size] [--force]
//
// Without --shard-size or --layout, a config folder holding model.safetensors.index.json gets that index's
// shards; --shard-size alone implies --layout size.
import { UserError } from '../engine/errors';
import { parseByteSize, writeRandomCheckpoint, type RandomCheckpointOptions } from '../engine/checkpoint/random-checkpoint';
import type { StoredDtype } from '../engine/checkpoint/safetensors';

const USAGE =
  'Usage: random-checkpoint --config DIR --out DIR [--seed N] [--dtype F32|F16|BF16] [--shard-size 5GB] [--layout index|size] [--force]';

function parseArgs(argv: string[]): RandomCheckpointOptions | undefined {
  const values: Record<string, string> = {};
  let force = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') return undefined;
    if (arg === '--force') {
      force = true;
      continue;
    }
    const m = /^--(config|out|seed|dtype|shard-size|layout)(?:=(.*))?$/.exec(arg);
    if (!m) throw new UserError(`Unknown argument "${arg}".`, USAGE);
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new UserError(`--${m[1]} needs a value.`, USAGE);
    values[m[1]] = value;
  }
  if (!values.config || !values.out) throw new UserError('Both --config and --out are required.', USAGE);
  const seed = Number(values.seed ?? '0');
  const dtype = (values.dtype ?? 'F32').toUpperCase();
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new UserError(`Unknown dtype "${values.dtype}".`, 'Use F32, F16 or BF16.');
  const layout = values.layout ?? (values['shard-size'] !== undefined ? 'size' : undefined);
  if (layout !== undefined && layout !== 'index' && layout !== 'size') throw new UserError(`Unknown layout "${layout}".`, 'Use index or size.');
  return {
    configDir: values.config,
    outDir: values.out,
    seed,
    dtype: dtype as StoredDtype,
    maxShardBytes: values['shard-size'] !== undefined ? parseByteSize(values['shard-size']) : undefined,
    shardLayoutFrom: layout,
    overwrite: force,
  };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (!opts) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const started = Date.now();
  let lastReport = 0;
  const tty = process.stderr.isTTY;
  const result = await writeRandomCheckpoint({
    ...opts,
    onProgress: (p) => {
      const now = Date.now();
      if (now - lastReport < (tty ? 200 : 5000) && p.bytesDone < p.bytesTotal) return;
      lastReport = now;
      const pct = ((100 * p.bytesDone) / p.bytesTotal).toFixed(1);
      const mbps = p.bytesDone / 1e6 / Math.max((now - started) / 1000, 1e-3);
      const line = `${pct}% ${gb(p.bytesDone)}/${gb(p.bytesTotal)} GB, ${mbps.toFixed(0)} MB/s, ${p.file}: ${p.tensor}`;
      process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
    },
  });
  if (tty) process.stderr.write('\n');
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  process.stderr.write(`Wrote ${result.totalParameters} parameters (${gb(result.totalSize)} GB of ${opts.dtype}) in ${result.files.length} file(s) to ${result.outDir} in ${secs} s.\n`);
}

function gb(bytes: number): string {
  return (bytes / 1e9).toFixed(2);
}

main().catch((e: unknown) => {
  const line = e instanceof UserError ? e.line : e instanceof Error ? `${e.name}: ${e.message.split('\n')[0]}` : String(e);
  process.stderr.write(`random-checkpoint: ${line}\n`);
  process.exitCode = 1;
});
