// The packaged VSIX under test, and what is inside it.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './env';

let built: string | undefined;

/**
 * The VSIX to test: BLIP2_E2E_VSIX when the runner (scripts/test-e2e.sh) packaged it already, otherwise
 * `scripts/package.mjs` is run once per test process for this machine's target.
 */
export function packagedVsix(): string {
  const given = process.env.BLIP2_E2E_VSIX;
  if (given) {
    if (!fs.existsSync(given)) throw new Error(`BLIP2_E2E_VSIX names a missing file: ${given}`);
    return given;
  }
  if (!built) {
    const out = execFileSync(process.execPath, [path.join(repoRoot, 'scripts', 'package.mjs')], {
      cwd: repoRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    built = out.trim().split('\n').at(-1)!;
  }
  return built;
}

export interface ZipEntry {
  name: string;
  /** Uncompressed size in bytes. */
  size: number;
  compressedSize: number;
}

/** The entries of a zip file, read from its central directory (no unzip needed). */
export function listZip(file: string): ZipEntry[] {
  const buf = fs.readFileSync(file);
  // End of central directory: signature 0x06054b50 within the last 64 KiB + 22 bytes.
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error(`${file} is not a zip file`);
  const count = buf.readUInt16LE(eocd + 10);
  let at = buf.readUInt32LE(eocd + 16);
  const entries: ZipEntry[] = [];
  for (let n = 0; n < count; n++) {
    if (buf.readUInt32LE(at) !== 0x02014b50) throw new Error(`${file}: bad central directory entry ${n}`);
    const compressedSize = buf.readUInt32LE(at + 20);
    const size = buf.readUInt32LE(at + 24);
    const nameLength = buf.readUInt16LE(at + 28);
    const extraLength = buf.readUInt16LE(at + 30);
    const commentLength = buf.readUInt16LE(at + 32);
    entries.push({ name: buf.toString('utf8', at + 46, at + 46 + nameLength), size, compressedSize });
    at += 46 + nameLength + extraLength + commentLength;
  }
  return entries;
}
