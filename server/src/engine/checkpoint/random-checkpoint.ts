import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { throwIfAborted, UserError } from '../errors';
import { f32ToBf16Bits, f32ToF16Bits } from '../tensor/half';
import { readJson } from './checkpoint';
import { MODEL_CONFIG_FILES, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE } from './files';
import { parseBlip2Config, type Blip2Config } from './config';
import { expectedTensors, type TensorSpec } from './layout';
import { DTYPE_BYTES, type StoredDtype } from './safetensors';

/**
 * Writes a BLIP-2 OPT checkpoint of any size with seeded random weights, in the Hub's layout, so that the
 * converter and runtime can be measured on the real model's shapes without its 15 GB download.
 */

/** transformers' default `max_shard_size` ("5GB", decimal), which gave the real checkpoint its 4 shards. */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

// Large enough that write() calls are few, small enough to stay cache- and memory-friendly.
const CHUNK_BYTES = 4 << 20;

export interface RandomCheckpointProgress {
  /** The weight file being written (its final name). */
  file: string;
  tensor: string;
  /** Bytes of tensor data written so far, over all files. */
  bytesDone: number;
  bytesTotal: number;
}

export interface RandomCheckpointOptions {
  /** A folder with the model's config.json; tokenizer, processor and generation configs are copied along. */
  configDir: string;
  outDir: string;
  seed: number;
  dtype: StoredDtype;
  /** Shard limit for `shardLayoutFrom: 'size'`, in bytes; defaults to transformers' 5 GB. */
  maxShardBytes?: number;
  /**
   * 'index': the shards and tensor-to-shard assignment of configDir's model.safetensors.index.json (the
   * default when there is one); 'size': split as transformers does, filling shards up to maxShardBytes.
   */
  shardLayoutFrom?: 'index' | 'size';
  /** Replace weight files already in outDir instead of refusing. */
  overwrite?: boolean;
  onProgress?: (p: RandomCheckpointProgress) => void;
  signal?: AbortSignal;
}

export interface PlannedTensor extends TensorSpec {
  /** Byte offsets in the file's data section, as the safetensors header records them. */
  begin: number;
  end: number;
}

export interface PlannedShard {
  file: string;
  /** In file order, which is name order, as the safetensors library writes them. */
  tensors: PlannedTensor[];
  /** The 8-byte length prefix plus the padded JSON header. */
  header: Buffer;
  /** The whole file's size. */
  bytes: number;
}

export interface RandomCheckpointPlan {
  config: Blip2Config;
  vocabSize: number;
  dtype: StoredDtype;
  shards: PlannedShard[];
  totalParameters: number;
  /** Bytes of tensor data, headers excluded: what the index's metadata.total_size counts. */
  totalSize: number;
  /** The model.safetensors.index.json to write; undefined for a single-file checkpoint. */
  index: { metadata: { total_parameters: number; total_size: number }; weight_map: Record<string, string> } | undefined;
}

export interface RandomCheckpointResult {
  outDir: string;
  /** Weight files, then the index when there is one. */
  files: string[];
  totalParameters: number;
  totalSize: number;
}

type PlanOptions = Pick<RandomCheckpointOptions, 'configDir' | 'dtype' | 'maxShardBytes' | 'shardLayoutFrom'>;

