// Requests decoded together as rows of one batch (left-padded, ending independently) get exactly the answer each
// gets alone: the tiny fixture at fp32, distinct images and prompts, rows ending at different steps.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Blip2Pipeline, type Answer, type EncodedImage, type GenerationSettings } from '../../server/src/engine/pipeline';
import { referenceDir } from '../helpers/paths';
import { convertedTiny } from '../helpers/tiny-model';

const IMAGES = ['astronaut.png', 'camera-gray.png', 'cat.png', 'coffee.png', 'horse-rgba.png', 'noise-palette.gif', 'rocket.jpg', 'wide-alpha.png'];
const PROMPTS = ['', 'Question: what is this? Answer:', 'a photo of', '', 'Question: how many cats are there? Answer:', '', 'a', 'Question: what color is it? Answer:'];

describe('batched generation (tiny-blip2, fp32)', () => {
  let pipeline: Blip2Pipeline;
  let images: EncodedImage[];
  let settings: GenerationSettings;

  before(async () => {
    pipeline = await Blip2Pipeline.load(await convertedTiny('fp32'), { device: 'cpu', threads: 0 });
    images = await pipeline.encodeImages(IMAGES.map((f) => path.join(referenceDir, 'images', f)));
    // The tiny model's captions are mostly ")": ending on it makes the rows end at different steps.
    const [paren] = pipeline.model.tokenizer.encode(')');
    settings = { maxNewTokens: 12, noRepeatNgramSize: 3, stopTokenIds: [paren] };
  });
  after(() => pipeline?.dispose());

  const alone = async (i: number, s = settings): Promise<Answer> => (await pipeline.generate([{ image: images[i], prompt: PROMPTS[i] }], s)).answers[0];

  it('answers every request as it is answered alone, each as soon as its row ends', async () => {
    const order: number[] = [];
    const { answers } = await pipeline.generate(
      images.map((image, i) => ({ image, prompt: PROMPTS[i] })),
      settings,
      { onAnswer: (row) => order.push(row) },
    );
    const lengths = answers.map((a) => a.tokenIds.length);
    assert.ok(new Set(lengths).size >= 3, `rows end at different steps (${lengths})`);
    for (let i = 0; i < IMAGES.length; i++) {
      const single = await alone(i);
      assert.deepEqual(answers[i].tokenIds, single.tokenIds, `${IMAGES[i]}: tokens`);
      assert.equal(answers[i].text, single.text, `${IMAGES[i]}: text`);
      assert.equal(answers[i].finishReason, single.finishReason);
      assert.equal(answers[i].promptTokens, single.promptTokens);
    }
    // Answered in the order the rows ended: shorter answers first.
    assert.deepEqual(order.map((row) => lengths[row]), [...lengths].sort((a, b) => a - b));
  });

  it('ends a cancelled row at the next step and leaves the others as they were', async () => {
    const seen = new Map<number, number>();
    const { answers } = await pipeline.generate(
      images.slice(0, 4).map((image, i) => ({ image, prompt: PROMPTS[i] })),
      { maxNewTokens: 12 },
      {
        onToken: (row) => seen.set(row, (seen.get(row) ?? 0) + 1),
        isCancelled: (row) => row === 1 && (seen.get(1) ?? 0) >= 3,
      },
    );
    assert.equal(answers[1].finishReason, 'cancelled');
    assert.equal(answers[1].tokenIds.length, 3);
    for (const i of [0, 2, 3]) {
      const single = await alone(i, { maxNewTokens: 12 });
      assert.deepEqual(answers[i].tokenIds, single.tokenIds);
      assert.equal(answers[i].finishReason, 'length');
    }
  });

  it('stops a row at a stop string and leaves the string out of the text', async () => {
    const full = await alone(1, { maxNewTokens: 12 });
    const stop = full.text.slice(3, 5);
    assert.ok(stop.trim().length > 0, `a stop string inside "${full.text}"`);
    const { answers } = await pipeline.generate([{ image: images[1], prompt: PROMPTS[1] }, { image: images[0], prompt: PROMPTS[0] }], { maxNewTokens: 12, stop: [stop] });
    assert.equal(answers[0].finishReason, 'stop');
    assert.equal(answers[0].text, full.text.slice(0, full.text.indexOf(stop)).trim());
    assert.ok(answers[0].tokenIds.length < full.tokenIds.length);
  });
});
