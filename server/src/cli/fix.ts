import * as fs from 'node:fs';
import { pathToFileURL } from 'node:url';
import { SingleBar } from 'cli-progress';
import { createTwoFilesPatch, FILE_HEADERS_ONLY } from 'diff';
import { CancellationTokenSource, type CancellationToken } from 'vscode-languageserver-protocol';
import { isCancelled, UserError } from '../engine/errors';
import { altEditsForDocument, applyEdits } from '../features/alt-text/alt-edit';
import { captionImagesForAltText, needsGeneratedAlt, type AltTextCaptions, type AltTextFile } from '../features/alt-text/generate-alt-text';
import { isNoModel } from '../features/inference-failure';
import { defaultCacheDir } from '../inference/result-cache';
import { createInferenceService } from '../inference/service';
import type { InferenceService } from '../inference/types';
import type { CliArgs } from './args';
import { ProjectSettings } from './project-settings';
import { findSourceFiles, type SourceFile } from './source-files';
import { replaceIfUnchanged } from './write-file';

/**
 * `blip2 fix`: captions every image `check` flags (except for length alone), once per distinct image, and writes
 * the captions into the files, each file atomically and only if nobody changed it meanwhile; `--dry-run` prints
 * the unified diff instead. Captions are cached by image content, so a second run is instant.
 */
export async function runFix(args: CliArgs, signal: AbortSignal, cwd = process.cwd()): Promise<number> {
  const settings = new ProjectSettings(cwd, { value: commandLineSettings(args), source: 'the command line' });
  const sources = findSourceFiles(args.positionals, cwd);
  const files = readFiles(sources);
  const serverWide = settings.forFolder(cwd);
  const inference = createInferenceService({
    settings: serverWide,
    cacheDir: defaultCacheDir(serverWide.modelStore),
    maxBatch: args.maxBatch,
    log: (line) => (process.env.BLIP2_DEBUG ? process.stderr.write(`${line}\n`) : undefined),
  });
  const cancel = new CancellationTokenSource();
  signal.addEventListener('abort', () => cancel.cancel(), { once: true });
  try {
    const result = await captionAll(files, inference, settings, cwd, cancel.token);
    return writeAll(files, result, settings, args.dryRun);
  } finally {
    await inference.dispose();
  }
}

interface ReadFile extends AltTextFile {
  source: SourceFile;
}

function readFiles(sources: readonly SourceFile[]): ReadFile[] {
  const files: ReadFile[] = [];
  for (const source of sources) {
    try {
      files.push({ source, uri: pathToFileURL(source.path).href, languageId: source.languageId, text: fs.readFileSync(source.path, 'utf8'), version: null });
    } catch (e) {
      process.stderr.write(`blip2: ${source.display} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); skipped.\n`);
    }
  }
  return files;
}

/** The generation and model settings the command line gives (only those given), as a settings layer. */
function commandLineSettings(args: CliArgs): Record<string, unknown> {
  const has = (name: string) => args.given.has(name);
  const g = args.generation;
  return {
    ...(has('model') && { model: args.model.model }),
    ...(has('precision') && { precision: args.model.precision }),
    ...(has('device') && { device: args.model.device }),
    ...(has('threads') && { threads: args.model.threads }),
    ...(has('store') && { modelStore: args.model.store }),
    ...(has('offline') && { offline: args.model.offline }),
    ...(has('keep-source') && { keepSource: args.model.keepSource }),
    ...(args.server && { server: { url: args.server } }),
    generation: {
      ...(has('max-new-tokens') && { maxNewTokens: g.maxNewTokens }),
      ...(has('min-new-tokens') && { minNewTokens: g.minNewTokens }),
      ...(has('num-beams') && { numBeams: g.numBeams }),
      ...(has('repetition-penalty') && { repetitionPenalty: g.repetitionPenalty }),
      ...(has('no-repeat-ngram-size') && { noRepeatNgramSize: g.noRepeatNgramSize }),
      ...(has('prompt') && { captionPrompt: args.prompt }),
    },
  };
}

