// The inference service on the tiny checkpoint: real worker thread, real model, real caches.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CancellationTokenSource } from 'vscode-languageserver';
import { openModel, type OpenedModel } from '../../server/src/engine/open-model';
import { fitChatPrompt, promptBudget } from '../../server/src/engine/preprocess/prompts';
import { convertedDirForCheckpoint, storePaths } from '../../server/src/engine/store/model-store';
import { generationSettingsFor } from '../../server/src/inference/generation-settings';
import { createInferenceService } from '../../server/src/inference/service';
import type { InferenceService } from '../../server/src/inference/types';
import type { UserError } from '../../server/src/engine/errors';
import type { GenerationResult, ModelStatus } from '../../server/src/protocol/messages';
import { DEFAULT_SETTINGS, type Blip2Settings } from '../../server/src/protocol/settings';
import { tinyCheckpointDir } from '../helpers/paths';
import { imagePath } from '../helpers/reference';

const never = new CancellationTokenSource().token;

function settings(over: Partial<Blip2Settings['generation']> = {}): Blip2Settings {
  return {
    ...DEFAULT_SETTINGS,
    model: tinyCheckpointDir,
    precision: 'fp32',
    device: 'cpu',
    threads: 1,
    generation: { ...DEFAULT_SETTINGS.generation, maxNewTokens: 12, ...over },
  };
}

/**
 * The set-up the suites share, registered on the enclosing describe: a temporary folder, the tiny model opened
 * directly (what the engine answers is the expected value) and the services a test makes, disposed after it.
 */
function serviceSuite(prefix: string) {
  const suite = {
    root: '',
    engine: undefined as unknown as OpenedModel,
    services: [] as InferenceService[],
    /** What the engine itself answers with the service's settings: the caption, then the alternatives. */
    async engineCaption(file: string, s: Blip2Settings): Promise<string[]> {
      const [image] = await suite.engine.pipeline.encodeImages([file]);
      const g = s.generation;
      const { answers } = await suite.engine.pipeline.generate([{ image, prompt: g.captionPrompt }], generationSettingsFor(g, 'caption'));
      return [answers[0].text, ...answers[0].alternatives.map((a) => a.text)];
    },
  };
  before(async () => {
    suite.root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    suite.engine = await openModel({ model: tinyCheckpointDir, precision: 'fp32', device: 'cpu', threads: 1, store: path.join(suite.root, 'store'), offline: true });
  });
  after(async () => {
    await Promise.all(suite.services.map((s) => s.dispose()));
    await suite.engine?.pipeline.dispose();
    fs.rmSync(suite.root, { recursive: true, force: true });
  });
  return suite;
}

