import { onnx } from 'onnx-proto';
import { f32ToF16Bits as toF16 } from '../tensor/half';

export const DataType = onnx.TensorProto.DataType;
export type ElemType = onnx.TensorProto.DataType;

/** Produces an initializer's bytes when the external-data writer reaches it, so weights stream to disk one at a time. */
export type BytesProducer = () => Promise<Uint8Array>;

export interface LazyInitializer {
  /** The checkpoint tensors its bytes are computed from: the converter produces it once all of them have arrived. */
  sources: readonly string[];
  name: string;
  dims: number[];
  dataType: ElemType;
  produce: BytesProducer;
}

type Dim = number | string;
type AttrValue = number | number[] | string | { float: number } | { floats: number[] } | { tensor: onnx.ITensorProto };

const AttrType = onnx.AttributeProto.AttributeType;

export const OPSET = 21;
export const MS_DOMAIN = 'com.microsoft';

/**
 * A small ONNX graph builder: nodes get unique names, small constants are inlined,
 * large weights are lazy so the writer can stream them into external data.
 */
export class GraphBuilder {
  readonly nodes: onnx.INodeProto[] = [];
  readonly inputs: onnx.IValueInfoProto[] = [];
  readonly outputs: onnx.IValueInfoProto[] = [];
  readonly inline: onnx.ITensorProto[] = [];
  readonly lazy: LazyInitializer[] = [];
  private counter = 0;
  private readonly constants = new Map<string, string>();
  private scope: string[] = [];

  constructor(readonly name: string) {}

  /** Names nodes after the module they implement, which makes profiles and errors readable. */
  withScope<T>(scope: string, fn: () => T): T {
    this.scope.push(scope);
    try {
      return fn();
    } finally {
      this.scope.pop();
    }
  }

  /** A name no other value in the graph has. */
  fresh(base: string): string {
    const prefix = this.scope.length ? `/${this.scope.join('/')}/` : '/';
    return `${prefix}${base}_${this.counter++}`;
  }

  input(name: string, elemType: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  output(value: string, name: string, elemType: ElemType, dims: Dim[]): void {
    if (value !== name) this.op('Identity', [value], {}, { outputs: [name] });
    this.outputs.push(valueInfo(name, elemType, dims));
  }

  /** Adds a node; returns its single output (or the list when `outputs` is a number > 1). */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { domain?: string; outputs?: string[] } = {}): string {
    return this.opMulti(opType, inputs, attrs, { ...opts, count: 1 })[0];
  }

