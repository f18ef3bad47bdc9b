import * as fs from 'node:fs';
import { UserError } from '../errors';
import { bf16ArrayToF32, f16ArrayToF32 } from '../tensor/half';

export type StoredDtype = 'F32' | 'F16' | 'BF16';
export const DTYPE_BYTES: Record<StoredDtype, number> = { F32: 4, F16: 2, BF16: 2 };

export interface TensorInfo {
  name: string;
  dtype: StoredDtype;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
  file: string;
}

// A real header is a few hundred kilobytes; anything far larger is a corrupt length prefix.
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/**
 * Reads a safetensors file's header only. Tensor data stays on disk and is read one tensor at a time,
 * so converting a 15 GB checkpoint never holds more than one tensor in memory.
 */
export function readSafetensorsHeader(file: string): Map<string, TensorInfo> {
  const name = file.split(/[\\/]/).pop() ?? file;
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    throw new UserError(`Weights file not found: ${file}.`, 'Check that the checkpoint folder is complete.');
  }
  try {
    const size = fs.fstatSync(fd).size;
    const prefix = Buffer.alloc(8);
    if (size < 8 || fs.readSync(fd, prefix, 0, 8, 0) !== 8) throw corrupt(name, 'it is too short to hold a header');
    const headerLen = safetensorsHeaderLength(prefix, size, name);
    const headerBuf = Buffer.alloc(headerLen);
    fs.readSync(fd, headerBuf, 0, headerLen, 8);
    return parseSafetensorsHeader(headerBuf, size, file, name);
  } finally {
    fs.closeSync(fd);
  }
}

/** The header's length from a file's first 8 bytes, checked against the file's size. */
export function safetensorsHeaderLength(prefix: Uint8Array, fileSize: number, name: string): number {
  if (prefix.length < 8 || fileSize < 8) throw corrupt(name, 'it is too short to hold a header');
  const headerLen = Number(Buffer.from(prefix.buffer, prefix.byteOffset, 8).readBigUInt64LE(0));
  if (headerLen <= 0 || headerLen > MAX_HEADER_BYTES || 8 + headerLen > fileSize) throw corrupt(name, 'its header length is invalid');
  return headerLen;
}

/**
 * The tensors a header describes, their offsets made absolute in a file of `fileSize` bytes. `file` is what
 * TensorInfo.file records (a path, or the name of a file that is streamed).
 */
export function parseSafetensorsHeader(headerBuf: Uint8Array, fileSize: number, file: string, name = file): Map<string, TensorInfo> {
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(headerBuf.buffer, headerBuf.byteOffset, headerBuf.byteLength).toString('utf8')) as Record<string, unknown>;
  } catch {
    throw corrupt(name, 'its header is not valid JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw corrupt(name, 'its header is not a JSON object');
  const dataStart = 8 + headerBuf.byteLength;
  const dataBytes = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  for (const [key, value] of Object.entries(header)) {
    if (key === '__metadata__') continue;
    const v = value as { dtype?: string; shape?: unknown; data_offsets?: unknown };
    if (!v || !Array.isArray(v.shape) || !Array.isArray(v.data_offsets)) throw corrupt(name, `tensor ${key} has no shape or offsets`);
    if (v.dtype !== 'F32' && v.dtype !== 'F16' && v.dtype !== 'BF16') {
      throw new UserError(
        `Tensor ${key} in ${name} is stored as ${v.dtype}; only F32, F16 and BF16 checkpoints are supported.`,
        'Use a checkpoint saved in float32, float16 or bfloat16.',
      );
    }
    if (!v.shape.every(isCount)) throw corrupt(name, `tensor ${key} has the shape ${JSON.stringify(v.shape).slice(0, 60)}`);
    const shape = v.shape as number[];
    const offsets = v.data_offsets;
    if (offsets.length !== 2 || !offsets.every(isCount) || offsets[1] < offsets[0]) {
      throw corrupt(name, `tensor ${key} has the data offsets ${JSON.stringify(offsets).slice(0, 60)}`);
    }
    const [b, e] = offsets as [number, number];
    const numel = shape.reduce((a, d) => a * d, 1);
    if (e - b !== numel * DTYPE_BYTES[v.dtype]) throw corrupt(name, `tensor ${key} has ${e - b} bytes for shape [${shape}]`);
    tensors.set(key, { name: key, dtype: v.dtype, shape, begin: dataStart + b, end: dataStart + e, file });
  }
  checkLayout(name, [...tensors.values()], dataStart, dataBytes);
  return tensors;
}

/** A whole number that fits a double exactly: a dimension or a byte offset. */
function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * As the safetensors format requires (and its reference reader checks): the tensors tile the data section
 * exactly, in offset order, with no overlap and no gap, so that no tensor reads the header, another tensor's
 * bytes, or bytes past the end.
 */
function checkLayout(name: string | undefined, tensors: TensorInfo[], dataStart: number, dataBytes: number): void {
  const sorted = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = dataStart;
  for (const t of sorted) {
    if (t.begin < expected) throw corrupt(name, `tensor ${t.name} overlaps the tensor before it`);
    if (t.begin > expected) throw corrupt(name, `there are ${t.begin - expected} unused bytes before tensor ${t.name}`);
    expected = t.end;
  }
  const end = dataStart + dataBytes;
  if (expected > end) {
    throw new UserError(
      `${name} is truncated: it holds ${end} bytes but its header needs ${expected}.`,
      'The download or copy was interrupted; download the file again.',
    );
  }
  if (expected < end) throw corrupt(name, `it has ${end - expected} bytes after its last tensor`);
}

function corrupt(name: string | undefined, why: string): UserError {
  return new UserError(`${name} is not a valid safetensors file: ${why}.`, 'Download the checkpoint again.');
}

/** Reads one tensor's bytes and widens F16/BF16 to float32. */
export async function readTensorF32(info: TensorInfo): Promise<Float32Array> {
  const bytes = info.end - info.begin;
  // A fresh ArrayBuffer keeps the typed-array views aligned whatever the file offset.
  const buf = new Uint8Array(new ArrayBuffer(bytes));
  const fh = await fs.promises.open(info.file, 'r');
  try {
    let done = 0;
    // read() caps one call at 2 GiB; the embedding of a large model can exceed that in F32.
    while (done < bytes) {
      const chunk = Math.min(bytes - done, 1 << 30);
      const { bytesRead } = await fh.read(buf, done, chunk, info.begin + done);
      if (bytesRead === 0) throw new UserError(`${info.file} ended while reading ${info.name}.`, 'The file is truncated; download it again.');
      done += bytesRead;
    }
  } finally {
    await fh.close();
  }
  switch (info.dtype) {
    case 'F32':
      return new Float32Array(buf.buffer);
    case 'F16':
      return f16ArrayToF32(new Uint16Array(buf.buffer));
    case 'BF16':
      return bf16ArrayToF32(new Uint16Array(buf.buffer));
  }
}
