import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { readManifest } from '../engine/convert/manifest';
import { isCancelled, UserError } from '../engine/errors';
import { ensureConverted, openModel, verifyModel, type OpenedModel } from '../engine/open-model';
import type { EncodedImage, GenerationSettings, ImageInput } from '../engine/pipeline';
import { checkImageFile, readImageFile, type ImageFileLimits } from '../engine/preprocess/image-file';
import { captionPrompt, fitChatPrompt, promptBudget, questionPrompt, type ChatTurn } from '../engine/preprocess/prompts';
import { formatBytes } from '../engine/units';
import { DEFAULT_MAX_BATCH } from '../inference/types';
import { parseCli, UsageError, USAGE, type CliArgs } from './args';
import { runCheck } from './check';
import { runFix } from './fix';
import { runServe } from './serve';
import { viaServer } from './via-server';
import { runPublish } from './publish';
import { ProgressReporter } from './progress';

// Images per batch: one left-padded generate() call, as the language server batches them.
const BATCH = DEFAULT_MAX_BATCH;

async function main(argv: string[]): Promise<number> {
  const args = parseCli(argv);
  if (args.command === 'help') {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  const progress = new ProgressReporter();
  if (args.command === 'check') return runCheck(args);
  if (args.command === 'fix') return runFix(args, abort.signal);
  if (args.command === 'publish') return runPublish(args, abort.signal);
  if (args.command === 'serve') return runServe(args, abort.signal);
  if (args.server) return viaServer(args, abort.signal);
  try {
    if (args.command === 'convert') return await convert(args, progress, abort.signal);
    if (args.command === 'verify') return await verify(args, progress, abort.signal);
    // The images are checked before the model is set up: a mistyped path must not wait for a download.
    const images = args.command === 'ask' || args.command === 'chat' ? [args.positionals[0]] : args.positionals;
    for (const image of images) await checkImageFile(image, imageLimits(args));
    const start = performance.now();
    const opened = await openModel({ ...args.model, blockSize: args.blockSize, signal: abort.signal, onProgress: (p) => progress.update(p) });
    progress.stop();
    if (opened.fallbackReason) process.stderr.write(`blip2: running on the CPU because ${opened.fallbackReason}.\n`);
    for (const note of opened.loadNotes) process.stderr.write(`blip2: ${note}\n`);
    try {
      const loadMs = performance.now() - start;
      if (args.command === 'chat') return await chat(args, opened, abort.signal);
      const prompts = args.command === 'ask'
        ? [questionPrompt(args.positionals[1])]
        : [captionPrompt(args.prompt)];
      for (let i = 0; i < images.length; i += BATCH) {
        await runBatch(args, opened, images.slice(i, i + BATCH), prompts[0], i === 0 ? loadMs : 0, abort.signal);
      }
      return 0;
    } finally {
      await opened.pipeline.dispose();
    }
  } finally {
    progress.stop();
  }
}

async function runBatch(args: CliArgs, opened: OpenedModel, images: string[], prompt: string, loadMs: number, signal: AbortSignal): Promise<void> {
  const t0 = performance.now();
  const encoded = await opened.pipeline.encodeImages(await Promise.all(images.map((image) => readImage(args, image))), signal);
  const { answers, timings } = await opened.pipeline.generate(
    encoded.map((image) => ({ image, prompt })),
    args.generation,
    { signal },
  );
  const total = performance.now() - t0;
  answers.forEach((a, i) => {
    if (args.json) {
      const record = {
        image: images[i],
        text: a.text,
        token_ids: a.tokenIds,
        ...(a.alternatives.length > 0 && { alternatives: a.alternatives.map((x) => ({ text: x.text, token_ids: x.tokenIds })) }),
        model: opened.source,
        precision: opened.precision,
        device: opened.device,
        timings_ms: round({
          load: loadMs,
          preprocess: encoded[i].preprocessMs,
          vision: encoded[i].visionMs,
          prefill: timings.prefillMs,
          decode: timings.decodeMs,
          total: loadMs + total,
        }),
      };
      process.stdout.write(JSON.stringify(record) + '\n');
    } else {
      const lines = [a.text, ...a.alternatives.map((x) => `  alternative: ${x.text}`)];
      process.stdout.write((args.command === 'caption' && args.positionals.length > 1 ? `${images[i]}: ` : '') + lines.join('\n') + '\n');
    }
  });
}

async function chat(args: CliArgs, opened: OpenedModel, signal: AbortSignal): Promise<number> {
  const image = args.positionals[0];
  let encoded: EncodedImage;
  [encoded] = await opened.pipeline.encodeImages([await readImage(args, image)], signal);
  const history: ChatTurn[] = [];
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY === true });
  process.stderr.write(`Chatting about ${path.basename(image)}. Ask a question; an empty line or Ctrl-D ends.\n`);
  const settings: GenerationSettings = args.generation;
  for await (const line of rl) {
    const question = line.trim();
    if (!question) break;
    let printed = '';
    // The oldest turns go first when the chat outgrows the model's context.
    const m = opened.pipeline.model;
    const budget = promptBudget({ maxPositions: m.config.text.maxPositionEmbeddings, numQueryTokens: m.config.numQueryTokens, maxNewTokens: settings.maxNewTokens });
    const prompt = fitChatPrompt(history, question, (text) => m.tokenizer.encode(text).length, budget);
    const { answers } = await opened.pipeline.generate([{ image: encoded, prompt }], settings, {
      signal,
      onToken: args.json
        ? undefined
        : (_row, _token, text) => {
            // Stream what is new; decoding whole prefixes keeps multi-byte characters intact.
            if (text.startsWith(printed)) process.stdout.write(text.slice(printed.length));
            printed = text;
          },
    });
    const answer = answers[0];
    if (args.json) process.stdout.write(JSON.stringify({ image, question, text: answer.text, token_ids: answer.tokenIds }) + '\n');
    else process.stdout.write(answer.text.slice(printed.length) + '\n');
    history.push({ question, answer: answer.text });
  }
  rl.close();
  return 0;
}

