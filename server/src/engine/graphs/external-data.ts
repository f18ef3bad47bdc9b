import * as fs from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { throwIfAborted } from '../errors';
import type { ElemType, GraphBuilder } from './onnx-builder';

// Tensors at or under this size stay inside the .onnx file, as onnx's own external-data converter does.
const INLINE_LIMIT = 1024;
// Page-aligned offsets let ONNX Runtime map weights instead of copying them.
const ALIGNMENT = 4096;

export interface WriteProgress {
  graph: string;
  tensor: string;
  done: number;
  total: number;
}

/** Where a graph written by writeModel keeps its weights: `<file>.onnx_data` beside it. */
export function externalDataPath(onnxPath: string): string {
  return `${onnxPath}_data`;
}

/** Where one initializer's bytes went, in a form a resumable conversion can save (convert/journal.ts). */
export interface InitializerRecord {
  name: string;
  dataType: ElemType;
  dims: number[];
  /** In the external data file. */
  offset?: number;
  length?: number;
  /** Small tensors' bytes, base64, kept in the graph file itself. */
  raw?: string;
}

/**
 * Appends a graph's weights to its `_data` file in the order they are produced, each at a page-aligned offset,
 * and keeps small ones for the graph file itself. Reopened at `length`, it continues a data file an earlier run
 * wrote that far (what is past it is cut off).
 */
export class ExternalDataWriter {
  readonly dataPath: string;
  private readonly fd: number;

  constructor(readonly onnxPath: string, public length = 0) {
    this.dataPath = externalDataPath(onnxPath);
    this.fd = fs.openSync(this.dataPath, length > 0 ? 'r+' : 'w');
    fs.ftruncateSync(this.fd, length);
  }

  add(init: { name: string; dataType: ElemType; dims: number[] }, bytes: Uint8Array): InitializerRecord {
    const record = { name: init.name, dataType: init.dataType, dims: [...init.dims] };
    if (bytes.length <= INLINE_LIMIT) return { ...record, raw: Buffer.from(bytes).toString('base64') };
    const offset = Math.ceil(this.length / ALIGNMENT) * ALIGNMENT;
    writeAll(this.fd, bytes, offset);
    this.length = offset + bytes.length;
    return { ...record, offset, length: bytes.length };
  }

  sync(): void {
    fs.fsyncSync(this.fd);
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  /** Writes the graph file with the recorded initializers; returns the bytes of graph and data together. */
  writeGraph(graph: GraphBuilder, records: readonly InitializerRecord[], docString: string): number {
    const dataName = path.basename(this.dataPath);
    const initializers = records.map((r): onnx.ITensorProto => {
      if (r.raw !== undefined) return { name: r.name, dataType: r.dataType, dims: r.dims, rawData: Buffer.from(r.raw, 'base64') };
      return {
        name: r.name,
        dataType: r.dataType,
        dims: r.dims,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: dataName },
          { key: 'offset', value: String(r.offset) },
          { key: 'length', value: String(r.length) },
        ],
      };
    });
    const encoded = onnx.ModelProto.encode(graph.toModel(initializers, docString)).finish();
    fs.writeFileSync(this.onnxPath, encoded);
    return this.length + encoded.length;
  }
}

/**
 * Writes a graph as `<file>.onnx` plus `<file>.onnx_data`, producing one weight at a time so peak memory is
 * the largest single tensor, not the model.
 */
export async function writeModel(
  graph: GraphBuilder,
  onnxPath: string,
  docString: string,
  opts: { onProgress?: (p: WriteProgress) => void; signal?: AbortSignal } = {},
): Promise<{ bytes: number }> {
  const writer = new ExternalDataWriter(onnxPath);
  const records: InitializerRecord[] = [];
  try {
    for (let i = 0; i < graph.lazy.length; i++) {
      throwIfAborted(opts.signal);
      const init = graph.lazy[i];
      records.push(writer.add(init, await init.produce()));
      opts.onProgress?.({ graph: graph.name, tensor: init.name, done: i + 1, total: graph.lazy.length });
    }
    writer.sync();
  } finally {
    writer.close();
  }
  return { bytes: writer.writeGraph(graph, records, docString) };
}

export function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, position + done);
}
