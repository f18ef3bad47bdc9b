import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openModel } from '../../server/src/engine/open-model';
import type { Blip2Pipeline } from '../../server/src/engine/pipeline';
import { generationSettingsFor } from '../../server/src/inference/generation-settings';
import { DEFAULT_SETTINGS, type Blip2Settings } from '../../server/src/protocol/settings';
import { tinyCheckpointDir } from './paths';

export interface EngineCaption {
  text: string;
  alternatives: string[];
}

/** The `blip2.generation` settings a test server gets, as the engine takes them. */
export interface TestGeneration {
  maxNewTokens: number;
  minNewTokens?: number;
  numBeams: number;
  alternatives: number;
  repetitionPenalty: number;
  noRepeatNgramSize: number;
}

/**
 * A caption as the server computes it for `blip2.generation` settings `g`, and the alternatives its quick fix
 * offers: the beams of a search run for them, other than the caption (as features/requests/image-requests.ts
 * otherCaptions picks them).
 */
export async function captionWithAlternatives(pipeline: Blip2Pipeline, image: string, prompt: string, g: Blip2Settings['generation']): Promise<EngineCaption> {
  const [encoded] = await pipeline.encodeImages([image]);
  const { answers } = await pipeline.generate([{ image: encoded, prompt }], generationSettingsFor(g, 'caption'));
  const text = answers[0].text;
  if (g.alternatives <= 0) return { text, alternatives: [] };
  const beams = (await pipeline.generate([{ image: encoded, prompt }], generationSettingsFor(g, 'alternatives'))).answers[0];
  const alternatives = [...new Set([beams.text, ...beams.alternatives.map((a) => a.text)])].filter((t) => t.trim() && t !== text).slice(0, g.alternatives);
  return { text, alternatives };
}

/**
 * What the engine itself answers for each image: the tiny fixture opened directly (its own store, its own
 * conversion), the caption asked for with the generation settings the server is given. The server's answers
 * are compared with these, never with typed-in strings.
 */
export async function engineCaptions(images: readonly string[], generation: TestGeneration): Promise<Map<string, EngineCaption>> {
  const store = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-engine-'));
  const opened = await openModel({ model: tinyCheckpointDir, precision: 'fp32', device: 'cpu', threads: 0, store, offline: true });
  try {
    const g = { ...DEFAULT_SETTINGS.generation, minNewTokens: 0, ...generation };
    const captions = new Map<string, EngineCaption>();
    for (const image of images) captions.set(image, await captionWithAlternatives(opened.pipeline, image, '', g));
    return captions;
  } finally {
    await opened.pipeline.dispose();
    fs.rmSync(store, { recursive: true, force: true });
  }
}
