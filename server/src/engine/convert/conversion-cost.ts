/**
 * The disk a conversion will use and the download it needs, computed before it starts from the converter's own plan
 * of what it writes (plan.ts) and the source's sizes (store/setup-cost.ts states them).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkpointShapes, parameterCount, type Checkpoint } from '../checkpoint/checkpoint';
import { freeBytesAt, type SetUpCost, type SetUpKind } from '../store/setup-cost';
import { decoderFormsFor } from './convert';
import { planConversion, plannedBytes } from './plan';
import { copyBytesNeeded } from '../runtime/ort';
import { isQuantized, type Precision } from './precision';

/**
 * Bytes a conversion of this checkpoint writes at this precision on this machine, and the optimized copy the first
 * load adds: onnxruntime's decoder, where it computes a quantized decoder, keeps one (runtime/ort.ts).
 */
export function conversionBytes(ckpt: Checkpoint, precision: Precision, blockSize?: number): { conversion: number; firstLoad: number } {
  const plan = planConversion(ckpt, precision, decoderFormsFor(ckpt, precision, blockSize), blockSize);
  const decoder = plan.graphs.find((g) => g.phase === 'decoder_model_merged')!;
  const firstLoad = isQuantized(precision) && decoder.withWeights ? copyBytesNeeded(plannedBytes({ ...plan, graphs: [decoder], native: undefined, outputs: plan.outputs.filter((o) => o.kind === 'initializer' && plan.graphs[o.graph] === decoder) })) : 0;
  return { conversion: plannedBytes(plan), firstLoad };
}

/** float32, float16 or bfloat16, from the bytes the weights take per parameter (and the config's torch_dtype for 2). */
export function sourceDtype(sourceBytes: number, parameters: number, torchDtype?: unknown): SetUpCost['sourceDtype'] {
  const per = sourceBytes / parameters;
  if (per > 3) return 'float32';
  return torchDtype === 'bfloat16' ? 'bfloat16' : 'float16';
}


/**
 * The cost of converting the checkpoint whose configs are in `configDir` into `convertedDir`, from a source of
 * `sourceBytes` (downloaded for kinds 'stream' and 'download', `smallBytes` of configs and tokenizer besides).
 */
export function conversionCost(input: {
  model: string;
  precision: Precision;
  kind: Exclude<SetUpKind, 'ready' | 'converted'>;
  configDir: string;
  sourceBytes: number;
  smallBytes: number;
  convertedDir: string;
  /** The model store the conversion is in (what the sentence names; `convertedDir` is deep inside it). */
  storeRoot: string;
  cacheDir?: string;
  /** The weights' storage type when the headers were read (a streamed source); guessed from the sizes otherwise. */
  sourceDtype?: SetUpCost['sourceDtype'];
}): SetUpCost {
  const ckpt = checkpointShapes(input.configDir);
  const bytes = conversionBytes(ckpt, input.precision);
  const conversion = bytes.conversion + bytes.firstLoad + input.smallBytes;
  const downloads = input.kind !== 'convert';
  const kept = input.kind === 'download' ? input.sourceBytes : 0;
  return {
    model: input.model,
    precision: input.precision,
    kind: input.kind,
    downloadBytes: downloads ? input.sourceBytes + input.smallBytes : 0,
    sourceBytes: input.sourceBytes,
    sourceDtype: input.sourceDtype ?? sourceDtype(input.sourceBytes, parameterCount(ckpt), ckptConfigDtype(input.configDir)),
    // The journal and the tensors waiting for a partner at a checkpoint: a little on top (convert/groups.ts).
    peakDiskBytes: kept + conversion + Math.ceil(conversion / 100) + JOURNAL_MARGIN,
    finalDiskBytes: kept + conversion + (downloads ? input.smallBytes : 0),
    firstLoadBytes: bytes.firstLoad,
    storeDir: input.storeRoot,
    freeBytes: freeBytesAt(input.convertedDir),
    ...(input.cacheDir ? { cacheDir: input.cacheDir, cacheFreeBytes: freeBytesAt(input.cacheDir) } : {}),
  };
}

const JOURNAL_MARGIN = 1 << 20;

function ckptConfigDtype(configDir: string): unknown {
  try {
    return (JSON.parse(fs.readFileSync(path.join(configDir, 'config.json'), 'utf8')) as { torch_dtype?: unknown }).torch_dtype;
  } catch {
    return undefined;
  }
}
