// The one settings module the VS Code client, the server and the CLI validate with.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  DEFAULT_SETTINGS,
  normalizeSettings,
  PROJECT_SETTING_KEYS,
  unwrapSettings,
  validateSettings,
} from '../../server/src/protocol/settings';

describe('validateSettings', () => {
  it('takes the defaults for what no layer gives', () => {
    assert.deepEqual(normalizeSettings(), DEFAULT_SETTINGS);
    assert.deepEqual(normalizeSettings(null, undefined, {}), DEFAULT_SETTINGS);
  });

  it('layers deeply, later layers winning, rules merged one by one', () => {
    const s = normalizeSettings(
      { model: '/models/blip2', generation: { maxNewTokens: 40, numBeams: 1 }, altText: { rules: { 'alt-too-long': 'off' } } },
      { precision: 'int8', generation: { maxNewTokens: 12 }, altText: { maxLength: 80, rules: { 'missing-alt': 'error' } } },
    );
    assert.equal(s.model, '/models/blip2');
    assert.equal(s.precision, 'int8');
    assert.deepEqual([s.generation.maxNewTokens, s.generation.numBeams, s.generation.alternatives], [12, 1, DEFAULT_SETTINGS.generation.alternatives]);
    assert.deepEqual([s.altText.rules['alt-too-long'], s.altText.rules['missing-alt'], s.altText.rules['placeholder-alt']], ['off', 'error', 'warning']);
    assert.equal(s.altText.maxLength, 80);
  });

  it('ignores values of the wrong type, clamps numbers to their limits, and says so for each', () => {
    const { settings, problems } = validateSettings([
      {
        source: 'test',
        value: { precision: 'fp8', threads: -1, model: '  ', generation: { maxNewTokens: '7', numBeams: 0, repetitionPenalty: 9 }, remoteImages: { enabled: 'yes' }, altText: { rules: { 'missing-alt': 'loud', nope: 'off' } } },
      },
    ]);
    assert.equal(settings.precision, 'auto');
    assert.equal(settings.threads, 0);
    assert.equal(settings.model, DEFAULT_SETTINGS.model, 'a blank model is no model');
    assert.equal(settings.generation.maxNewTokens, DEFAULT_SETTINGS.generation.maxNewTokens);
    assert.equal(settings.generation.numBeams, 1);
    assert.equal(settings.generation.repetitionPenalty, 5);
    assert.equal(settings.remoteImages.enabled, false);
    assert.equal(settings.altText.rules['missing-alt'], 'warning');
    assert.deepEqual(problems, [
      'test: blip2.precision must be one of auto, fp32, fp16, int8, int4 (got "fp8"); using "auto".',
      'test: blip2.threads must be a whole number from 0 to 256 (got -1); using 0.',
      `test: blip2.generation.maxNewTokens must be a number (got "7"); using ${DEFAULT_SETTINGS.generation.maxNewTokens}.`,
      'test: blip2.generation.numBeams must be a whole number from 1 to 16 (got 0); using 1.',
      'test: blip2.generation.repetitionPenalty must be a number from 1 to 5 (got 9); using 5.',
      'test: blip2.altText.rules["missing-alt"] must be one of error, warning, information, hint, off (got "loud"); using "warning".',
      'test: blip2.altText.rules has no rule "nope" (the rules are missing-alt, default-alt, placeholder-alt, redundant-phrase, file-name-alt, alt-too-long); it was ignored.',
      'test: blip2.remoteImages.enabled must be true or false (got "yes"); using false.',
    ]);
  });

  it('lets a project file set only the rules, the length limit and generation, and names what it ignored', () => {
    const { settings, problems } = validateSettings([
      {
        source: '.blip2.json',
        strict: true,
        allowed: PROJECT_SETTING_KEYS,
        value: { model: '/evil', remoteImages: { enabled: true }, altText: { maxLength: 90, captionOnOpen: false }, generation: { numBeams: 1 }, colour: 'red' },
      },
    ]);
    assert.equal(settings.model, DEFAULT_SETTINGS.model);
    assert.equal(settings.remoteImages.enabled, false);
    assert.equal(settings.altText.captionOnOpen, true);
    assert.equal(settings.altText.maxLength, 90);
    assert.equal(settings.generation.numBeams, 1);
    assert.deepEqual(problems.sort(), [
      '.blip2.json: "altText.captionOnOpen" cannot be set here; it was ignored.',
      '.blip2.json: "colour" is not a setting; it was ignored.',
      '.blip2.json: "model" cannot be set here; it was ignored.',
      '.blip2.json: "remoteImages.enabled" cannot be set here; it was ignored.',
    ]);
  });

  it('quotes only the start of a bad value, however long or deep it is', () => {
    const huge = 'x'.repeat(50 * 1024 * 1024);
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    const { settings, problems } = validateSettings([
      { source: '.blip2.json', strict: true, allowed: PROJECT_SETTING_KEYS, value: { generation: { captionPrompt: 7, numBeams: huge, maxNewTokens: deep }, [huge]: 1 } },
    ]);
    assert.equal(settings.generation.numBeams, DEFAULT_SETTINGS.generation.numBeams);
    assert.equal(problems.length, 4);
    for (const problem of problems) assert.ok(problem.length < 200, problem.slice(0, 300));
    assert.ok(problems.includes(`.blip2.json: blip2.generation.numBeams must be a number (got "${'x'.repeat(40)}…" (52428800 characters)); using 1.`), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('.blip2.json: blip2.generation.maxNewTokens must be a number (got [[[[')));
  });

  it('keeps the idle unload within what a timer can wait (24.8 days), so a large value does not unload at once', () => {
    const { settings, problems } = validateSettings([{ value: { unloadAfterMinutes: 100_000 } }]);
    assert.ok(settings.unloadAfterMinutes * 60_000 <= 2 ** 31 - 1);
    assert.deepEqual(problems, ['blip2.unloadAfterMinutes must be a whole number from 0 to 10080 (got 100000); using 10080.']);
  });

  it('does not share objects with DEFAULT_SETTINGS', () => {
    const before = DEFAULT_SETTINGS.generation.maxNewTokens;
    const settings = normalizeSettings({ altText: { rules: { 'missing-alt': 'off' } } });
    settings.generation.maxNewTokens = before + 1;
    assert.equal(DEFAULT_SETTINGS.generation.maxNewTokens, before);
    assert.equal(DEFAULT_SETTINGS.altText.rules['missing-alt'], 'warning');
  });
});

describe('unwrapSettings', () => {
  it('finds the settings however a client wraps them', () => {
    const settings = { model: '/m', precision: 'fp32' };
    assert.deepEqual(unwrapSettings(settings), settings, 'bare (nvim-lspconfig init_options, Helix config)');
    assert.deepEqual(unwrapSettings({ settings, cacheDir: '/c' }), settings, 'the VS Code extension');
    assert.deepEqual(unwrapSettings({ blip2: settings }), settings, 'a whole configuration (didChangeConfiguration, eglot)');
    assert.deepEqual(unwrapSettings({ settings: { blip2: settings } }), settings);
    assert.equal(unwrapSettings(null), null);
  });
});