/** Everything about the checkpoint except its tensor values: files, headers, index. Cheap at any model size. */
export function planRandomCheckpoint(opts: PlanOptions): RandomCheckpointPlan {
  const configFile = path.join(opts.configDir, 'config.json');
  const json = readJson(configFile) as { text_config?: { vocab_size?: unknown } };
  const config = parseBlip2Config(json, configFile);
  const vocabSize = json.text_config?.vocab_size;
  if (typeof vocabSize !== 'number' || !Number.isInteger(vocabSize) || vocabSize <= 0) {
    throw new UserError(`${configFile} has no usable text_config.vocab_size, which sets the embedding table's rows.`);
  }
  if (!(opts.dtype in DTYPE_BYTES)) throw new UserError(`Unknown dtype "${String(opts.dtype)}".`, 'Use F32, F16 or BF16.');
  const specs = expectedTensors(config, vocabSize);
  const elemBytes = DTYPE_BYTES[opts.dtype];
  const sizeOf = (t: TensorSpec) => numel(t.shape) * elemBytes;

  const indexFile = path.join(opts.configDir, SAFETENSORS_INDEX_FILE);
  const layout = opts.shardLayoutFrom ?? (fs.existsSync(indexFile) ? 'index' : 'size');
  let groups: { file: string; specs: TensorSpec[] }[];
  if (layout === 'index') {
    if (!fs.existsSync(indexFile)) throw new UserError(`${opts.configDir} has no ${SAFETENSORS_INDEX_FILE} to take the shard layout from.`, "Use the 'size' layout.");
    groups = groupsFromIndex(indexFile, specs);
  } else {
    const max = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
    if (!Number.isFinite(max) || max <= 0) throw new UserError(`The shard size must be a positive number of bytes, not ${max}.`);
    groups = groupsBySize(specs, sizeOf, max);
  }

  const shards = groups.map(({ file, specs: group }) => {
    const sorted = [...group].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    let offset = 0;
    const tensors = sorted.map((t) => {
      const begin = offset;
      offset += sizeOf(t);
      return { name: t.name, shape: t.shape, begin, end: offset };
    });
    const header = safetensorsHeader(tensors, opts.dtype);
    return { file, tensors, header, bytes: header.length + offset };
  });
  const totalParameters = specs.reduce((s, t) => s + numel(t.shape), 0);
  const totalSize = totalParameters * elemBytes;
  let index: RandomCheckpointPlan['index'];
  if (shards.length > 1 || layout === 'index') {
    const weightMap: Record<string, string> = {};
    for (const name of specs.map((t) => t.name).sort()) weightMap[name] = '';
    for (const s of shards) for (const t of s.tensors) weightMap[t.name] = s.file;
    index = { metadata: { total_parameters: totalParameters, total_size: totalSize }, weight_map: weightMap };
  }
  return { config, vocabSize, dtype: opts.dtype, shards, totalParameters, totalSize, index };
}

/**
 * Writes the checkpoint one tensor at a time, each generated in chunks into one reusable buffer, so memory
 * stays at a few megabytes whatever the model's size. Files appear under their final names only when
 * complete, and the index last, so a folder with an index is a finished checkpoint.
 */
