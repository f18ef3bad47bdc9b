/**
 * How a checkpoint's files are cut into the groups a conversion streams, checkpoints and resumes by. A group is one
 * request's worth of bytes (on the Hub, one Range request): at least MIN_GROUP_BYTES, cut where no tensor is left
 * waiting for a partner if the order allows (so a resumed conversion has nothing to reload), and at most
 * MAX_GROUP_BYTES whatever waits (then the waiting tensors are saved with the checkpoint).
 */
import type { TensorInfo } from '../checkpoint/safetensors';
import type { StreamGroup } from '../checkpoint/tensor-stream';

export const MIN_GROUP_BYTES = 64 << 20;
export const MAX_GROUP_BYTES = 512 << 20;

export interface GroupedFile {
  size: number;
  tensors: TensorInfo[];
}

/** Files in stream order; `outputs` the source tensors of each output (convert/plan.ts). */
export function planGroups(files: readonly GroupedFile[], outputs: readonly (readonly string[])[], min = MIN_GROUP_BYTES, max = MAX_GROUP_BYTES): StreamGroup[] {
  const missing = outputs.map((sources) => new Set(sources).size);
  const waiting = new Map<string, number[]>();
  const consumers = new Map<string, number>();
  outputs.forEach((sources, i) => {
    for (const s of new Set(sources)) {
      (waiting.get(s) ?? waiting.set(s, []).get(s)!).push(i);
      consumers.set(s, (consumers.get(s) ?? 0) + 1);
    }
  });
  let held = 0;
  const arrive = (name: string) => {
    if ((consumers.get(name) ?? 0) > 0) held++;
    for (const i of waiting.get(name) ?? []) {
      if (--missing[i] > 0) continue;
      for (const s of new Set(outputs[i])) {
        const left = consumers.get(s)! - 1;
        consumers.set(s, left);
        if (left === 0) held--;
      }
    }
  };

  const groups: StreamGroup[] = [];
  files.forEach((file, index) => {
    const tensors = [...file.tensors].sort((a, b) => a.begin - b.begin);
    let start = 0;
    let current: StreamGroup['tensors'] = [];
    tensors.forEach((t, k) => {
      current.push({ name: t.name, begin: t.begin, end: t.end });
      arrive(t.name);
      const bytes = t.end - start;
      const last = k === tensors.length - 1;
      if (!last && ((bytes >= min && held === 0) || bytes >= max)) {
        groups.push({ file: index, start, end: t.end, tensors: current });
        start = t.end;
        current = [];
      }
    });
    groups.push({ file: index, start, end: file.size, tensors: current });
  });
  return groups;
}
