import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { formatBytes, formatDuration, generationFacts, modelStatusDetail, statusBarView, type ServerState } from '../../client/src/status-text';
import type { InferenceCounters, ModelState, ModelStatus } from '../../server/src/protocol/messages';

function status(state: ModelState, extra: Partial<ModelStatus> = {}): ModelStatus {
  return { state, model: 'Salesforce/blip2-opt-2.7b', queued: 0, cache: { entries: 0, bytes: 0 }, ...extra };
}

const running = (model: ModelStatus): ServerState => ({ kind: 'running', model });

describe('status bar', () => {
  const states: ModelState[] = ['noModel', 'downloading', 'converting', 'loading', 'ready', 'busy', 'unloaded', 'error'];

  it('has distinct words for every model state', () => {
    const texts = states.map((state) => statusBarView(running(status(state))).text);
    assert.equal(new Set(texts).size, states.length, texts.join(' | '));
    for (const text of texts) assert.match(text, /BLIP-2/);
  });

  it('says "no model" and "ready" in words a test and a screen reader can find', () => {
    assert.match(statusBarView(running(status('noModel'))).text, /no model/);
    const ready = statusBarView(running(status('ready', { precision: 'int4', device: 'cpu' })));
    assert.match(ready.text, /ready/);
    assert.match(ready.accessibilityLabel, /ready/);
    assert.match(ready.tooltip, /Precision: int4/);
    assert.match(ready.tooltip, /Device: cpu/);
  });

  it('shows download and conversion progress in percent', () => {
    assert.match(statusBarView(running(status('downloading', { progress: 0.427 }))).text, /downloading 42%/);
    assert.match(statusBarView(running(status('converting', { progress: 1 }))).text, /converting 100%/);
  });

  it('counts queued requests when busy', () => {
    assert.match(statusBarView(running(status('busy', { queued: 3 }))).text, /busy \(3\)/);
    assert.doesNotMatch(statusBarView(running(status('busy', { queued: 1 }))).text, /busy \(/);
  });

  it('marks errors and a stopped server as errors, a missing model as a warning', () => {
    assert.equal(statusBarView(running(status('error', { message: 'boom' }))).severity, 'error');
    assert.match(statusBarView(running(status('error', { message: 'boom' }))).tooltip, /boom/);
    assert.equal(statusBarView({ kind: 'stopped', reason: 'crashed 5 times' }).severity, 'error');
    assert.match(statusBarView({ kind: 'stopped', reason: 'crashed 5 times' }).tooltip, /crashed 5 times/);
    assert.equal(statusBarView(running(status('noModel'))).severity, 'warning');
  });

  it('says when the server is being restarted after a crash', () => {
    const view = statusBarView({ kind: 'restarting', reason: 'The BLIP-2 server stopped unexpectedly.' });
    assert.match(view.text, /restarting/);
    assert.match(view.tooltip, /stopped unexpectedly/);
  });

  it('names the fallback when the device asked for is not used', () => {
    const view = statusBarView(running(status('ready', { device: 'cpu', fallbackReason: 'CUDA is not installed' })));
    assert.match(view.tooltip, /Device: cpu \(CUDA is not installed\)/);
  });

  it('lists the notes the server gives about the loaded model, one a line', () => {
    const notes = ['Loading a.onnx stays slow because its optimized copy could not be written.', 'Loading b.onnx stays slow too.'];
    const lines = statusBarView(running(status('ready', { device: 'cpu', notes }))).tooltip.split('\n');
    for (const note of notes) assert.ok(lines.includes(note), `no line "${note}" in:\n${lines.join('\n')}`);
  });

  it('marks a loaded model whose loads stay slow as a warning, ready or busy, and one without notes as normal', () => {
    const notes = ['Loading a.onnx stays slow.'];
    for (const state of ['ready', 'busy'] as const) {
      assert.equal(statusBarView(running(status(state, { device: 'cpu', queued: 1, notes }))).severity, 'warning', state);
      assert.equal(statusBarView(running(status(state, { device: 'cpu', queued: 1 }))).severity, 'normal', state);
    }
  });
});

describe('status bar with a BLIP-2 server', () => {
  const server = { server: 'http://gpu-box:8000' };

  it('names the server in the item and the model it serves in the tooltip', () => {
    const ready = statusBarView(running(status('ready', server)));
    assert.equal(ready.text, '$(check) BLIP-2 ready · gpu-box:8000');
    assert.match(ready.tooltip, /^The BLIP-2 server answers\.\nServer: http:\/\/gpu-box:8000\nModel: Salesforce\/blip2-opt-2\.7b$/);
    assert.equal(ready.severity, 'normal');
    assert.match(statusBarView(running(status('busy', { ...server, queued: 3 }))).text, /busy · gpu-box:8000/);
    assert.match(statusBarView(running(status('loading', { ...server, model: '' }))).tooltip, /Model: not known yet/);
  });

  it('shows a failing server as an error, with its sentence and the way back', () => {
    const failed = statusBarView(running(status('error', { ...server, message: 'The BLIP-2 server at http://gpu-box:8000 is busy (429).' })));
    assert.equal(failed.severity, 'error');
    assert.match(failed.tooltip, /is busy \(429\)\.\n.*Use the Local Model/);
  });
});

describe('model status details', () => {
  const counters: InferenceCounters = {
    visionRuns: 2,
    generations: 5,
    batches: 3,
    tokensGenerated: 60,
    cancelledGenerations: 1,
    captionCacheHits: 3,
    visionCacheHits: 1,
    sharedRequests: 0,
  };

  it('lists model, precision, device, memory, cache and counters', () => {
    const detail = modelStatusDetail(
      running(status('ready', { precision: 'int4', device: 'cpu', memoryBytes: 2.5 * 1024 ** 3, queued: 0, cache: { entries: 12, bytes: 3 * 1024 ** 2, dir: '/home/u/.cache/blip2' } })),
      counters,
    );
    for (const expected of [
      'State: ready',
      'Model: Salesforce/blip2-opt-2.7b',
      'Precision: int4',
      'Device: cpu',
      'Server memory: 2.5 GiB',
      'Cache: 12 entries, 3.0 MiB',
      'Cache folder: /home/u/.cache/blip2',
      '5 generations (60 tokens, 1 cancelled, in 3 batches)',
      '3 captions and 1 encoding from the cache',
    ]) {
      assert.ok(detail.includes(expected), `${expected}\n---\n${detail}`);
    }
  });

  it('says why there is nothing to show while the server is down', () => {
    assert.match(modelStatusDetail({ kind: 'stopped', reason: 'It crashed.' }), /It crashed\./);
  });
});

describe('formatting', () => {
  it('formats sizes and durations', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
    assert.equal(formatBytes(200 * 1024 ** 2), '200 MiB');
    assert.equal(formatDuration(250), '250 ms');
    assert.equal(formatDuration(1234), '1.2 s');
    assert.equal(formatDuration(125_000), '2 min 5 s');
  });

  it('describes how a result came about', () => {
    assert.equal(generationFacts({ precision: 'int4', device: 'cpu', durationMs: 1234, cached: false }), 'int4 · cpu · 1.2 s');
    assert.equal(generationFacts({ precision: 'fp16', device: 'cuda', durationMs: 0, cached: true }), 'fp16 · cuda · from the cache');
  });
});