export async function writeRandomCheckpoint(opts: RandomCheckpointOptions): Promise<RandomCheckpointResult> {
  if (os.endianness() !== 'LE') throw new Error('safetensors is little-endian; writing it on a big-endian machine is not supported.');
  if (!Number.isSafeInteger(opts.seed) || opts.seed < 0) throw new UserError(`The seed must be a whole number from 0, not ${opts.seed}.`);
  const plan = planRandomCheckpoint(opts);
  const outDir = path.resolve(opts.outDir);
  fs.mkdirSync(outDir, { recursive: true });
  const stale = fs.readdirSync(outDir).filter((f) => f === SAFETENSORS_INDEX_FILE || f === SAFETENSORS_FILE || /^model-\d+-of-\d+\.safetensors$/.test(f));
  if (stale.length > 0) {
    if (!opts.overwrite) {
      throw new UserError(`${outDir} already holds weights (${stale[0]}).`, 'Choose another output folder, or pass overwrite (--force) to replace them.');
    }
    // The index goes first so that an interrupted overwrite never leaves a folder that looks complete.
    for (const f of [SAFETENSORS_INDEX_FILE, ...stale.filter((f) => f !== SAFETENSORS_INDEX_FILE)]) fs.rmSync(path.join(outDir, f), { force: true });
  }
  for (const f of MODEL_CONFIG_FILES) {
    const src = path.join(opts.configDir, f);
    if (fs.existsSync(src) && path.resolve(src) !== path.join(outDir, f)) fs.copyFileSync(src, path.join(outDir, f));
  }

  const buffer = new ArrayBuffer(CHUNK_BYTES);
  const state = { bytesDone: 0, bytesTotal: plan.totalSize };
  const files: string[] = [];
  for (const shard of plan.shards) {
    const final = path.join(outDir, shard.file);
    const partial = `${final}.partial`;
    const fd = fs.openSync(partial, 'w');
    try {
      writeAll(fd, shard.header);
      for (const t of shard.tensors) {
        throwIfAborted(opts.signal);
        writeTensor(fd, t, plan.dtype, opts.seed, buffer);
        state.bytesDone += t.end - t.begin;
        opts.onProgress?.({ file: shard.file, tensor: t.name, ...state });
        // Lets timers, signals and progress output run between tensors.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } catch (e) {
      fs.closeSync(fd);
      fs.rmSync(partial, { force: true });
      throw diskError(e, outDir);
    }
    fs.closeSync(fd);
    fs.renameSync(partial, final);
    files.push(final);
  }
  if (plan.index) {
    const indexPath = path.join(outDir, SAFETENSORS_INDEX_FILE);
    // transformers: json.dumps(index, indent=2, sort_keys=True) + "\n"; the plan's keys are already sorted.
    fs.writeFileSync(indexPath, JSON.stringify(plan.index, null, 2) + '\n');
    files.push(indexPath);
  }
  return { outDir, files, totalParameters: plan.totalParameters, totalSize: plan.totalSize };
}

/** Parses "5GB", "500MB", "2GiB", "123" as huggingface_hub does (KB/MB/GB decimal, KiB/MiB/GiB binary). */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)?\s*$/i.exec(text);
  if (!m) throw new UserError(`Cannot read "${text}" as a size.`, 'Write it like 5GB, 500MB, 2GiB or a number of bytes.');
  const unit = (m[2] ?? '').toUpperCase();
  const powers: Record<string, number> = { '': 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40 };
  const bytes = Math.floor(Number(m[1]) * powers[unit]);
  if (bytes <= 0) throw new UserError(`The size "${text}" must be above zero.`);
  return bytes;
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function shardName(i: number, n: number): string {
  const pad = (k: number) => String(k).padStart(5, '0');
  return `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
}

function groupsFromIndex(indexFile: string, specs: TensorSpec[]): { file: string; specs: TensorSpec[] }[] {
  const json = readJson(indexFile) as { weight_map?: Record<string, unknown> };
  const map = json.weight_map;
  if (!map || typeof map !== 'object') throw new UserError(`${indexFile} has no weight_map.`);
  const known = new Set(specs.map((t) => t.name));
  const unknown = Object.keys(map).filter((k) => !known.has(k));
  const absent = specs.filter((t) => !(t.name in map)).map((t) => t.name);
  if (unknown.length > 0 || absent.length > 0) {
    const parts = [];
    if (unknown.length > 0) parts.push(`names ${unknown.length} tensor(s) config.json does not imply (${unknown[0]}…)`);
    if (absent.length > 0) parts.push(`lacks ${absent.length} tensor(s) config.json implies (${absent[0]}…)`);
    throw new UserError(`${indexFile} does not match config.json: it ${parts.join(' and ')}.`, "Use the 'size' shard layout instead.");
  }
  const byFile = new Map<string, TensorSpec[]>();
  for (const t of specs) {
    const file = String(map[t.name]);
    if (!/^[^\\/]+\.safetensors$/.test(file)) throw new UserError(`${indexFile} maps ${t.name} to "${file}", which is not a safetensors file name.`);
    let group = byFile.get(file);
    if (!group) byFile.set(file, (group = []));
    group.push(t);
  }
  return [...byFile.keys()].sort().map((file) => ({ file, specs: byFile.get(file)! }));
}

/**
 * huggingface_hub's split_state_dict_into_shards_factory, which save_pretrained uses: tensors in model order
 * fill a shard until the next would pass the limit; a tensor larger than the limit gets a shard of its own.
 */
function groupsBySize(specs: TensorSpec[], sizeOf: (t: TensorSpec) => number, max: number): { file: string; specs: TensorSpec[] }[] {
  const groups: TensorSpec[][] = [];
  let current: TensorSpec[] = [];
  let currentSize = 0;
  for (const t of specs) {
    const size = sizeOf(t);
    if (size > max) {
      groups.push([t]);
      continue;
    }
    if (currentSize + size > max) {
      groups.push(current);
      current = [];
      currentSize = 0;
    }
    current.push(t);
    currentSize += size;
  }
  if (current.length > 0) groups.push(current);
  if (groups.length === 1) return [{ file: SAFETENSORS_FILE, specs: groups[0] }];
  return groups.map((g, i) => ({ file: shardName(i, groups.length), specs: g }));
}

/** The safetensors library's format: u64 LE length, compact JSON with __metadata__ first, space-padded to 8 bytes. */
function safetensorsHeader(tensors: PlannedTensor[], dtype: StoredDtype): Buffer {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  for (const t of tensors) header[t.name] = { dtype, shape: t.shape, data_offsets: [t.begin, t.end] };
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const body = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + body.length);
  out.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(out, 8);
  return out;
}

// ---- values ----

type ValueKind = 'weight' | 'bias' | 'norm';
const STD = 0.02;
const TABLE_BITS = 16;
const TABLE_SIZE = 1 << TABLE_BITS;

/**
 * Layer norms scale by ~1 and everything else is small, as a trained model's initialisation is, so
 * activations stay in range through 32 layers and the converted graphs give finite outputs.
 */
function kindOf(name: string): ValueKind {
  if (name.endsWith('.bias')) return 'bias';
  if (/(layer_?norm\d*|LayerNorm)\.weight$/i.test(name)) return 'norm';
  return 'weight';
}

let standardNormal: Float64Array | undefined;
const tables = new Map<string, Float32Array | Uint16Array>();

/**
 * Normal deviates by table lookup: 16 random bits pick one of 65536 equiprobable quantiles, already in the
 * stored encoding. That is ~10x faster than Box-Muller, which matters at 3.7 billion values, and the
 * quantisation (and tails cut at ±4.3 sigma) is harmless for weights that only need to look plausible.
 */
function valueTable(kind: ValueKind, dtype: StoredDtype): Float32Array | Uint16Array {
  const key = `${kind}/${dtype}`;
  let table = tables.get(key);
  if (table) return table;
  if (!standardNormal) {
    standardNormal = new Float64Array(TABLE_SIZE);
    for (let k = 0; k < TABLE_SIZE; k++) standardNormal[k] = inverseNormalCdf((k + 0.5) / TABLE_SIZE);
  }
  const mean = kind === 'norm' ? 1 : 0;
  const f32 = new Float32Array(TABLE_SIZE);
  for (let k = 0; k < TABLE_SIZE; k++) f32[k] = mean + STD * standardNormal[k];
  if (dtype === 'F32') table = f32;
  else {
    const bits = new Uint32Array(f32.buffer);
    const u16 = new Uint16Array(TABLE_SIZE);
    for (let k = 0; k < TABLE_SIZE; k++) u16[k] = dtype === 'BF16' ? f32ToBf16Bits(bits[k]) : f32ToF16Bits(f32[k]);
    table = u16;
  }
  tables.set(key, table);
  return table;
}

function writeTensor(fd: number, t: PlannedTensor, dtype: StoredDtype, seed: number, buffer: ArrayBuffer): void {
  const elemBytes = DTYPE_BYTES[dtype];
  const table = valueTable(kindOf(t.name), dtype);
  const out: Float32Array | Uint16Array = dtype === 'F32' ? new Float32Array(buffer) : new Uint16Array(buffer);
  const bytes = new Uint8Array(buffer);
  // A stream per tensor, keyed by its name: values do not depend on dtype order, sharding or the other tensors.
  let s = tensorSeed(seed, t.name);
  let remaining = numel(t.shape);
  while (remaining > 0) {
    const n = Math.min(remaining, out.length);
    let i = 0;
    // mulberry32, inlined: one 32-bit draw gives two 16-bit table indices.
    for (; i + 1 < n; i += 2) {
      s = (s + 0x6d2b79f5) | 0;
      let z = Math.imul(s ^ (s >>> 15), 1 | s);
      z = (z + Math.imul(z ^ (z >>> 7), 61 | z)) ^ z;
      z ^= z >>> 14;
      out[i] = table[z & 0xffff];
      out[i + 1] = table[(z >>> 16) & 0xffff];
    }
    if (i < n) {
      s = (s + 0x6d2b79f5) | 0;
      let z = Math.imul(s ^ (s >>> 15), 1 | s);
      z = (z + Math.imul(z ^ (z >>> 7), 61 | z)) ^ z;
      out[i] = table[(z ^ (z >>> 14)) & 0xffff];
    }
    writeAll(fd, bytes.subarray(0, n * elemBytes));
    remaining -= n;
  }
}

/** FNV-1a of the name, mixed with both halves of the seed through splitmix32's finaliser. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  let z = (h ^ lo ^ Math.imul(hi, 0x9e3779b9)) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) | 0;
}

function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done);
}

function diskError(e: unknown, outDir: string): unknown {
  if ((e as NodeJS.ErrnoException).code === 'ENOSPC') return new UserError(`The disk holding ${outDir} is full.`, 'Free some space or choose another output folder.');
  return e;
}

/** Peter Acklam's rational approximation of the normal quantile (relative error < 1.2e-9). */
function inverseNormalCdf(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const low = 0.02425;
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - low) return -inverseNormalCdf(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}
