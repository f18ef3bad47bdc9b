import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openModel } from '../../server/src/engine/open-model';
import { generationSettingsFor } from '../../server/src/inference/generation-settings';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/settings';
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
 * What the engine itself answers for each image: the tiny fixture opened directly (its own store, its own
 * conversion), the caption asked for with the generation settings the server is given. The server's answers
 * are compared with these, never with typed-in strings.
 */
export async function engineCaptions(images: readonly string[], generation: TestGeneration): Promise<Map<string, EngineCaption>> {
  const store = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-engine-'));
  const opened = await openModel({ model: tinyCheckpointDir, precision: 'fp32', device: 'cpu', threads: 0, store, offline: true });
  try {
    const settings = generationSettingsFor({ ...DEFAULT_SETTINGS.generation, minNewTokens: 0, ...generation }, 'caption');
    const captions = new Map<string, EngineCaption>();
    for (const image of images) {
      const [encoded] = await opened.pipeline.encodeImages([image]);
      const { answers } = await opened.pipeline.generate([{ image: encoded, prompt: '' }], settings);
      captions.set(image, { text: answers[0].text, alternatives: answers[0].alternatives.map((a) => a.text) });
    }
    return captions;
  } finally {
    await opened.pipeline.dispose();
    fs.rmSync(store, { recursive: true, force: true });
  }
}
