import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint, parameterCount, type Checkpoint } from '../checkpoint/checkpoint';
import { MODEL_CONFIG_FILES, SAFETENSORS_INDEX_FILE } from '../checkpoint/files';
import type { StoredDtype } from '../checkpoint/safetensors';
import { localCheckpointSource, type CheckpointSource } from '../checkpoint/source';
import { TensorStream } from '../checkpoint/tensor-stream';
import { CancelledError, throwIfAborted, UserError } from '../errors';
import { DataType } from '../graphs/onnx-builder';
import { withLock } from '../store/hub-download';
import { publishDir } from '../store/model-store';
import { bf16ArrayToF32, f16ArrayToF32 } from '../tensor/half';
import { MAX_GROUP_BYTES, MIN_GROUP_BYTES, planGroups } from './groups';
import { recordModelFiles } from './integrity';
import { journalDir, readHeld, readJournal, writeJournal, type Journal } from './journal';
import { CONVERTER_VERSION, MANIFEST_FILE, MANIFEST_FORMAT, readManifest, type ConvertedManifest, type SourceFile } from './manifest';
import { nativeDecoderAvailable } from '../runtime/native-decoder';
import { nativeDecoderFits } from './native-weights';
import { OutputFiles } from './output-files';
import { planConversion, type ConversionPlan, type DecoderForm } from './plan';
import { DEFAULT_BLOCK_SIZE, moduleFormats, type Precision } from './precision';

export interface ConvertProgress {
  /** 'download' while the checkpoint streams from the network, 'read' while it is read from disk. */
  phase: 'download' | 'read';
  /** Source bytes read so far, of `total`. */
  done: number;
  total: number;
  /** The tensor that came in last. */
  detail?: string;
}

export interface ConvertOptions {
  /** A checkpoint folder on disk; or `source`, a checkpoint read from elsewhere (the Hub). */
  checkpointDir?: string;
  source?: CheckpointSource;
  outDir: string;
  precision: Precision;
  /** What the user named (a repo id or folder), recorded in the manifest; the source's own name otherwise. */
  sourceName?: string;
  revision?: string;
  blockSize?: number;
  /** Which forms of the int4 decoder's weights to store; by default the one this machine runs (decoderFormsFor). */
  decoderForms?: DecoderForm[];
  onProgress?: (p: ConvertProgress) => void;
  signal?: AbortSignal;
  /** The smallest group the checkpoint is read in (a Range request each on the Hub); BLIP2_STREAM_GROUP_MB or 64 MB. */
  groupBytes?: number;
}

/** BLIP2_STREAM_GROUP_MB: smaller groups checkpoint more often (more requests); larger ones fewer. */
function groupBytesFromEnv(): number | undefined {
  const mb = Number(process.env.BLIP2_STREAM_GROUP_MB);
  return Number.isFinite(mb) && mb > 0 ? Math.round(mb * 2 ** 20) : undefined;
}

/** How far the checkpoint reader may run ahead of the conversion, in tensors not yet used. */
const READ_AHEAD_BYTES = 768 << 20;
/** Dropped ranges resumed in a row before the download counts as failed. */
const RETRIES = 5;

/**
 * The forms of the decoder a conversion stores: the native decoder's where it computes the int4 or int8 decoder on
 * this machine (a Linux x64 CPU with AVX2 and the library built), else onnxruntime's. Never both: a machine runs one, and
 * the other can be derived from it should it ever be needed (decoder-forms.ts).
 */
export function decoderFormsFor(ckpt: Checkpoint, precision: Precision, blockSize = DEFAULT_BLOCK_SIZE): DecoderForm[] {
  const quant = moduleFormats(precision, blockSize).decoder.quant;
  const native = quant?.kind === 'nbits' && nativeDecoderFits(ckpt, quant.blockSize) && nativeDecoderAvailable();
  return [native ? 'native' : 'onnxruntime'];
}

