/**
 * How much memory a converted model needs once loaded, for the message a failed load gives. Estimated from the
 * files' sizes with what each precision was measured to cost on the real 3.7-billion-parameter model (bytes on disk
 * and peak resident bytes per parameter, onnxruntime's CPU provider: bench/results/2026-12-04-02h-avx512-vnni-zen4.json).
 * Quantized models hold one graph's weights at a time (the idle one's are dropped while the other runs), and an int4
 * conversion holds the decoder twice on disk (onnxruntime's graph and the native decoder's weights), once in memory.
 */
import * as os from 'node:os';
import type { ConvertedManifest } from './convert/manifest';
import type { Precision } from './convert/precision';
import { OutOfMemoryError } from './errors';
import { formatBytes } from './units';

const DISK_BYTES_PER_PARAMETER: Record<Precision, number> = { fp32: 4.139, fp16: 2.126, int8: 1.058, int4: 1.068 };
// fp16 is held as float32 by the CPU provider, so it needs as much as fp32 there (and about its file size on a GPU).
const RESIDENT_BYTES_PER_PARAMETER: Record<Precision, number> = { fp32: 4.111, fp16: 4.129, int8: 0.859, int4: 0.492 };
const SMALLEST_FIRST: Precision[] = ['int4', 'int8', 'fp16', 'fp32'];

/**
 * Estimated resident bytes of the model at each precision: from its parameter count where the manifest records it,
 * else from its files' sizes (conversions made before it was recorded stored the int4 decoder twice).
 */
export function memoryNeeds(manifest: ConvertedManifest): Record<Precision, number> {
  const onDisk = Object.values(manifest.sizes).reduce((a, b) => a + b, 0);
  const parameters = manifest.parameters ?? onDisk / DISK_BYTES_PER_PARAMETER[manifest.precision];
  return Object.fromEntries(SMALLEST_FIRST.map((p) => [p, parameters * RESIDENT_BYTES_PER_PARAMETER[p]])) as Record<Precision, number>;
}

/** The sentence for a load that ran out of memory: what this precision needs, what is free, and a smaller choice. */
export function explainOutOfMemory(manifest: ConvertedManifest, freeBytes = os.freemem()): OutOfMemoryError {
  const needs = memoryNeeds(manifest);
  const need = needs[manifest.precision];
  const smaller = SMALLEST_FIRST.filter((p) => needs[p] < need * 0.9);
  const fits = smaller.filter((p) => needs[p] <= freeBytes);
  const offer = (fits.length ? fits : smaller).map((p) => `${p} (about ${formatBytes(needs[p])})`);
  return new OutOfMemoryError(
    `Not enough memory to load the ${manifest.precision} model: it needs about ${formatBytes(need)}, and ${formatBytes(freeBytes)} is free.`,
    offer.length
      ? `Choose a smaller precision: ${offer.join(' or ')}; or close other programs.`
      : 'Close other programs, or use a machine with more memory; no smaller precision exists.',
  );
}