describe('inference service', () => {
  const suite = serviceSuite('blip2-service-');
  const make = (s: Blip2Settings, cacheDir?: string) => {
    const svc = createInferenceService({ settings: { ...s, modelStore: path.join(suite.root, 'store') }, cacheDir });
    suite.services.push(svc);
    return svc;
  };

  it('captions as the engine does, with the other beams as alternatives, and serves the second request from the cache', async () => {
    const s = settings();
    const svc = make(s, path.join(suite.root, 'cache-a'));
    const expected = await suite.engineCaption(imagePath('cat.png'), s);
    const first = await svc.caption({ kind: 'file', path: imagePath('cat.png') }, { priority: 'interactive' }, never);
    assert.deepEqual([first.text, ...first.alternatives], expected);
    assert.equal(first.cached, false);
    assert.equal(first.precision, 'fp32');
    const second = await svc.caption({ kind: 'file', path: imagePath('cat.png') }, { priority: 'interactive' }, never);
    assert.equal(second.text, first.text);
    assert.equal(second.cached, true);
    assert.deepEqual(
      { generations: svc.counters().generations, hits: svc.counters().captionCacheHits, vision: svc.counters().visionRuns },
      { generations: 1, hits: 1, vision: 1 },
    );
  });

  it('keeps results on disk: a new service (a restart) answers from the cache without running the model', async () => {
    const s = settings();
    const dir = path.join(suite.root, 'cache-b');
    const before1 = make(s, dir);
    const first = await before1.caption({ kind: 'file', path: imagePath('coffee.png') }, { priority: 'interactive' }, never);
    await before1.dispose();
    const after1 = make(s, dir);
    const again = await after1.caption({ kind: 'file', path: imagePath('coffee.png') }, { priority: 'interactive' }, never);
    assert.equal(again.text, first.text);
    assert.equal(again.cached, true);
    assert.equal(after1.counters().generations, 0);
    assert.equal(after1.status().state, 'unloaded');
    assert.ok(fs.readdirSync(path.join(dir, 'answers')).length >= 1);
  });

  it('a second question about an image skips the vision encoder', async () => {
    const svc = make(settings({ numBeams: 1 }));
    const image = { kind: 'file' as const, path: imagePath('astronaut.png') };
    await svc.ask(image, 'what is in the picture?', { priority: 'interactive' }, never);
    await svc.ask(image, 'what color is it?', { priority: 'interactive', history: [{ question: 'what is in the picture?', answer: 'a man' }] }, never);
    assert.equal(svc.counters().visionRuns, 1);
    assert.equal(svc.counters().visionCacheHits, 1);
    assert.equal(svc.counters().generations, 2);
  });

  it('a chat that outgrows the context is answered from its latest turns; a question that alone does not fit is refused', async () => {
    const s = settings({ numBeams: 1 });
    const svc = make(s);
    const image = { kind: 'file' as const, path: imagePath('cat.png') };
    const history = Array.from({ length: 5000 }, (_, i) => ({ question: `question ${i}`, answer: `answer ${i}` }));
    const answer = await svc.ask(image, 'and now?', { priority: 'interactive', history }, never);
    // What the engine answers for the turns that fit its context, counted with its own tokenizer.
    const m = suite.engine.pipeline.model;
    const g = generationSettingsFor(s.generation, 'answer');
    const budget = promptBudget({ maxPositions: m.config.text.maxPositionEmbeddings, numQueryTokens: m.config.numQueryTokens, maxNewTokens: g.maxNewTokens });
    const prompt = fitChatPrompt(history, 'and now?', (text) => m.tokenizer.encode(text).length, budget);
    assert.match(prompt, /^Question: question \d+ Answer: answer \d+\. .*Question: question 4999 Answer: answer 4999\. Question: and now\? Answer:$/);
    const [encoded] = await suite.engine.pipeline.encodeImages([imagePath('cat.png')]);
    assert.equal(answer.text, (await suite.engine.pipeline.generate([{ image: encoded, prompt }], g)).answers[0].text);
    // A megabyte question: one sentence, not onnxruntime's "indices element out of data bounds".
    await assert.rejects(
      svc.ask(image, 'why is the cat there? '.repeat(50_000), { priority: 'interactive' }, never),
      /^UserError: The prompt is \d+ tokens long, more than the \d+ that fit in the model's context of 128 positions/,
    );
  });

  it('decodes captions of distinct images asked together as rows of one batch, each as the engine captions it alone', async () => {
    const s = settings({ numBeams: 1, noRepeatNgramSize: 3 });
    const svc = make(s);
    const files = ['astronaut.png', 'camera-gray.png', 'horse-rgba.png', 'noise-palette.gif', 'wide-alpha.png'].map(imagePath);
    const results = await Promise.all(files.map((file) => svc.caption({ kind: 'file', path: file }, { priority: 'background' }, never)));
    for (let i = 0; i < files.length; i++) assert.equal(results[i].text, (await suite.engineCaption(files[i], s))[0], files[i]);
    const c = svc.counters();
    assert.equal(c.generations, files.length);
    // The captions wait behind the encodings and start together; the last one may miss the batch if its encoding
    // ends just as the batch starts.
    assert.ok(c.batches <= 2, `${c.batches} batches for ${c.generations} captions`);
  });

  it('with maxBatch 1, captions one after another', async () => {
    const svc = createInferenceService({ settings: { ...settings({ numBeams: 1 }), modelStore: path.join(suite.root, 'store') }, maxBatch: 1 });
    suite.services.push(svc);
    const files = ['astronaut.png', 'camera-gray.png', 'horse-rgba.png'].map(imagePath);
    await Promise.all(files.map((file) => svc.caption({ kind: 'file', path: file }, { priority: 'background' }, never)));
    assert.deepEqual({ batches: svc.counters().batches, generations: svc.counters().generations }, { batches: 3, generations: 3 });
  });

  it('duplicate requests share one run', async () => {
    const svc = make(settings());
    const image = { kind: 'file' as const, path: imagePath('rocket.jpg') };
    const [a, b] = await Promise.all([
      svc.caption(image, { priority: 'background' }, never),
      svc.caption(image, { priority: 'interactive' }, never),
    ]);
    assert.equal(a.text, b.text);
    assert.equal(svc.counters().generations, 1);
    assert.equal(svc.counters().sharedRequests, 1);
  });

  it('streams partial answers and reports status changes', async () => {
    const svc = make(settings({ numBeams: 1 }));
    const states: string[] = [];
    svc.onStatusChange((st: ModelStatus) => states.push(st.state));
    const partials: string[] = [];
    const answer = await svc.ask({ kind: 'file', path: imagePath('cat.png') }, 'how many cats are there?', { priority: 'interactive', onPartial: (t) => partials.push(t) }, never);
    assert.ok(partials.length >= 1);
    assert.equal(partials.at(-1), answer.text);
    assert.ok(states.includes('loading') && states.includes('busy') && states.at(-1) === 'ready', states.join(','));
  });

  it('a settings change that reloads the model never reports "unloaded" over the load started right after it', async () => {
    const s = settings();
    const svc = make(s);
    await svc.setUp(undefined, { report: () => undefined }, never);
    const states: string[] = [];
    svc.onStatusChange((st: ModelStatus) => states.push(st.state));
    // The thread count is read when the model loads: the worker ends and the model loads again, here at once.
    svc.updateSettings({ ...s, modelStore: path.join(suite.root, 'store'), threads: 2 });
    const up = svc.setUp(undefined, { report: () => undefined }, never);
    // The old worker ends after the new load began; its end must not be reported as the state of the new one.
    assert.equal((await up).state, 'ready');
    assert.ok(!states.includes('unloaded'), states.join(','));
    assert.equal(states[0], 'loading');
    assert.equal((await svc.caption({ kind: 'file', path: imagePath('cat.png') }, { priority: 'interactive' }, never)).text, (await suite.engineCaption(imagePath('cat.png'), s))[0]);
    assert.equal(svc.status().state, 'ready');
  });

  it('says in the model status why loads stay slow when the optimized copies cannot be made', async () => {
    const store = path.join(suite.root, 'store-int4');
    const s = { ...settings(), precision: 'int4' as const, modelStore: store };
    const first = createInferenceService({ settings: s });
    suite.services.push(first);
    const ready = await first.setUp(undefined, { report: () => undefined }, never);
    assert.equal(ready.state, 'ready');
    assert.equal(ready.notes, undefined);
    await first.dispose();
    // Where the copies go is now a file: the next load can neither open nor make them.
    const dir = await convertedDirForCheckpoint(storePaths(store), tinyCheckpointDir, 'int4');
    fs.rmSync(path.join(dir, 'optimized'), { recursive: true, force: true });
    fs.writeFileSync(path.join(dir, 'optimized'), '');
    const second = createInferenceService({ settings: s });
    suite.services.push(second);
    const slow = await second.setUp(undefined, { report: () => undefined }, never);
    assert.equal(slow.state, 'ready');
    // Only onnxruntime's decoder keeps a copy (the vision encoder and the embedding are used as converted).
    assert.equal(slow.notes?.length, 1, JSON.stringify(slow));
    assert.match(slow.notes![0], /^Loading decoder_model_merged_q4\.onnx stays slow .* could not be written in .*optimized/);
    const caption = await second.caption({ kind: 'file', path: imagePath('cat.png') }, { priority: 'interactive' }, never);
    assert.ok(caption.text.length > 0);
  });

  it('reports a missing model as noModel with a sentence, without touching the network', async () => {
    const svc = make({ ...settings(), model: 'Salesforce/blip2-opt-2.7b' });
    await assert.rejects(svc.caption({ kind: 'file', path: imagePath('cat.png') }, { priority: 'interactive' }, never), /The model Salesforce\/blip2-opt-2.7b is not on this machine yet. Set it up once/);
    assert.equal(svc.status().state, 'noModel');
    assert.match(svc.status().message ?? '', /Salesforce\/blip2-opt-2.7b/);
  });

  it('a model only partly downloaded is still "no model" (set-up is offered), not an error', async () => {
    const hfHome = path.join(suite.root, 'hf-partial');
    const commit = 'a'.repeat(40);
    const repoDir = path.join(hfHome, 'hub', 'models--Salesforce--blip2-opt-2.7b');
    fs.mkdirSync(path.join(repoDir, 'snapshots', commit), { recursive: true });
    fs.mkdirSync(path.join(repoDir, 'refs'), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'refs', 'main'), commit);
    fs.copyFileSync(path.join(tinyCheckpointDir, 'config.json'), path.join(repoDir, 'snapshots', commit, 'config.json'));
    const saved = process.env.HF_HOME;
    process.env.HF_HOME = hfHome; // the worker takes the environment when it starts
    try {
      const svc = make({ ...settings(), model: 'Salesforce/blip2-opt-2.7b' });
      await assert.rejects(svc.caption({ kind: 'file', path: imagePath('cat.png') }, { priority: 'interactive' }, never), (e: Error & { kind?: string }) => e.kind === 'noModel');
      assert.equal(svc.status().state, 'noModel');
    } finally {
      if (saved === undefined) delete process.env.HF_HOME;
      else process.env.HF_HOME = saved;
    }
  });

  it('a missing image is one clear sentence', async () => {
    const svc = make(settings());
    await assert.rejects(svc.caption({ kind: 'file', path: path.join(suite.root, 'gone.png') }, { priority: 'interactive' }, never), /The image file does not exist: .*gone\.png/);
  });
});