/**
 * Converts a Hugging Face BLIP-2 OPT checkpoint into ONNX graphs (and the native decoder's weights) at one
 * precision, as its bytes come in: each output is computed once the tensors it is made of have arrived, so the
 * checkpoint is read once, in order, and never needs to be on disk when it comes from the Hub.
 *
 * Everything is written into `<outDir>.incomplete`, renamed into place only when complete, so a folder under its
 * final name is always a finished conversion. The work is journaled after each group of the checkpoint (journal.ts),
 * and a conversion that was interrupted resumes from its journal. The result does not depend on the interruptions,
 * nor on where the bytes came from: a conversion from the Hub, resumed or not, writes the same bytes as one from a
 * folder holding the same checkpoint.
 */
export async function convertCheckpoint(opts: ConvertOptions): Promise<ConvertedManifest> {
  const source = opts.source ?? localCheckpointSource(path.resolve(opts.checkpointDir!), opts.sourceName, opts.revision);
  const outDir = path.resolve(opts.outDir);
  const staging = `${outDir}.incomplete`;
  fs.mkdirSync(path.dirname(outDir), { recursive: true });
  // One writer per conversion across processes (the editor's server and a terminal may start the same one).
  return withLock(`${outDir}.lock`, opts.signal, async () => {
    if (fs.existsSync(path.join(outDir, MANIFEST_FILE))) {
      try {
        return readManifest(outDir);
      } catch {
        // an older converter's: converted again below
      }
    }
    try {
      return await convertInto(source, staging, outDir, opts);
    } catch (e) {
      if (e instanceof ChecksumMismatch) {
        fs.rmSync(staging, { recursive: true, force: true });
        throw new UserError(
          `The download of ${e.file} from ${source.model} did not match the checksum the Hub lists for it, so the conversion made from it was discarded.`,
          'Set up again to download it afresh; if it keeps failing, check for a proxy that alters downloads.',
        );
      }
      if ((e as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new UserError(`The disk holding ${outDir} is full.`, 'Free some space or choose another folder for the model store (blip2.modelStore, --store); the conversion resumes where it stopped.');
      }
      throw e;
    }
  });
}

class ChecksumMismatch extends Error {
  constructor(readonly file: string) {
    super(`checksum mismatch: ${file}`);
  }
}

/** The tensors that arrived and are still needed, read as float32 by the graphs' producers. */
class TensorPool {
  private readonly bytes = new Map<string, { dtype: StoredDtype; data: Uint8Array }>();

  constructor(private readonly dtypes: (name: string) => StoredDtype) {}

  put(name: string, data: Uint8Array): void {
    this.bytes.set(name, { dtype: this.dtypes(name), data });
  }

  has(name: string): boolean {
    return this.bytes.has(name);
  }

  raw(name: string): Uint8Array {
    return this.bytes.get(name)!.data;
  }

  drop(name: string): void {
    this.bytes.delete(name);
  }

  names(): string[] {
    return [...this.bytes.keys()];
  }

  /** Shared with every output made from this tensor: producers never write into it (weights.ts copies first). */
  read(name: string): Float32Array {
    const t = this.bytes.get(name);
    if (!t) throw new Error(`tensor ${name} was read before it arrived`);
    const { buffer, byteOffset, byteLength } = t.data;
    switch (t.dtype) {
      case 'F32':
        return new Float32Array(buffer, byteOffset, byteLength / 4);
      case 'F16':
        return f16ArrayToF32(new Uint16Array(buffer, byteOffset, byteLength / 2));
      case 'BF16':
        return bf16ArrayToF32(new Uint16Array(buffer, byteOffset, byteLength / 2));
    }
  }
}

async function convertInto(source: CheckpointSource, staging: string, outDir: string, opts: ConvertOptions): Promise<ConvertedManifest> {
  const headers = new Map(source.weights.map((w) => [w.name, w.tensors] as const));
  const metadata = openCheckpoint(source.configDir, headers);
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  const forms = opts.decoderForms ?? decoderFormsFor(metadata, opts.precision, blockSize);
  const pool = new TensorPool((name) => metadata.info(name).dtype);
  const ckpt: Checkpoint = { ...metadata, read: async (name) => pool.read(name) };
  const plan = planConversion(ckpt, opts.precision, forms, blockSize);
  const minGroup = opts.groupBytes ?? groupBytesFromEnv() ?? MIN_GROUP_BYTES;
  const groups = planGroups(
    source.weights.map((w) => ({ size: w.size, tensors: [...w.tensors.values()] })),
    plan.outputs.map((o) => o.sources),
    minGroup,
    Math.max(minGroup, MAX_GROUP_BYTES),
  );
  const identity = JSON.stringify({ source: source.identity, precision: opts.precision, blockSize, forms, converter: CONVERTER_VERSION, groups: groups.length });

  let journal = readJournal(staging, identity);
  if (!journal) {
    fs.rmSync(staging, { recursive: true, force: true });
    fs.mkdirSync(staging, { recursive: true });
  }
  const outputs = new OutputFiles(staging, plan, journal);
  try {
    // What each output still waits for, and how many outputs still need each tensor.
    const missing = plan.outputs.map((o) => new Set(o.sources));
    const waiting = new Map<string, number[]>();
    const consumers = new Map<string, number>();
    plan.outputs.forEach((o, i) => {
      if (outputs.produced(i)) return;
      for (const s of new Set(o.sources)) {
        (waiting.get(s) ?? waiting.set(s, []).get(s)!).push(i);
        consumers.set(s, (consumers.get(s) ?? 0) + 1);
      }
    });
    const sourceFiles: SourceFile[] = [...(journal?.files ?? [])];
    const arrive = async (name: string, data: Uint8Array) => {
      if (!consumers.get(name)) return;
      pool.put(name, data);
      const ready: number[] = [];
      for (const i of waiting.get(name) ?? []) {
        missing[i].delete(name);
        if (missing[i].size === 0) ready.push(i);
      }
      for (const i of ready.sort((a, b) => a - b)) {
        throwIfAborted(opts.signal);
        await outputs.write(i, plan.outputs[i]);
        for (const s of new Set(plan.outputs[i].sources)) {
          const left = consumers.get(s)! - 1;
          consumers.set(s, left);
          if (left === 0) pool.drop(s);
        }
      }
    };
    // Tensors an earlier run saved while they waited for a partner.
    for (const name of journal?.held ?? []) await arrive(name, readHeld(staging, name));

    const total = source.weights.reduce((s, w) => s + w.size, 0);
    const doneBefore = journal ? source.weights.slice(0, groups[journal.nextGroup]?.file ?? source.weights.length).reduce((s, w) => s + w.size, 0) + (groups[journal.nextGroup]?.start ?? 0) : 0;
    const phase = source.remote ? 'download' : 'read';
    opts.onProgress?.({ phase, done: doneBefore, total });
    let done = doneBefore;

    if (!journal || journal.nextGroup < groups.length) {
      const stream = new TensorStream({
        files: source.weights.map((w) => ({ name: w.name, size: w.size, location: w.location })),
        groups,
        from: journal?.nextGroup ?? 0,
        hashState: journal?.hashState,
        budgetBytes: Math.max(READ_AHEAD_BYTES, ...source.weights.flatMap((w) => [...w.tensors.values()].map((t) => t.end - t.begin))),
        retries: RETRIES,
      });
      const onAbort = () => void stream.close();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      try {
        for await (const ev of stream) {
          throwIfAborted(opts.signal);
          if (ev.type === 'tensor') {
            await arrive(ev.name, ev.bytes);
            stream.ack(ev.bytes.byteLength);
            done += ev.bytes.byteLength;
            opts.onProgress?.({ phase, done, total, detail: ev.name });
          } else if (ev.type === 'file') {
            const w = source.weights[ev.file];
            if (w.sha256 && w.sha256 !== ev.sha256) throw new ChecksumMismatch(w.name);
            sourceFiles.push({ name: w.name, bytes: w.size, sha256: ev.sha256 });
          } else if (ev.type === 'group') {
            const group = groups[ev.index];
            done = source.weights.slice(0, group.file).reduce((s, w) => s + w.size, 0) + group.end;
            outputs.sync();
            journal = { format: 1, identity, nextGroup: ev.index + 1, hashState: ev.hashState, files: sourceFiles.slice(), held: pool.names(), ...outputs.state() };
            writeJournal(staging, journal, (n) => pool.raw(n));
            opts.onProgress?.({ phase, done, total });
          }
        }
      } catch (e) {
        if (opts.signal?.aborted) throw new CancelledError();
        throw e;
      } finally {
        opts.signal?.removeEventListener('abort', onAbort);
        await stream.close();
      }
    }
    const unmade = plan.outputs.findIndex((_, i) => !outputs.produced(i));
    if (unmade >= 0) throw new UserError(`The checkpoint from ${source.model} ended before ${plan.outputs[unmade].sources.join(', ')} came.`, 'Download it again.');

    const sizes = outputs.finish(`BLIP-2 ${opts.precision}, converted by blip2-vscode (converter ${CONVERTER_VERSION})`);
    return await finish(source, plan, staging, outDir, sizes, [...configChecksums(source), ...sourceFiles], ckpt, opts);
  } finally {
    outputs.close();
  }
}

/** The checksums of the config files read from the source folder, for the manifest. */
function configChecksums(source: CheckpointSource): SourceFile[] {
  return [...MODEL_CONFIG_FILES, SAFETENSORS_INDEX_FILE]
    .map((f) => path.join(source.configDir, f))
    .filter((f) => fs.existsSync(f))
    .map((f) => {
      const bytes = fs.readFileSync(f);
      return { name: path.basename(f), bytes: bytes.length, sha256: crypto.createHash('sha256').update(bytes).digest('hex') };
    });
}

async function finish(
  source: CheckpointSource,
  plan: ConversionPlan,
  staging: string,
  outDir: string,
  sizes: Record<string, number>,
  files: SourceFile[],
  ckpt: Checkpoint,
  opts: ConvertOptions,
): Promise<ConvertedManifest> {
  for (const f of MODEL_CONFIG_FILES) {
    const src = path.join(source.configDir, f);
    if (fs.existsSync(src) && path.resolve(src) !== path.resolve(staging, f)) fs.copyFileSync(src, path.join(staging, f));
  }
  fs.rmSync(journalDir(staging), { recursive: true, force: true });
  const quant = moduleFormats(plan.precision, plan.blockSize).decoder.quant;
  const decoderGraph = plan.graphs.find((g) => g.phase === 'decoder_model_merged')!;
  const manifest: ConvertedManifest = {
    format: MANIFEST_FORMAT,
    converterVersion: CONVERTER_VERSION,
    precision: plan.precision,
    quantization: quant?.kind === 'nbits' ? { bits: quant.bits, blockSize: quant.blockSize, accuracyLevel: quant.accuracyLevel } : null,
    source: { model: opts.sourceName ?? source.model, revision: opts.revision ?? source.revision, ...(source.dir ? { dir: source.dir } : {}), files },
    createdAt: new Date().toISOString(),
    vocabSize: ckpt.vocabSize,
    kvCacheType: moduleFormats(plan.precision, plan.blockSize).decoder.floatType === DataType.FLOAT16 ? 'float16' : 'float32',
    graphs: {
      visionEncoder: plan.graphs[0].file,
      embedTokens: plan.graphs[1].file,
      decoder: decoderGraph.file,
      ...(plan.native ? { nativeDecoder: plan.native.file } : {}),
    },
    decoderForms: plan.decoderForms,
    sizes,
    parameters: parameterCount(ckpt),
    files: await recordModelFiles(staging, opts.signal),
  };
  // The manifest is written last: a folder with a manifest is a finished conversion.
  fs.writeFileSync(path.join(staging, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
  // If another process (the CLI beside the editor, say) finished the same conversion first, theirs is kept.
  await publishDir(staging, outDir);
  return readManifest(outDir);
}

