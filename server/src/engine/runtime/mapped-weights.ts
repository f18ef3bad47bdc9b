// A graph's weights leave this process's resident memory while another graph runs, and come back from the page
// cache when the graph runs again.
//
// onnxruntime memory-maps the weight files (external data, and the optimized copies' repacked weights), and every
// page a run touches stays resident in the process until it is unmapped: after one caption both the vision encoder's
// and the decoder's weights are resident, although only one of the two runs at a time (int4: 1.06 + 1.39 GB).
// madvise(MADV_DONTNEED) on a graph's mappings drops its pages from this process without unmapping them; the file's
// pages stay in the page cache, so the next run faults them back in without reading the disk. Node has no madvise,
// so it is called through koffi's FFI; where that or /proc/self/smaps is missing (not Linux), release does nothing.
import * as fs from 'node:fs';

const MADV_DONTNEED = 4;

type Madvise = (addr: bigint, length: bigint, advice: number) => number;

let madviseFn: Madvise | null | undefined;

function madvise(): Madvise | null {
  if (madviseFn !== undefined) return madviseFn;
  madviseFn = null;
  if (process.platform !== 'linux') return null;
  try {
    const koffi = require('koffi') as typeof import('koffi');
    madviseFn = koffi.load('libc.so.6').func('int madvise(uintptr_t addr, size_t length, int advice)') as Madvise;
  } catch {
    // No prebuilt koffi for this platform, or not glibc: weights simply stay resident, as before.
  }
  return madviseFn;
}

interface Mapping {
  start: bigint;
  end: bigint;
  /** From smaps: kB of the mapping's pages this process wrote (private copies). Absent when read from maps. */
  anonymousKB?: number;
}

/**
 * The private mappings of `files` in a /proc/self/maps or /proc/self/smaps text, keyed by their address range.
 */
export function mappingsOf(files: readonly string[], text: string): Map<string, Mapping> {
  const wanted = new Set(files.map((f) => realPath(f)));
  const found = new Map<string, Mapping>();
  let current: Mapping | undefined;
  for (const line of text.split('\n')) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      current = undefined;
      if (header[3].endsWith('p') && wanted.has(header[4])) {
        current = { start: BigInt(`0x${header[1]}`), end: BigInt(`0x${header[2]}`) };
        found.set(`${header[1]}-${header[2]}`, current);
      }
      continue;
    }
    const anonymous = /^Anonymous:\s+(\d+) kB/.exec(line);
    if (anonymous && current) current.anonymousKB = Number(anonymous[1]);
  }
  return found;
}

function realPath(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return file;
  }
}

/** One graph's mapped weight files; none (nothing to release) for weights that stay resident. */
export class MappedWeights {
  /** The mappings found the first time, those no write had touched (see release). */
  private clean: Map<string, Mapping> | undefined;

  constructor(private readonly files: readonly string[]) {}

  /** Whether this process can release mapped pages at all (Linux with glibc, koffi's binary installed). */
  static get supported(): boolean {
    return madvise() !== null && fs.existsSync('/proc/self/smaps');
  }

  /**
   * Drops the weights' pages from this process; a later run of the graph maps them back from the page cache.
   * Call only while the graph is not running.
   */
  release(): void {
    const call = madvise();
    if (!call || this.files.length === 0) return;
    try {
      // A page written in a private mapping exists only in this process: dropping it would bring back the file's
      // bytes, so only mappings without one are ever released. smaps says so but takes about 0.1 s to read with a
      // full-size model's 1700 mappings; onnxruntime maps the weights once per session, so it is read once.
      this.clean ??= new Map([...mappingsOf(this.files, fs.readFileSync('/proc/self/smaps', 'utf8'))].filter(([, m]) => m.anonymousKB === 0));
      // Only ranges still mapped from the same file (maps is quick to read): an address range unmapped and reused
      // for other memory must never be dropped.
      const now = mappingsOf(this.files, fs.readFileSync('/proc/self/maps', 'utf8'));
      for (const [key, m] of this.clean) if (now.has(key)) call(m.start, m.end - m.start, MADV_DONTNEED);
    } catch {
      // /proc unreadable: the weights stay resident, as without this.
    }
  }
}