describe('inference service: cancellation', () => {
  let root: string;
  let svc: InferenceService;
  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-cancel-'));
    // Slow steps make the run long enough to cancel mid-way; the counters, not the clock, show what happened.
    process.env.BLIP2_DEBUG_STEP_DELAY_MS = '20';
    svc = createInferenceService({ settings: { ...settings({ maxNewTokens: 100, minNewTokens: 100, numBeams: 1 }), modelStore: path.join(root, 'store') } });
    delete process.env.BLIP2_DEBUG_STEP_DELAY_MS;
  });
  after(async () => {
    await svc.dispose();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('cancelling the only waiter stops the generation at the next token', async () => {
    const source = new CancellationTokenSource();
    let partials = 0;
    const pending = svc.ask({ kind: 'file', path: imagePath('cat.png') }, 'what is this?', {
      priority: 'interactive',
      onPartial: () => {
        if (++partials === 3) source.cancel();
      },
    }, source.token);
    await assert.rejects(pending, /Cancelled/);
    // The worker reports the cancellation when it stops; wait for that signal through the counters.
    while (svc.counters().cancelledGenerations === 0) await new Promise((r) => setImmediate(r));
    const c = svc.counters();
    assert.equal(c.generations, 1);
    assert.ok(c.tokensGenerated >= 3 && c.tokensGenerated < 100, `generated ${c.tokensGenerated}`);
  });

  it('a request cancelled before it arrives is refused at once, though its token never fires, and a run it shares goes on', { timeout: 60_000 }, async () => {
    // Cancelled before its token is read: the token is CancellationToken.Cancelled, whose event never fires, as
    // the connection gives a handler for a request the client cancelled while it was still queued.
    const early = () => {
      const source = new CancellationTokenSource();
      source.cancel();
      return source.token;
    };
    await assert.rejects(svc.caption({ kind: 'file', path: imagePath('rocket.jpg') }, { priority: 'interactive' }, early()), /Cancelled/);
    const image = { kind: 'file' as const, path: imagePath('astronaut.png') };
    const kept = svc.ask(image, 'who is this?', { priority: 'interactive' }, never);
    await assert.rejects(svc.ask(image, 'who is this?', { priority: 'interactive' }, early()), /Cancelled/);
    assert.equal((await kept).cached, false);
  });

  it('a run shared by two waiters continues when only one cancels', async () => {
    const one = new CancellationTokenSource();
    const image = { kind: 'file' as const, path: imagePath('coffee.png') };
    const opts = { priority: 'interactive' as const, onPartial: () => one.cancel() };
    const a = svc.ask(image, 'what is this?', opts, one.token);
    const b = svc.ask(image, 'what is this?', { priority: 'interactive' }, never);
    await assert.rejects(a, /Cancelled/);
    const answer = await b;
    assert.equal(answer.cached, false);
    assert.equal(svc.counters().cancelledGenerations, 1);
  });
});

