// Converts one checkpoint, for test/bench/bench.ts to run under /usr/bin/time (its conversion time and peak RSS).
//
//   node --import tsx test/bench/convert-checkpoint.ts CHECKPOINT_DIR OUT_DIR [PRECISION] [BLOCK_SIZE]
//
// Besides converting, it samples its own resident set size at every progress event and reports, per phase,
// the peak and the tensor being produced when it was reached, so a peak over budget can be traced to a step.
// The last line on stdout is a JSON summary.
import { convertCheckpoint } from '../../server/src/engine/convert/convert';
import { parsePrecision, type Precision } from '../../server/src/engine/convert/precision';
import { UserError } from '../../server/src/engine/errors';

interface Peak {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  detail: string;
  seconds: number;
}

async function main(): Promise<void> {
  const [checkpointDir, outDir, precisionArg = 'int4', blockArg] = process.argv.slice(2);
  if (!checkpointDir || !outDir) throw new UserError('Usage: convert-checkpoint.ts CHECKPOINT_DIR OUT_DIR [PRECISION]');
  const precision = parsePrecision(precisionArg);
  if (precision === 'auto') throw new UserError('Name a precision: fp32, fp16, int8 or int4.');
  const started = Date.now();
  const peaks = new Map<string, Peak>();
  const phaseStart = new Map<string, number>();
  let lastLine = 0;
  const sample = (phase: string, detail: string) => {
    const m = process.memoryUsage();
    const seconds = (Date.now() - started) / 1000;
    if (!phaseStart.has(phase)) phaseStart.set(phase, seconds);
    const p = peaks.get(phase);
    if (!p || m.rss > p.rss) peaks.set(phase, { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, detail, seconds });
    return m;
  };
  // Progress events come between tensors; the sampler also catches awaits inside one.
  let currentPhase = 'open';
  let currentDetail = '';
  const timer = setInterval(() => sample(currentPhase, `${currentDetail} (timer)`), 250);
  try {
    await convertCheckpoint({
      blockSize: blockArg ? Number(blockArg) : undefined,
      checkpointDir,
      outDir,
      precision: precision as Precision,
      onProgress: (p) => {
        currentPhase = p.phase;
        currentDetail = p.detail ?? '';
        const m = sample(p.phase, currentDetail);
        const now = Date.now();
        if (now - lastLine > 10_000 || p.done === p.total) {
          lastLine = now;
          const done = `${(p.done / 1e9).toFixed(2)}/${(p.total / 1e9).toFixed(2)} GB`;
          process.stderr.write(`[${((now - started) / 1000).toFixed(0)} s] ${p.phase} ${done} ${currentDetail} rss ${mb(m.rss)} MiB\n`);
        }
      },
    });
  } finally {
    clearInterval(timer);
  }
  sample('done', '');
  const phases = [...peaks.entries()].map(([phase, p]) => ({
    phase,
    startedAtS: Math.round((phaseStart.get(phase) ?? 0) * 10) / 10,
    peakRssMB: mb(p.rss),
    heapUsedMB: mb(p.heapUsed),
    externalMB: mb(p.external),
    arrayBuffersMB: mb(p.arrayBuffers),
    atSeconds: Math.round(p.seconds * 10) / 10,
    at: p.detail,
  }));
  process.stderr.write('Peak resident memory by phase (sampled in-process; /usr/bin/time has the true peak):\n');
  for (const p of phases) {
    process.stderr.write(
      `  ${p.phase.padEnd(22)} rss ${String(p.peakRssMB).padStart(6)} MiB  heap ${String(p.heapUsedMB).padStart(5)}  external ${String(p.externalMB).padStart(6)}  at ${p.atSeconds} s: ${p.at}\n`,
    );
  }
  process.stdout.write(JSON.stringify({ seconds: (Date.now() - started) / 1000, phases }) + '\n');
}

function mb(bytes: number): number {
  return Math.round(bytes / 2 ** 20);
}

main().catch((e: unknown) => {
  const line = e instanceof UserError ? e.line : e instanceof Error ? `${e.name}: ${e.message.split('\n')[0]}` : String(e);
  process.stderr.write(`convert-checkpoint: ${line}\n`);
  process.exitCode = 1;
});
