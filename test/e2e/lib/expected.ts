// What the engine itself answers, with the generation settings the extension's server uses (the `blip2.*`
// defaults): the e2e tests compare what the editor shows with these, never with typed-in text.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openModel, type OpenedModel } from '../../../server/src/engine/open-model';
import { chatPrompt, questionPrompt, type ChatTurn } from '../../../server/src/engine/preprocess/prompts';
import { generationSettingsFor } from '../../../server/src/inference/generation-settings';
import { DEFAULT_SETTINGS } from '../../../server/src/protocol/settings';
import { captionWithAlternatives } from '../../helpers/engine-captions';
import { referenceImagesDir, tinyModelDir } from './env';

export interface Expected {
  text: string;
  alternatives: string[];
}

export class EngineOracle {
  private constructor(
    private readonly opened: OpenedModel,
    private readonly store: string,
  ) {}

  /** The tiny fixture at fp32 (the precision the e2e workspace sets), converted into its own store. */
  static async open(): Promise<EngineOracle> {
    const store = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-e2e-oracle-'));
    const opened = await openModel({ model: tinyModelDir, precision: 'fp32', device: 'cpu', threads: 0, store, offline: true });
    return new EngineOracle(opened, store);
  }

  /** A caption, and the alternatives the quick fix offers beside it. */
  caption(image: string): Promise<Expected> {
    return captionWithAlternatives(this.opened.pipeline, image, DEFAULT_SETTINGS.generation.captionPrompt, DEFAULT_SETTINGS.generation);
  }

  /** An answer in a chat: the earlier turns go into the prompt as the server puts them. */
  async answer(image: string, question: string, history: ChatTurn[] = []): Promise<Expected> {
    const [encoded] = await this.opened.pipeline.encodeImages([image]);
    const prompt = history.length ? chatPrompt(history, question) : questionPrompt(question);
    const { answers } = await this.opened.pipeline.generate([{ image: encoded, prompt }], generationSettingsFor(DEFAULT_SETTINGS.generation, 'answer'));
    return { text: answers[0].text, alternatives: [] };
  }

  async dispose(): Promise<void> {
    await this.opened.pipeline.dispose();
    fs.rmSync(this.store, { recursive: true, force: true });
  }
}

/** The engine's captions of reference images, by file name (`cat.png`), with the oracle opened and closed around them. */
export async function expectedCaptions(names: readonly string[]): Promise<Map<string, Expected>> {
  const oracle = await EngineOracle.open();
  try {
    const captions = new Map<string, Expected>();
    for (const name of names) captions.set(name, await oracle.caption(path.join(referenceImagesDir, name)));
    return captions;
  } finally {
    await oracle.dispose();
  }
}
