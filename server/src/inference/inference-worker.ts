// The inference worker: owns the BLIP-2 model, so onnxruntime's blocking runs never stall the language server.
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { DamagedModelError, isCancelled, ModelUnavailableError, UserError } from '../engine/errors';
import { openModel, planModelSetUp, type OpenedModel } from '../engine/open-model';
import type { PrecisionChoice } from '../engine/convert/precision';
import type { GenerationSettings } from '../engine/pipeline';
import { fitChatPrompt, promptBudget } from '../engine/preprocess/prompts';
import type { Device } from '../engine/runtime/ort';
import { CANCEL_SLOT, MAX_BATCH_ROWS, type FromWorker, type PromptSpec, type ToWorker, type WorkerError } from './worker-protocol';

const port = parentPort!;
const cancelFlags = new Int32Array(workerData.cancelBuffer as SharedArrayBuffer);
// Diagnostic knob for tests that must cancel a generation mid-way: a pause after every token, in milliseconds.
const stepDelayMs = Number(process.env.BLIP2_DEBUG_STEP_DELAY_MS ?? 0);
// And for tests of a worker that dies mid-generation: at a token while this file exists, the file is removed and the
// worker ends as a crash would (once, so the worker the server starts next lives).
const crashFile = process.env.BLIP2_DEBUG_CRASH_FILE;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

let model: OpenedModel | undefined;
const controllers = new Map<number, AbortController>();

function send(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

function stopRequested(id: number): boolean {
  return Atomics.load(cancelFlags, CANCEL_SLOT) === id;
}

function rowCancelled(id: number, row: number): boolean {
  return Atomics.load(cancelFlags, CANCEL_SLOT + 1 + row) === id;
}

function toError(e: unknown): WorkerError {
  if (isCancelled(e)) return { kind: 'cancelled', message: 'Cancelled.' };
  if (e instanceof UserError) {
    const kind = e instanceof ModelUnavailableError ? 'noModel' : e instanceof DamagedModelError ? 'damaged' : 'user';
    return { kind, message: e.line };
  }
  return { kind: 'internal', message: e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e) };
}

async function handle(msg: ToWorker): Promise<void> {
  if (msg.type === 'cancel') {
    controllers.get(msg.id)?.abort();
    return;
  }
  const controller = new AbortController();
  controllers.set(msg.id, controller);
  try {
    switch (msg.type) {
      case 'load': {
        if (model) await model.pipeline.dispose();
        model = undefined;
        const s = msg.settings;
        model = await openModel({
          model: s.model,
          precision: s.precision as PrecisionChoice,
          device: s.device as Device,
          threads: s.threads,
          store: s.store,
          offline: s.offline,
          repair: s.repair,
          keepSource: s.keepSource,
          signal: controller.signal,
          onProgress: (progress) => send({ type: 'progress', id: msg.id, progress }),
        });
        send({
          type: 'loaded',
          id: msg.id,
          model: { source: model.source, dir: model.dir, precision: model.precision, device: model.device, fallbackReason: model.fallbackReason, loadNotes: model.loadNotes, loadMs: model.loadMs, maxModelLen: model.pipeline.model.config.text.maxPositionEmbeddings },
        });
        return;
      }
      case 'plan': {
        const s = msg.settings;
        const cost = await planModelSetUp({ model: s.model, precision: s.precision as PrecisionChoice, device: s.device as Device, threads: s.threads, store: s.store, offline: s.offline, keepSource: s.keepSource, signal: controller.signal });
        send({ type: 'planned', id: msg.id, cost });
        return;
      }
      case 'encode': {
        const pipeline = requireModel();
        const [encoded] = await pipeline.encodeImages([msg.image], controller.signal);
        send({ type: 'encoded', id: msg.id, features: encoded.features, preprocessMs: encoded.preprocessMs, visionMs: encoded.visionMs }, [encoded.features.buffer as ArrayBuffer]);
        return;
      }
      case 'generate': {
        const pipeline = requireModel();
        let lastPlace = Infinity;
        const result = await pipeline.generate(
          msg.rows.map((r) => ({ image: { features: r.features, preprocessMs: 0, visionMs: 0 }, prompt: promptText(r.prompt, msg.settings) })),
          msg.settings,
          {
            signal: controller.signal,
            onToken: (row, _token, textSoFar, sequence) => {
              send({ type: 'token', id: msg.id, row, sequence, textSoFar });
              // Once per step, not per row: a batch of eight must not sleep eight times. Rows report in order, so a
              // row at or before the last one reported starts the next step.
              const place = row * MAX_BATCH_ROWS + sequence;
              if (stepDelayMs > 0 && place <= lastPlace) Atomics.wait(sleeper, 0, 0, stepDelayMs);
              lastPlace = place;
              if (crashFile && fs.existsSync(crashFile)) {
                fs.rmSync(crashFile);
                process.exit(70);
              }
              if (stopRequested(msg.id)) controller.abort();
            },
            onAnswer: (row, answer) => send({ type: 'answer', id: msg.id, row, answer }),
            isCancelled: (row) => rowCancelled(msg.id, row),
          },
        );
        send({ type: 'generated', id: msg.id, prefillMs: result.timings.prefillMs, decodeMs: result.timings.decodeMs });
        return;
      }
    }
  } catch (e) {
    send({ type: 'failed', id: msg.id, error: toError(e) });
  } finally {
    controllers.delete(msg.id);
  }
}

/** A chat's prompt with the turns that fit the model's context, the oldest dropped first. */
function promptText(spec: PromptSpec, settings: GenerationSettings): string {
  if ('text' in spec) return spec.text;
  const m = requireModel().model;
  const budget = promptBudget({ maxPositions: m.config.text.maxPositionEmbeddings, numQueryTokens: m.config.numQueryTokens, maxNewTokens: settings.maxNewTokens });
  return fitChatPrompt(spec.history, spec.question, (text) => m.tokenizer.encode(text).length, budget);
}

function requireModel() {
  if (!model) throw new UserError('The model is not loaded.');
  return model.pipeline;
}

// One job at a time, in arrival order: the main thread's queue decides what comes next.
let chain = Promise.resolve();
port.on('message', (msg: ToWorker) => {
  if (msg.type === 'cancel') {
    void handle(msg);
    return;
  }
  chain = chain.then(() => handle(msg));
});
