import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { describeRequestError } from '../../client/src/request-errors';
import { downloadOffer, effectivePrecision, setUpPickerTitle } from '../../client/src/setup-text';
import type { ServerState } from '../../client/src/status-text';
import { Blip2ErrorCodes, type ModelState } from '../../server/src/protocol/messages';

const base = { model: 'Salesforce/blip2-opt-2.7b', precision: 'auto' as const, device: 'auto', offline: false };

describe('model set-up offer', () => {
  it('names the model and the size of what is downloaded: the original weights', () => {
    const offer = downloadOffer(base);
    assert.equal(offer.downloadLabel, 'Download blip2-opt-2.7b (about 15 GB)');
    assert.match(offer.message, /Salesforce\/blip2-opt-2\.7b \(about 15 GB\)/);
    assert.match(offer.message, /original float32 weights/);
    assert.match(offer.message, /converts them on this machine/);
  });

  it("gives the converted size from the model card for the precision that will be used", () => {
    const sizes = { fp32: '14.4', fp16: '7.2', int8: '3.6', int4: '1.8' } as const;
    for (const [precision, size] of Object.entries(sizes)) {
      const offer = downloadOffer({ ...base, precision: precision as keyof typeof sizes });
      assert.match(offer.message, new RegExp(`to ${precision} \\(about ${size.replace('.', '\\.')} GB`), precision);
    }
  });

  it('reads auto as int4 on the CPU and fp16 on a GPU, as the server does', () => {
    assert.equal(effectivePrecision('auto', 'cpu'), 'int4');
    assert.equal(effectivePrecision('auto', 'auto'), 'int4');
    assert.equal(effectivePrecision('auto', undefined), 'int4');
    assert.equal(effectivePrecision('auto', 'cuda'), 'fp16');
    assert.equal(effectivePrecision('int8', 'cuda'), 'int8');
    assert.match(downloadOffer({ ...base, device: 'cuda' }).message, /to fp16 \(about 7\.2 GB/);
  });

  it('offers no download for a folder, or when offline', () => {
    assert.equal(downloadOffer({ ...base, model: '/models/blip2' }).downloadLabel, undefined);
    assert.match(downloadOffer({ ...base, model: '/models/blip2' }).message, /folder "\/models\/blip2"/);
    const offline = downloadOffer({ ...base, offline: true });
    assert.equal(offline.downloadLabel, undefined);
    assert.match(offline.message, /blip2\.offline/);
  });

  it('claims no size it does not know', () => {
    const offer = downloadOffer({ ...base, model: 'someone/blip2-finetuned' });
    assert.equal(offer.downloadLabel, 'Download blip2-finetuned');
    assert.match(offer.message, /someone\/blip2-finetuned/);
    assert.doesNotMatch(offer.message, /GB/);
  });

  it("puts the server's reason first when the model setting names a folder", () => {
    const offer = downloadOffer({ ...base, model: '/m', serverMessage: 'The folder has no config.json.' });
    assert.match(offer.message, /^The folder has no config\.json\. /);
  });
});

describe('request errors', () => {
  it('tells cancellation, a missing model and other failures apart', () => {
    assert.deepEqual(describeRequestError({ code: -32800, message: 'Request cancelled' }), { kind: 'cancelled' });
    assert.deepEqual(describeRequestError({ code: -32802, message: 'Server cancelled' }), { kind: 'cancelled' });
    assert.deepEqual(describeRequestError({ code: Blip2ErrorCodes.NoModel, message: 'No model.' }), { kind: 'noModel', message: 'No model.' });
    assert.deepEqual(describeRequestError(new Error('disk full')), { kind: 'failed', message: 'disk full' });
    assert.deepEqual(describeRequestError('odd'), { kind: 'failed', message: 'odd' });
  });
});

describe('setUpPickerTitle', () => {
  it('says where things stand in words, never an internal state name', () => {
    const model = (state: ModelState): ServerState => ({ kind: 'running', model: { state, model: 'm', queued: 0, cache: { entries: 0, bytes: 0 } } });
    const states: ServerState[] = [
      { kind: 'starting' },
      { kind: 'restarting', reason: 'It crashed.' },
      { kind: 'stopped' },
      { kind: 'running' },
      ...(['noModel', 'downloading', 'converting', 'loading', 'ready', 'busy', 'unloaded', 'error'] as const).map(model),
    ];
    const titles = states.map(setUpPickerTitle);
    for (const title of titles) {
      assert.match(title, /^Set Up the BLIP-2 Model \(now: [a-z][^()]*\)$/, title);
      assert.doesNotMatch(title, /\b[a-z]+[A-Z]\w*|\brunning\b/, title);
    }
    assert.equal(setUpPickerTitle(model('noModel')), 'Set Up the BLIP-2 Model (now: no model set up)');
    assert.equal(new Set(titles).size > 5, true, 'the states are told apart');
  });
});