async function convert(args: CliArgs, progress: ProgressReporter, signal: AbortSignal): Promise<number> {
  const outDir = args.out ? path.resolve(args.out) : undefined;
  // A converted model is published by renaming over its target, which must not be a folder of the user's.
  if (outDir && fs.existsSync(outDir) && fs.readdirSync(outDir).length > 0) {
    throw new UserError(`${outDir} already exists and is not empty.`, 'Choose another --out folder or delete it first.');
  }
  const converted = await ensureConverted({ ...args.model, blockSize: args.blockSize, outDir, signal, onProgress: (p) => progress.update(p) });
  progress.stop();
  const manifest = readManifest(converted.dir);
  const bytes = Object.values(manifest.sizes).reduce((a, b) => a + b, 0);
  if (args.json) process.stdout.write(JSON.stringify({ dir: converted.dir, precision: manifest.precision, bytes }) + '\n');
  else process.stdout.write(`${converted.dir}\n`);
  return 0;
}

/** An image file the command line names: only a regular file within --max-image-mb, read once. */
function imageLimits(args: CliArgs): ImageFileLimits {
  return { maxBytes: args.maxImageBytes, raiseHint: 'Pass --max-image-mb with a larger limit to caption it.' };
}

async function readImage(args: CliArgs, file: string): Promise<ImageInput> {
  return { bytes: await readImageFile(file, imageLimits(args)), name: file };
}

/** `blip2 verify`: exit 0 when every file matches its checksums (or was repaired), 1 when something is damaged. */
async function verify(args: CliArgs, progress: ProgressReporter, signal: AbortSignal): Promise<number> {
  const report = await verifyModel({ ...args.model, signal, repair: args.repair, onProgress: (p) => progress.update(p) });
  progress.stop();
  const intact = report.problems.length === 0;
  if (args.json) {
    process.stdout.write(JSON.stringify({ dir: report.dir, files: report.files, bytes: report.bytes, intact, repaired: report.repaired, problems: report.problems }) + '\n');
  } else if (intact && report.files === 0) {
    process.stdout.write(`${report.dir}: the sizes match; this conversion predates recorded checksums (convert it again to have them).\n`);
  } else if (intact) {
    process.stdout.write(`${report.dir}: all ${report.files} files intact (${formatBytes(report.bytes)} checked).\n`);
  } else {
    for (const p of report.problems) process.stdout.write(`${report.dir}: ${p.name} ${p.problem}.\n`);
    process.stdout.write(report.repaired ? `${report.dir}: converted again.\n` : 'Run with --repair to convert it again.\n');
  }
  return intact || report.repaired ? 0 : 1;
}

function round(t: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, Math.round(v * 10) / 10]));
}

/**
 * Ends the process once stdout and stderr have taken everything written to them. A pipe takes 64 KB at once and
 * the rest waits in the stream, which `process.exit` would drop: `check --format sarif | tee` got 64 KB of 690.
 */
function exitWhenFlushed(code: number): void {
  let waiting = 2;
  const flushed = (): void => {
    if (--waiting === 0) process.exit(code);
  };
  for (const stream of [process.stdout, process.stderr]) {
    // The callback runs once everything written before it is out (or the reader went away).
    if (stream.writableLength === 0) flushed();
    else stream.write('', () => flushed());
  }
}

// A reader that stops early (`| head`) closes the pipe (EPIPE): what is left is not wanted, and there is nowhere
// left to say anything, so the run ends with its own exit status instead of a stack trace.
for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);

main(process.argv.slice(2)).then(
  (code) => exitWhenFlushed(code),
  (e: unknown) => {
    if (e instanceof UserError) {
      process.stderr.write(`blip2: ${e.line}\n`);
      return exitWhenFlushed(e instanceof UsageError ? 2 : 1);
    }
    if (isCancelled(e)) {
      process.stderr.write('blip2: cancelled.\n');
      return exitWhenFlushed(130);
    }
    process.stderr.write(`blip2: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.BLIP2_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    else process.stderr.write('Set BLIP2_DEBUG=1 for details, and please report it.\n');
    exitWhenFlushed(70);
  },
);