// A run that never settles (a crash nobody reports) must fail the test, not hang the suite.
describe('inference service under strain', { timeout: 120_000 }, () => {
  const suite = serviceSuite('blip2-strain-');
  const gen = { maxNewTokens: 12, numBeams: 1, alternatives: 0 };

  /** A service whose worker pauses after every token, so runs overlap; its worker started with `env` set. */
  async function slowService(over: { maxQueued?: number; env?: Record<string, string> } = {}): Promise<InferenceService> {
    const env: Record<string, string> = { BLIP2_DEBUG_STEP_DELAY_MS: '30', ...over.env };
    Object.assign(process.env, env);
    const svc = createInferenceService({ settings: { ...settings(gen), modelStore: path.join(suite.root, 'store') }, maxQueued: over.maxQueued });
    suite.services.push(svc);
    try {
      // The worker copies the environment when it starts, at the first job: start it now.
      await svc.setUp(undefined, { report: () => undefined }, never);
    } finally {
      for (const key of Object.keys(env)) delete process.env[key];
    }
    return svc;
  }

  /** Resolves once `svc` reports a run in progress. */
  function untilBusy(svc: InferenceService): Promise<void> {
    return new Promise((resolve) => {
      const sub = svc.onStatusChange((s) => {
        if (s.state === 'busy') {
          sub.dispose();
          resolve();
        }
      });
    });
  }

  it('a worker that dies mid-generation is restarted: only the run in flight fails, the queued one is answered', async () => {
    const crashFile = path.join(suite.root, 'crash-now');
    const crashed = 'The inference worker stopped unexpectedly (exit code 70); it is restarted for the next request.';
    const svc = await slowService({ env: { BLIP2_DEBUG_CRASH_FILE: crashFile } });
    const seen: ModelStatus[] = [];
    svc.onStatusChange((s) => seen.push(s));
    let queued: Promise<GenerationResult> | undefined;
    let crashArmed = false;
    const inFlight = svc.ask({ kind: 'file', path: imagePath('cat.png') }, 'what is this?', { priority: 'interactive', onPartial: () => {
      // Asked only once the ask is generating, so the caption is sure to wait behind it: asked together, either
      // image may be read first, and a caption that ran first leaves nothing to restart the worker for.
      queued ??= svc.caption({ kind: 'file', path: imagePath('coffee.png') }, { priority: 'interactive' }, never);
      // Once it waits (its image's encoding, behind this run), the worker dies at its next token.
      if (!crashArmed && svc.status().queued >= 2) {
        crashArmed = true;
        fs.writeFileSync(crashFile, '');
      }
    } }, never);
    await assert.rejects(inFlight, /^UserError: The inference worker stopped unexpectedly \(exit code 70\); it is restarted for the next request\.$/);
    assert.equal(fs.existsSync(crashFile), false, 'the crash happened');
    assert.ok(queued, 'the caption was asked');
    const answered = await queued;
    assert.equal(answered.text, (await suite.engineCaption(imagePath('coffee.png'), settings(gen)))[0]);
    // The crash is reported as it happened (no model any more, and why), then the queued run loads it again.
    const crash = seen.findIndex((s) => s.state === 'unloaded');
    assert.equal(seen[crash]?.message, crashed, seen.map((s) => s.state).join(','));
    assert.equal(seen[crash + 1]?.state, 'loading');
    assert.equal(svc.status().state, 'ready');
    const again = await svc.caption({ kind: 'file', path: imagePath('rocket.jpg') }, { priority: 'interactive' }, never);
    assert.equal(again.text, (await suite.engineCaption(imagePath('rocket.jpg'), settings(gen)))[0]);
  });

  it('the queue has a limit: interactive work displaces background work, and beyond that it says it is full', async () => {
    const svc = await slowService({ maxQueued: 2 });
    const image = (name: string) => ({ kind: 'file' as const, path: imagePath(name) });
    const outcome = (p: Promise<{ text: string }>) => p.then((r) => r.text, (e: UserError) => `refused: ${e.line}`);
    const queuedAtLeast = async (n: number) => {
      while (svc.status().queued < n) await new Promise((r) => setTimeout(r, 5));
    };
    const busy = untilBusy(svc);
    const running = outcome(svc.caption(image('cat.png'), { priority: 'interactive' }, never));
    await busy;
    const backgroundA = outcome(svc.caption(image('coffee.png'), { priority: 'background' }, never));
    await queuedAtLeast(2);
    const backgroundB = outcome(svc.caption(image('rocket.jpg'), { priority: 'background' }, never));
    await queuedAtLeast(3);
    // Full (one running, two waiting): each interactive request takes the place of the latest background one.
    const first = outcome(svc.caption(image('astronaut.png'), { priority: 'interactive' }, never));
    const full = 'refused: BLIP-2 is busy: 2 captions and answers are already waiting. Try again when some of them are done.';
    assert.equal(await backgroundB, full);
    const second = outcome(svc.caption(image('horse-rgba.png'), { priority: 'interactive' }, never));
    assert.equal(await backgroundA, full);
    await queuedAtLeast(3);
    // Nothing left to displace: refused with the sentence.
    assert.equal(await outcome(svc.caption(image('camera-gray.png'), { priority: 'interactive' }, never)), full);
    assert.equal(await running, (await suite.engineCaption(imagePath('cat.png'), settings(gen)))[0]);
    assert.equal(await first, (await suite.engineCaption(imagePath('astronaut.png'), settings(gen)))[0]);
    assert.equal(await second, (await suite.engineCaption(imagePath('horse-rgba.png'), settings(gen)))[0]);
  });

  it('reads an image once: the bytes hashed are the bytes captioned, even if the file changes while the run waits', async () => {
    const svc = await slowService();
    const file = path.join(suite.root, 'changing.png');
    fs.copyFileSync(imagePath('cat.png'), file);
    const busy = untilBusy(svc);
    const first = svc.caption({ kind: 'file', path: imagePath('rocket.jpg') }, { priority: 'interactive' }, never);
    await busy;
    const waiting = svc.caption({ kind: 'file', path: file }, { priority: 'interactive' }, never);
    while (svc.status().queued < 2) await new Promise((r) => setTimeout(r, 5));
    // Read and hashed by now; what the model sees must be these bytes, not the file as it is when the run starts.
    fs.copyFileSync(imagePath('coffee.png'), file);
    await first;
    assert.equal((await waiting).text, (await suite.engineCaption(imagePath('cat.png'), settings(gen)))[0]);
    // And the new content is a new image: its own hash, its own caption.
    assert.equal((await svc.caption({ kind: 'file', path: file }, { priority: 'interactive' }, never)).text, (await suite.engineCaption(imagePath('coffee.png'), settings(gen)))[0]);
  });
});
