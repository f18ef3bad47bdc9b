import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { normalizeSettings } from '../../server/src/lsp/normalize-settings';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/settings';

describe('server settings', () => {
  it('takes the defaults for what no layer gives', () => {
    assert.deepEqual(normalizeSettings(), DEFAULT_SETTINGS);
    assert.deepEqual(normalizeSettings(null, 'nonsense', []), DEFAULT_SETTINGS);
  });

  it('layers initializationOptions under workspace/configuration, deeply', () => {
    const s = normalizeSettings(
      { model: '/models/blip2', generation: { maxNewTokens: 40, numBeams: 1 }, altText: { rules: { 'alt-too-long': 'off' } } },
      { precision: 'int8', generation: { maxNewTokens: 12 }, altText: { maxLength: 80 } },
    );
    assert.equal(s.model, '/models/blip2');
    assert.equal(s.precision, 'int8');
    assert.deepEqual([s.generation.maxNewTokens, s.generation.numBeams, s.generation.alternatives], [12, 1, 2]);
    assert.equal(s.altText.rules['alt-too-long'], 'off');
    assert.equal(s.altText.rules['missing-alt'], 'warning');
    assert.equal(s.altText.maxLength, 80);
  });

  it('ignores values of the wrong type or out of range instead of trusting them', () => {
    const s = normalizeSettings({ precision: 'fp8', threads: -1, model: '  ', generation: { maxNewTokens: '30', numBeams: 0 }, remoteImages: { enabled: 'yes' } });
    assert.equal(s.precision, 'auto');
    assert.equal(s.threads, 0);
    assert.equal(s.model, DEFAULT_SETTINGS.model);
    assert.equal(s.generation.maxNewTokens, 30);
    assert.equal(s.generation.numBeams, 3);
    assert.equal(s.remoteImages.enabled, false);
  });
});
