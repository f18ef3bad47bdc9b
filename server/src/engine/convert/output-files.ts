/**
 * The files a conversion writes while it streams: each graph's external data, and the native decoder's weights,
 * appended to in the order outputs are produced. What was written is recorded per output, so a resumed conversion
 * reopens the files at their recorded lengths and finishes the same bytes an uninterrupted one would.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ExternalDataWriter, writeAll, type InitializerRecord } from '../graphs/external-data';
import type { ConversionPlan, PlannedOutput } from './plan';

export type OutputRecord = { initializer: InitializerRecord } | { native: number[] };

export interface OutputState {
  /** Bytes of each file written so far, by its path relative to the model folder. */
  lengths: Record<string, number>;
  /** Per output of the plan, where it went; null until produced. */
  records: (OutputRecord | null)[];
}

export class OutputFiles {
  private readonly graphs = new Map<number, ExternalDataWriter>();
  private readonly native: { fd: number; length: number } | undefined;
  readonly records: (OutputRecord | null)[];

  constructor(
    private readonly dir: string,
    private readonly plan: ConversionPlan,
    state?: OutputState,
  ) {
    this.records = state?.records.slice() ?? plan.outputs.map(() => null);
    fs.mkdirSync(path.join(dir, 'onnx'), { recursive: true });
    plan.graphs.forEach((g, i) => {
      if (g.withWeights) this.graphs.set(i, new ExternalDataWriter(path.join(dir, g.file), state?.lengths[dataKey(g.file)] ?? 0));
    });
    if (plan.native) {
      const length = state?.lengths[plan.native.file] ?? plan.native.headerBytes;
      const fd = fs.openSync(path.join(dir, plan.native.file), length > plan.native.headerBytes || state ? 'r+' : 'w');
      fs.ftruncateSync(fd, length);
      this.native = { fd, length };
    }
  }

  produced(index: number): boolean {
    return this.records[index] !== null;
  }

  async write(index: number, output: PlannedOutput): Promise<void> {
    if (output.kind === 'initializer') {
      const writer = this.graphs.get(output.graph)!;
      this.records[index] = { initializer: writer.add(output.init, await output.init.produce()) };
      return;
    }
    const native = this.native!;
    const align = this.plan.native!.align;
    const offsets: number[] = [];
    for (const bytes of await output.produce()) {
      const at = Math.ceil(native.length / align) * align;
      writeAll(native.fd, bytes, at);
      native.length = at + bytes.length;
      offsets.push(at);
    }
    this.records[index] = { native: offsets };
  }

  /** Everything written so far is on disk (before a checkpoint says it is). */
  sync(): void {
    for (const w of this.graphs.values()) w.sync();
    if (this.native) fs.fsyncSync(this.native.fd);
  }

  state(): OutputState {
    const lengths: Record<string, number> = {};
    this.plan.graphs.forEach((g, i) => {
      const w = this.graphs.get(i);
      if (w) lengths[dataKey(g.file)] = w.length;
    });
    if (this.plan.native && this.native) lengths[this.plan.native.file] = this.native.length;
    return { lengths, records: this.records.slice() };
  }

  /** Writes the graph files and the native header once every output is there; the bytes of each graph with its data. */
  finish(docString: string): Record<string, number> {
    const sizes: Record<string, number> = {};
    this.sync();
    const indexOf = new Map(this.plan.outputs.map((o, i) => [o.kind === 'initializer' ? o.init : o, i] as const));
    this.plan.graphs.forEach((g, i) => {
      // A graph stored only in another form (the decoder, for the native decoder) has no file: see decoder-forms.ts.
      const writer = this.graphs.get(i);
      if (!writer) return;
      const records = g.builder.lazy.map((init) => {
        const r = this.records[indexOf.get(init)!];
        if (!r || !('initializer' in r)) throw new Error(`${init.name} was not produced`);
        return r.initializer;
      });
      sizes[g.file] = writer.writeGraph(g.builder, records, docString);
    });
    if (this.plan.native && this.native) {
      const offsets: bigint[] = new Array(this.plan.native.slots);
      this.plan.outputs.forEach((o, i) => {
        if (o.kind !== 'native') return;
        const r = this.records[i];
        if (!r || !('native' in r)) throw new Error(`${o.label} was not produced`);
        o.slots.forEach((slot, k) => (offsets[slot] = BigInt(r.native[k])));
      });
      const head = this.plan.native.header(offsets);
      writeAll(this.native.fd, head, 0);
      fs.fsyncSync(this.native.fd);
      sizes[this.plan.native.file] = this.native.length;
    }
    return sizes;
  }

  close(): void {
    for (const w of this.graphs.values()) w.close();
    if (this.native) fs.closeSync(this.native.fd);
  }
}

/** The key a graph's data file has in OutputState.lengths. */
function dataKey(graphFile: string): string {
  return `${graphFile}_data`;
}

