import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '..', '..');
export const fixturesDir = path.join(repoRoot, 'test', 'fixtures');
export const tinyCheckpointDir = path.join(fixturesDir, 'tiny-blip2');
export const referenceDir = path.join(tinyCheckpointDir, 'reference');
export const realConfigDir = path.join(fixturesDir, 'blip2-opt-2.7b-config');

/** A temporary folder for one test, removed when the test ends. */
export function testDir(t: { after(fn: () => unknown): void }, prefix = 'blip2-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
