/**
 * A Hub checkpoint as a conversion's source without downloading it first: its configs and tokenizer go into the
 * Hugging Face cache as usual (a few megabytes), each weight file's header is read with one Range request, and the
 * tensors are then streamed by the conversion (checkpoint/tensor-stream.ts), checked against the Hub's SHA-256 as
 * they come, and never written to disk.
 */
import { UserError } from '../errors';
import { parseSafetensorsHeader, safetensorsHeaderLength, type TensorInfo } from '../checkpoint/safetensors';
import type { CheckpointSource, SourceWeights } from '../checkpoint/source';
import { fetchCheckpointConfigs, type HubDownloadOptions, type HubRevision, type PlannedFile } from './hub-download';
import { HubFileRanges, type RangeCounters } from './hub-ranges';

export interface HubSourceOptions extends HubDownloadOptions {
  /** Requests and bytes, counted (the benchmark reports them). */
  counters?: RangeCounters;
}

export function resolveUrl(endpoint: string, repo: string, commit: string, file: string): string {
  return `${endpoint}/${repo}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of chunks) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

/**
 * Reads one weight file's header from the Hub: its length, then exactly the header (two small requests, so no byte of
 * a tensor is fetched twice).
 */
async function remoteHeader(ranges: HubFileRanges, file: PlannedFile, signal: AbortSignal | undefined): Promise<Map<string, TensorInfo>> {
  const prefix = await collect(ranges.read(0, Math.min(file.size, 8), signal));
  const length = safetensorsHeaderLength(prefix, file.size, file.path);
  return parseSafetensorsHeader(await collect(ranges.read(8, 8 + length, signal)), file.size, file.path);
}

export async function hubCheckpointSource(rev: HubRevision, opts: HubSourceOptions): Promise<CheckpointSource> {
  const { hub, commit } = rev;
  const { weights, snapshot } = await fetchCheckpointConfigs(rev, opts);
  const counters = opts.counters ?? { resolves: 0, ranges: 0, bytes: 0 };
  const out: SourceWeights[] = [];
  for (const file of weights) {
    if (file.expected.algorithm !== 'sha256') {
      throw new UserError(`${hub.endpoint} lists ${file.path} of ${hub.ref.repo} without its SHA-256, so it cannot be checked as it streams.`, 'Set up with --keep-source to download it into the Hugging Face cache first.');
    }
    const location = { kind: 'hub' as const, resolveUrl: resolveUrl(hub.endpoint, hub.ref.repo, commit, file.path), label: `${file.path} of ${hub.ref.repo}`, token: opts.token };
    const ranges = new HubFileRanges(location, counters);
    let tensors: Map<string, TensorInfo>;
    try {
      tensors = await remoteHeader(ranges, file, opts.signal);
    } catch (e) {
      throw hub.toUserError(e, file.path);
    }
    // The reader thread starts from this resolve: one per file while the signed address lasts.
    out.push({ name: file.path, size: file.size, location: { ...location, resolved: ranges.resolved }, tensors, sha256: file.expected.digest });
  }
  return {
    configDir: snapshot,
    weights: out,
    identity: `hub:${hub.endpoint}/${hub.ref.repo}@${commit}|${out.map((w) => `${w.name}:${w.sha256}`).join('|')}`,
    model: hub.ref.repo,
    revision: commit,
    remote: true,
  };
}
