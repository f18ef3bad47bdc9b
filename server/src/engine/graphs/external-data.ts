import * as fs from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { throwIfAborted } from '../errors';
import type { GraphBuilder } from './onnx-builder';

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
  const dataPath = externalDataPath(onnxPath);
  const dataName = path.basename(dataPath);
  const fd = fs.openSync(dataPath, 'w');
  const initializers: onnx.ITensorProto[] = [];
  let offset = 0;
  try {
    for (let i = 0; i < graph.lazy.length; i++) {
      throwIfAborted(opts.signal);
      const init = graph.lazy[i];
      const bytes = await init.produce();
      if (bytes.length <= INLINE_LIMIT) {
        initializers.push({ name: init.name, dataType: init.dataType, dims: init.dims, rawData: bytes });
      } else {
        offset = Math.ceil(offset / ALIGNMENT) * ALIGNMENT;
        writeAll(fd, bytes, offset);
        initializers.push({
          name: init.name,
          dataType: init.dataType,
          dims: init.dims,
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            { key: 'location', value: dataName },
            { key: 'offset', value: String(offset) },
            { key: 'length', value: String(bytes.length) },
          ],
        });
        offset += bytes.length;
      }
      opts.onProgress?.({ graph: graph.name, tensor: init.name, done: i + 1, total: graph.lazy.length });
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  const model = graph.toModel(initializers, docString);
  const encoded = onnx.ModelProto.encode(model).finish();
  fs.writeFileSync(onnxPath, encoded);
  return { bytes: offset + encoded.length };
}

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done, position + done);
}
