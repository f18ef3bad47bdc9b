import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { changedReloadSettings, EXTENSION_ID, explicitSettings, isLocalModel, readSettings, userOnlySettingsIn } from '../../client/src/config';
import { ALT_RULES } from '../../server/src/features/alt-text/rules';
import {
  ALT_RULE_IDS,
  DEFAULT_SETTINGS,
  DEVICE_SETTINGS,
  NUMBER_LIMITS,
  PRECISION_SETTINGS,
  RELOAD_SETTINGS,
  RULE_SETTINGS,
  settingLeaves,
} from '../../server/src/protocol/settings';
import { configurationProperties, manifest } from './manifest';

const properties = configurationProperties();

describe('contributes.configuration', () => {
  it('has exactly the settings of DEFAULT_SETTINGS, with the same defaults', () => {
    const expected = settingLeaves().map((leaf) => `blip2.${leaf.key}`);
    assert.deepEqual(Object.keys(properties).sort(), [...expected].sort());
    for (const { key, defaultValue } of settingLeaves()) {
      assert.deepEqual(properties[`blip2.${key}`].default, defaultValue, `default of blip2.${key}`);
    }
  });

  it('types each setting as its default is typed', () => {
    for (const { key, defaultValue } of settingLeaves()) {
      const declared = properties[`blip2.${key}`].type;
      const expected =
        typeof defaultValue === 'number' ? (NUMBER_LIMITS[key]?.integer === false ? 'number' : 'integer') : typeof defaultValue === 'object' ? 'object' : typeof defaultValue;
      assert.equal(declared, expected, `type of blip2.${key}`);
    }
  });

  it('describes every setting in markdown', () => {
    for (const [key, property] of Object.entries(properties)) {
      assert.ok(property.markdownDescription && property.markdownDescription.length > 20, `${key} has a markdownDescription`);
    }
  });

  it('has one property per alt-text rule, with its default severity and description', () => {
    const rules = properties['blip2.altText.rules'];
    assert.equal(rules.type, 'object');
    assert.equal(rules.additionalProperties, false);
    assert.deepEqual(Object.keys(rules.properties ?? {}), [...ALT_RULE_IDS]);
    for (const id of ALT_RULE_IDS) {
      const rule = rules.properties![id];
      assert.equal(rule.default, ALT_RULES[id].defaultSeverity, `default of ${id}`);
      assert.deepEqual(rule.enum, [...RULE_SETTINGS], `values of ${id}`);
      assert.equal(rule.markdownDescription, ALT_RULES[id].description, `description of ${id}`);
      assert.equal((rules.default as Record<string, string>)[id], ALT_RULES[id].defaultSeverity);
    }
  });

  it('offers the enums the server accepts', () => {
    assert.deepEqual(properties['blip2.precision'].enum, [...PRECISION_SETTINGS]);
    assert.deepEqual(properties['blip2.device'].enum, [...DEVICE_SETTINGS]);
    for (const key of ['blip2.precision', 'blip2.device']) {
      assert.equal(properties[key].enumDescriptions?.length, properties[key].enum?.length, `${key} describes every value`);
    }
  });

  it('declares the limits that readSettings enforces', () => {
    for (const [key, limits] of Object.entries(NUMBER_LIMITS)) {
      const property = properties[`blip2.${key}`];
      assert.ok(property, `blip2.${key} exists`);
      assert.equal(property.minimum, limits.min, `minimum of ${key}`);
      assert.equal(property.maximum, limits.max, `maximum of ${key}`);
    }
  });

  it('scopes settings that name folders on disk to the machine', () => {
    assert.equal(properties['blip2.modelStore'].scope, 'machine');
    assert.match(properties['blip2.model'].scope ?? '', /^machine/);
  });

  it('limits untrusted workspaces: their own model and remote-image settings do not count', () => {
    const untrusted = manifest.capabilities.untrustedWorkspaces;
    assert.equal(untrusted.supported, 'limited');
    assert.ok(untrusted.description);
    assert.ok(untrusted.restrictedConfigurations?.includes('blip2.model'));
    assert.ok(untrusted.restrictedConfigurations?.includes('blip2.remoteImages.enabled'));
    for (const key of untrusted.restrictedConfigurations ?? []) assert.ok(key in properties, `${key} is a contributed setting`);
    const virtual = manifest.capabilities.virtualWorkspaces;
    assert.equal(typeof virtual === 'boolean' ? virtual : virtual.supported, false);
  });

  it('names the extension as config.ts does', () => {
    assert.equal(`${manifest.publisher}.${manifest.name}`, EXTENSION_ID);
  });
});

