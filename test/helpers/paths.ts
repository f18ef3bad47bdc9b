import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '..', '..');
export const fixturesDir = path.join(repoRoot, 'test', 'fixtures');
export const tinyCheckpointDir = path.join(fixturesDir, 'tiny-blip2');
export const referenceDir = path.join(tinyCheckpointDir, 'reference');
export const realConfigDir = path.join(fixturesDir, 'blip2-opt-2.7b-config');
