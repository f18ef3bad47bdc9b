/**
 * What setting up a model will cost, said before the first byte of weights moves: how much is downloaded, how much
 * disk is used at the peak and at the end, where, and how much is free there. The numbers come from what the code
 * will do: the source's sizes from the Hub's listing, the conversion's from the converter's own plan of what it
 * writes (convert/plan.ts), never from a model card.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Precision } from '../convert/precision';
import { UserError } from '../errors';
import { formatBytes } from '../units';
import { displayPath } from './hf-cache';

export type SetUpKind =
  /** Converted already: nothing to do. */
  | 'ready'
  /** A checkpoint on disk (a folder, or the Hugging Face cache) converted here. */
  | 'convert'
  /** A Hub checkpoint converted as it streams, never stored. */
  | 'stream'
  /** A Hub checkpoint downloaded into the Hugging Face cache and kept, then converted. */
  | 'download'
  /** A converted model downloaded from a Hub repository: no conversion. */
  | 'converted';

export interface SetUpCost {
  model: string;
  precision: Precision;
  kind: SetUpKind;
  /** Bytes fetched from the network. */
  downloadBytes: number;
  /** The checkpoint's weights, and how they are stored (a half-size source downloads half the bytes). */
  sourceBytes: number;
  sourceDtype?: 'float32' | 'float16' | 'bfloat16';
  /** Disk used at the peak of set-up, and once it is done, on top of what is used now. */
  peakDiskBytes: number;
  finalDiskBytes: number;
  /** Of those: the optimized copy onnxruntime writes at the first load (runtime/ort.ts), where one is kept. */
  firstLoadBytes: number;
  /** Where the conversion goes, and what is free on that disk now. */
  storeDir: string;
  freeBytes?: number;
  /** Where a kept checkpoint goes (kind 'download'), and what is free there. */
  cacheDir?: string;
  cacheFreeBytes?: number;
}

/** Free bytes on the disk that holds `dir`, or would hold it once made (its nearest existing parent). */
export function freeBytesAt(dir: string): number | undefined {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      const s = fs.statfsSync(d);
      return s.bavail * s.bsize;
    } catch {
      if (path.dirname(d) === d) return undefined;
    }
  }
}

/** The sentence that states the cost, for a notification, the server's message or the terminal. */
export function describeCost(c: SetUpCost): string {
  const where = displayPath(c.storeDir);
  const free = c.freeBytes !== undefined ? ` (${formatBytes(c.freeBytes)} free)` : '';
  const half = c.sourceDtype && c.sourceDtype !== 'float32' ? `, a ${c.sourceDtype} checkpoint, half the size of the float32 one` : '';
  switch (c.kind) {
    case 'ready':
      return `${c.model} is already set up at ${c.precision} in ${where}.`;
    case 'convert':
      return `Setting up ${c.model} converts it to ${c.precision} on this machine: nothing is downloaded; it needs ${formatBytes(c.finalDiskBytes)} of disk in ${where}${free}.`;
    case 'stream':
      return (
        `Setting up ${c.model} downloads ${formatBytes(c.downloadBytes)}${half} and converts it to ${c.precision} as it arrives, without storing the download: ` +
        `it needs at most ${formatBytes(c.peakDiskBytes)} of disk while it runs and ${formatBytes(c.finalDiskBytes)} after, in ${where}${free}.`
      );
    case 'download':
      return (
        `Setting up ${c.model} downloads ${formatBytes(c.downloadBytes)}${half} into the Hugging Face cache (${displayPath(c.cacheDir ?? '')}) and keeps it there, then converts it to ${c.precision}: ` +
        `it needs ${formatBytes(c.peakDiskBytes)} of disk in all, in ${where}${free}${c.cacheDir ? ' and the cache' : ''}.`
      );
    case 'converted':
      return `Setting up ${c.model} downloads its ${c.precision} conversion, ${formatBytes(c.downloadBytes)}, into ${where}${free}; nothing is converted here.`;
  }
}

/**
 * Refuses a set-up the disk cannot hold, before it starts, with what it needs and the ways out. Space the cache
 * and the store share is counted once per disk.
 */
export function checkSpace(c: SetUpCost): void {
  if (c.kind === 'ready') return;
  const short = (needed: number, free: number | undefined) => free !== undefined && free < needed;
  const cacheOnOwnDisk = c.kind === 'download' && c.cacheDir && c.cacheFreeBytes !== undefined && c.cacheFreeBytes !== c.freeBytes;
  const storeNeeds = cacheOnOwnDisk ? c.peakDiskBytes - c.sourceBytes : c.peakDiskBytes;
  if (short(storeNeeds, c.freeBytes)) {
    throw new UserError(
      `Setting up ${c.model} at ${c.precision} needs ${formatBytes(storeNeeds)} of free disk in ${displayPath(c.storeDir)}, and the disk there has only ${formatBytes(c.freeBytes!)} free.`,
      c.precision === 'int4'
        ? 'Free some space, or choose a folder on a bigger disk for converted models (the blip2.modelStore setting, or --store).'
        : 'Free some space, choose a folder on a bigger disk for converted models (the blip2.modelStore setting, or --store), or choose int4, the smallest precision.',
    );
  }
  if (cacheOnOwnDisk && short(c.sourceBytes, c.cacheFreeBytes)) {
    throw new UserError(
      `Keeping the download of ${c.model} needs ${formatBytes(c.sourceBytes)} in the Hugging Face cache (${displayPath(c.cacheDir!)}), and the disk there has only ${formatBytes(c.cacheFreeBytes!)} free.`,
      'Free some space, set HF_HOME to a folder on a bigger disk, or set up without keeping the download (it is then converted as it arrives).',
    );
  }
}