/**
 * The captions, downloading and converting the model first only when one is needed and missing: images whose
 * captions are cached never load it.
 */
async function captionAll(files: readonly ReadFile[], inference: InferenceService, settings: ProjectSettings, cwd: string, token: CancellationToken): Promise<AltTextCaptions> {
  const progress = new CaptionProgress();
  const options = {
    workspaceFolders: [pathToFileURL(cwd).href],
    settingsFor: async (uri: string) => settings.forFile(files.find((f) => f.uri === uri)!.source.path),
    onProgress: (done: number, total: number) => progress.update(done, total),
    priority: 'interactive' as const,
  };
  try {
    try {
      return await captionImagesForAltText(files, inference, options, token);
    } catch (e) {
      if (!isNoModel(e, inference) || isCancelled(e)) throw e;
      progress.stop();
      let said = '';
      const status = await inference.setUp(undefined, {
        report: (message) => {
          if (message !== said) process.stderr.write(`blip2: ${(said = message)}\n`);
        },
      }, token);
      if (status.state !== 'ready' && status.state !== 'busy') throw new UserError(`The model could not be set up: ${status.message ?? status.state}`);
      return await captionImagesForAltText(files, inference, options, token);
    }
  } finally {
    progress.stop();
  }
}

function writeAll(files: readonly ReadFile[], result: AltTextCaptions, settings: ProjectSettings, dryRun: boolean): number {
  let images = 0;
  let written = 0;
  let unwritten = 0;
  for (const failure of result.failures) {
    const file = files.find((f) => f.uri === failure.uri);
    process.stderr.write(`blip2: ${file?.source.display ?? failure.uri}: ${failure.image}: ${failure.reason}\n`);
  }
  for (const file of files) {
    const captions = result.captions.get(file.uri);
    if (!captions) continue;
    const altText = settings.forFile(file.source.path).altText;
    const edits = altEditsForDocument(file.text, file.languageId, (image) => captions.get(image.url), { settings: altText, include: (image) => needsGeneratedAlt(image, altText) });
    if (edits.length === 0) continue;
    const text = applyEdits(file.text, edits);
    if (dryRun) {
      process.stdout.write(createTwoFilesPatch(`a/${file.source.display}`, `b/${file.source.display}`, file.text, text, undefined, undefined, { headerOptions: FILE_HEADERS_ONLY }));
      images += edits.length;
      continue;
    }
    const outcome = replaceIfUnchanged(file.source.path, file.text, text);
    if (outcome.written) {
      written++;
      images += edits.length;
    } else {
      unwritten++;
      process.stderr.write(`blip2: ${file.source.display} was not written: ${outcome.reason}.\n`);
    }
  }
  const what = `${images} image${images === 1 ? '' : 's'}`;
  process.stderr.write(dryRun ? `blip2: would write alt text for ${what} (dry run: nothing written).\n` : `blip2: wrote alt text for ${what} in ${written} file${written === 1 ? '' : 's'}.\n`);
  return result.failures.length > 0 || unwritten > 0 ? 1 : 0;
}

/** A bar on a terminal; elsewhere (CI logs) a line at most every few seconds, and the last one. */
class CaptionProgress {
  private bar?: SingleBar;
  private lastLine = 0;
  private readonly tty = process.stderr.isTTY === true;

  update(done: number, total: number): void {
    if (total === 0) return;
    if (this.tty) {
      if (!this.bar) {
        this.bar = new SingleBar({ stream: process.stderr, format: 'Captioning images  {bar} {value}/{total}', hideCursor: true });
        this.bar.start(total, done);
      }
      this.bar.setTotal(total);
      this.bar.update(done);
    } else if (done === total || Date.now() - this.lastLine > 5000) {
      this.lastLine = Date.now();
      process.stderr.write(`blip2: captioned ${done} of ${total} images\n`);
    }
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}