describe('readSettings', () => {
  it('gives the defaults when nothing is set', () => {
    assert.deepEqual(readSettings(() => undefined), DEFAULT_SETTINGS);
  });

  it('reads the flat keys VS Code stores into the nested settings', () => {
    const values: Record<string, unknown> = {
      model: '/models/blip2',
      precision: 'int8',
      device: 'cpu',
      'generation.maxNewTokens': 20,
      'generation.captionPrompt': '  a photo of ',
      'altText.rules': { 'missing-alt': 'error', 'alt-too-long': 'off' },
      'remoteImages.enabled': true,
    };
    const settings = readSettings((key) => values[key]);
    assert.equal(settings.model, '/models/blip2');
    assert.equal(settings.precision, 'int8');
    assert.equal(settings.device, 'cpu');
    assert.equal(settings.generation.maxNewTokens, 20);
    assert.equal(settings.generation.captionPrompt, 'a photo of');
    assert.equal(settings.altText.rules['missing-alt'], 'error');
    assert.equal(settings.altText.rules['alt-too-long'], 'off');
    assert.equal(settings.altText.rules['placeholder-alt'], 'warning');
    assert.equal(settings.remoteImages.enabled, true);
    assert.equal(settings.unloadAfterMinutes, DEFAULT_SETTINGS.unloadAfterMinutes);
  });

  it('replaces values of the wrong type or outside the enum with the default, and clamps numbers', () => {
    const values: Record<string, unknown> = {
      precision: 'int3',
      device: 42,
      threads: -2,
      offline: 'yes',
      'generation.maxNewTokens': 10_000,
      'generation.numBeams': 2.6,
      'generation.repetitionPenalty': Number.NaN,
      'altText.maxLength': '80',
      'altText.rules': { 'missing-alt': 'loud', 'no-such-rule': 'error' },
    };
    const settings = readSettings((key) => values[key]);
    assert.equal(settings.precision, 'auto');
    assert.equal(settings.device, 'auto');
    assert.equal(settings.threads, 0);
    assert.equal(settings.offline, false);
    assert.equal(settings.generation.maxNewTokens, 512);
    assert.equal(settings.generation.numBeams, 3);
    assert.equal(settings.generation.repetitionPenalty, 1);
    assert.equal(settings.altText.maxLength, 125);
    assert.equal(settings.altText.rules['missing-alt'], 'warning');
    assert.ok(!('no-such-rule' in settings.altText.rules));
  });

  it('keeps alternatives with greedy captions: the quick fix runs its own beam search for them', () => {
    const values: Record<string, unknown> = { 'generation.numBeams': 1, 'generation.alternatives': 4 };
    assert.equal(readSettings((key) => values[key]).generation.alternatives, 4);
  });

  it('does not share objects with DEFAULT_SETTINGS', () => {
    const before = DEFAULT_SETTINGS.generation.maxNewTokens;
    const settings = readSettings(() => undefined);
    settings.generation.maxNewTokens = before + 1;
    assert.equal(DEFAULT_SETTINGS.generation.maxNewTokens, before);
  });
});

describe('explicitSettings', () => {
  it('sends only what the user set, so the repository\'s .blip2.json counts where VS Code is silent', () => {
    const scopes: Record<string, { globalValue?: unknown; workspaceValue?: unknown; workspaceFolderValue?: unknown }> = {
      model: { globalValue: '/models/blip2' },
      'generation.numBeams': { globalValue: 4, workspaceValue: 2 },
      'altText.rules': { globalValue: { 'missing-alt': 'error' }, workspaceFolderValue: { 'alt-too-long': 'off' } },
      'altText.maxLength': {},
    };
    // VS Code's `get` gives the effective value: the most specific scope (and workspace trust) applied.
    const effective: Record<string, unknown> = { model: '/models/blip2', 'generation.numBeams': 2 };
    const sent = explicitSettings((key) => scopes[key], (key) => effective[key]);
    assert.deepEqual(sent, {
      model: '/models/blip2',
      generation: { numBeams: 2 },
      altText: { rules: { 'missing-alt': 'error', 'alt-too-long': 'off' } },
    });
  });
});

describe('the server setting, which only the user sets', () => {
  it('is machine-scoped, so VS Code applies no workspace value', () => {
    assert.equal(properties['blip2.server.url'].scope, 'machine');
  });

  it('is sent from the user\'s settings only, whatever a workspace says', () => {
    const sent = explicitSettings(
      (key) => (key === 'server.url' ? { globalValue: 'http://mine:8000', workspaceValue: 'http://theirs:8000', workspaceFolderValue: 'http://theirs:8000' } : undefined),
      (key) => (key === 'server.url' ? 'http://theirs:8000' : undefined),
    );
    assert.deepEqual(sent, { server: { url: 'http://mine:8000' } });
    const onlyWorkspace = explicitSettings((key) => (key === 'server.url' ? { workspaceValue: 'http://theirs:8000' } : undefined), () => 'http://theirs:8000');
    assert.deepEqual(onlyWorkspace, {});
  });

  it("is found in a workspace's settings files, so the user is told it was ignored", () => {
    assert.deepEqual(userOnlySettingsIn('{\n  // team server\n  "blip2.server.url": "http://theirs:8000",\n}'), ['blip2.server.url']);
    assert.deepEqual(userOnlySettingsIn('{ "folders": [], "settings": { "blip2.server.url": "http://x" } }', true), ['blip2.server.url']);
    assert.deepEqual(userOnlySettingsIn('{ "blip2": { "server": { "url": "http://x" } } }'), ['blip2.server.url']);
    assert.deepEqual(userOnlySettingsIn('{ "blip2.model": "x" }'), []);
    assert.deepEqual(userOnlySettingsIn('not json'), []);
  });
});

describe('settings that need a restart', () => {
  it('are found among the keys a change affects', () => {
    const affected = new Set(['blip2', 'blip2.precision', 'blip2.generation', 'blip2.generation.numBeams']);
    assert.deepEqual(changedReloadSettings((key) => affected.has(key)), ['precision']);
    assert.deepEqual(changedReloadSettings(() => true), [...RELOAD_SETTINGS]);
  });

  it('are contributed settings, and say in their description that they need a restart', () => {
    for (const key of RELOAD_SETTINGS) {
      assert.match(properties[`blip2.${key}`].markdownDescription ?? '', /restart/i, `blip2.${key}`);
    }
  });
});

describe('isLocalModel', () => {
  it('tells folders from repo ids', () => {
    assert.equal(isLocalModel('Salesforce/blip2-opt-2.7b'), false);
    assert.equal(isLocalModel('Salesforce/blip2-opt-2.7b@main'), false);
    for (const folder of ['/models/blip2', './blip2', '~/blip2', 'C:\\models\\blip2', 'file:///models/blip2']) {
      assert.equal(isLocalModel(folder), true, folder);
    }
  });
});