  opMulti(
    opType: string,
    inputs: string[],
    attrs: Record<string, AttrValue> = {},
    opts: { domain?: string; outputs?: string[]; count?: number } = {},
  ): string[] {
    const nodeName = this.fresh(opType);
    const outputs = opts.outputs ?? Array.from({ length: opts.count ?? 1 }, (_, i) => `${nodeName}/out${i}`);
    this.nodes.push({
      name: nodeName,
      opType,
      domain: opts.domain ?? '',
      input: inputs,
      output: outputs,
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outputs;
  }

  /** A weight streamed into external data, computed from the checkpoint tensors `sources`. */
  weight(name: string, dataType: ElemType, dims: number[], sources: readonly string[], produce: BytesProducer): string {
    this.lazy.push({ name, dims, dataType, sources, produce });
    return name;
  }

  /** A small constant stored in the model file itself; identical constants are shared. */
  constInt64(values: number[], dims: number[] = [values.length]): string {
    return this.constant(DataType.INT64, dims, new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer));
  }

  constInt32(values: number[], dims: number[] = [values.length]): string {
    return this.constant(DataType.INT32, dims, new Uint8Array(new Int32Array(values).buffer));
  }

  constFloat(values: number[], dims: number[] = [values.length], dataType: ElemType = DataType.FLOAT): string {
    const bytes =
      dataType === DataType.FLOAT16
        ? new Uint8Array(Uint16Array.from(values.map(toF16)).buffer)
        : new Uint8Array(new Float32Array(values).buffer);
    return this.constant(dataType, dims, bytes);
  }

  scalarInt64(v: number): string {
    return this.constInt64([v], []);
  }

  private constant(dataType: ElemType, dims: number[], raw: Uint8Array): string {
    const key = `${dataType}:${dims.join('x')}:${Buffer.from(raw).toString('base64')}`;
    const existing = this.constants.get(key);
    if (existing) return existing;
    const name = this.fresh('const');
    this.inline.push({ name, dataType, dims, rawData: raw });
    this.constants.set(key, name);
    return name;
  }

  // Thin wrappers for the ops the BLIP-2 graphs use, so graph code reads like the PyTorch modules.
  add(a: string, b: string) { return this.op('Add', [a, b]); }
  sub(a: string, b: string) { return this.op('Sub', [a, b]); }
  mul(a: string, b: string) { return this.op('Mul', [a, b]); }
  matmul(a: string, b: string) { return this.op('MatMul', [a, b]); }
  relu(a: string) { return this.op('Relu', [a]); }
  gelu(a: string) { return this.op('Gelu', [a], { approximate: 'none' }); }
  softmax(a: string, axis = -1) { return this.op('Softmax', [a], { axis }); }
  cast(a: string, to: ElemType) { return this.op('Cast', [a], { to }); }
  shape(a: string, start?: number, end?: number) {
    const attrs: Record<string, AttrValue> = {};
    if (start !== undefined) attrs.start = start;
    if (end !== undefined) attrs.end = end;
    return this.op('Shape', [a], attrs);
  }
  reshape(a: string, dims: number[] | string) {
    return this.op('Reshape', [a, typeof dims === 'string' ? dims : this.constInt64(dims)]);
  }
  transpose(a: string, perm: number[]) { return this.op('Transpose', [a], { perm }); }
  concat(values: string[], axis: number) { return this.op('Concat', values, { axis }); }
  unsqueeze(a: string, axes: number[]) { return this.op('Unsqueeze', [a, this.constInt64(axes)]); }
  gather(data: string, indices: string, axis = 0) { return this.op('Gather', [data, indices], { axis }); }
  layerNorm(x: string, weight: string, bias: string, epsilon: number) {
    return this.op('LayerNormalization', [x, weight, bias], { axis: -1, epsilon: { float: epsilon } });
  }
  slice(x: string, starts: number[], ends: number[], axes: number[]) {
    return this.op('Slice', [x, this.constInt64(starts), this.constInt64(ends), this.constInt64(axes)]);
  }
  split(x: string, sizes: number[], axis: number): string[] {
    return this.opMulti('Split', [x, this.constInt64(sizes)], { axis }, { count: sizes.length });
  }

  /** The model proto; initializers already written externally are passed in by the writer. */
  toModel(externalInitializers: onnx.ITensorProto[], docString: string): onnx.ModelProto {
    return onnx.ModelProto.create({
      irVersion: 9,
      producerName: 'blip2-vscode',
      docString,
      opsetImport: [
        { domain: '', version: OPSET },
        { domain: MS_DOMAIN, version: 1 },
      ],
      graph: {
        name: this.name,
        node: this.nodes,
        input: this.inputs,
        output: this.outputs,
        initializer: [...this.inline, ...externalInitializers],
      },
    });
  }
}

export function valueInfo(name: string, elemType: ElemType, dims: Dim[]): onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) } } },
  };
}

function attribute(name: string, v: AttrValue): onnx.IAttributeProto {
  if (typeof v === 'number') return { name, type: AttrType.INT, i: v };
  if (typeof v === 'string') return { name, type: AttrType.STRING, s: Buffer.from(v, 'utf8') };
  if (Array.isArray(v)) return { name, type: AttrType.INTS, ints: v };
  if ('float' in v) return { name, type: AttrType.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: AttrType.FLOATS, floats: v.floats };
  return { name, type: AttrType.TENSOR, t: v.tensor };
}
