// The `blip2.*` settings as VS Code stores them (flat dotted keys) shaped into the server's `Blip2Settings`.
// No `vscode` import: the extension passes a getter, the tests pass a plain object.
import { ALT_RULE_IDS, RULE_SETTINGS, normalizeAltRuleSettings } from '../../server/src/features/alt-text/rules';
import {
  DEFAULT_SETTINGS,
  RELOAD_SETTINGS,
  type Blip2Settings,
  type DeviceSetting,
  type PrecisionSetting,
} from '../../server/src/protocol/settings';

export const SECTION = 'blip2';
/** `publisher.name` in package.json (a test checks). */
export const EXTENSION_ID = 'blip2-local.blip2-vscode';

export const PRECISION_SETTINGS = ['auto', 'fp32', 'fp16', 'int8', 'int4'] as const satisfies readonly PrecisionSetting[];
export const DEVICE_SETTINGS = ['auto', 'cpu', 'cuda', 'dml', 'coreml', 'webgpu'] as const satisfies readonly DeviceSetting[];
// Fails to compile when the server's types gain a value these lists lack.
const _allPrecisions: Exclude<PrecisionSetting, (typeof PRECISION_SETTINGS)[number]> extends never ? true : never = true;
const _allDevices: Exclude<DeviceSetting, (typeof DEVICE_SETTINGS)[number]> extends never ? true : never = true;
void _allPrecisions;
void _allDevices;

/** Settings contributed as one object-valued key rather than one key per field. */
const OBJECT_KEYS = new Set(['altText.rules']);

/** Limits of the numeric settings, the same as package.json declares (a test checks). */
export const NUMBER_LIMITS: Readonly<Record<string, { min: number; max?: number; integer: boolean }>> = {
  threads: { min: 0, max: 256, integer: true },
  'generation.maxNewTokens': { min: 1, max: 512, integer: true },
  'generation.minNewTokens': { min: 0, max: 512, integer: true },
  'generation.numBeams': { min: 1, max: 16, integer: true },
  'generation.alternatives': { min: 0, max: 15, integer: true },
  'generation.repetitionPenalty': { min: 1, max: 5, integer: false },
  'generation.noRepeatNgramSize': { min: 0, max: 20, integer: true },
  'altText.maxLength': { min: 1, max: 1000, integer: true },
  'localImages.maxBytes': { min: 1024, integer: true },
  'remoteImages.maxBytes': { min: 1024, integer: true },
  'cache.maxMegabytes': { min: 0, integer: true },
  unloadAfterMinutes: { min: 0, integer: true },
};

const ENUMS: Readonly<Record<string, readonly string[]>> = {
  precision: PRECISION_SETTINGS,
  device: DEVICE_SETTINGS,
};

export interface SettingLeaf {
  /** Relative to the section: `generation.maxNewTokens`. */
  key: string;
  defaultValue: unknown;
}

/** Every setting key under `blip2.`, with its default, in the order of `DEFAULT_SETTINGS`. */
export function settingLeaves(): SettingLeaf[] {
  const leaves: SettingLeaf[] = [];
  const walk = (value: unknown, prefix: string): void => {
    if (typeof value === 'object' && value !== null && !Array.isArray(value) && !OBJECT_KEYS.has(prefix)) {
      for (const [name, child] of Object.entries(value)) walk(child, prefix ? `${prefix}.${name}` : name);
    } else {
      leaves.push({ key: prefix, defaultValue: value });
    }
  };
  walk(DEFAULT_SETTINGS, '');
  return leaves;
}

/**
 * The whole settings object from what the user wrote: a value of the wrong type, outside its limits or not in
 * its enum is replaced by the default (a number is clamped), so a typo never reaches the engine.
 */
export function readSettings(get: (key: string) => unknown): Blip2Settings {
  const result: Record<string, unknown> = structuredClone(DEFAULT_SETTINGS) as unknown as Record<string, unknown>;
  for (const { key, defaultValue } of settingLeaves()) {
    setPath(result, key, shapeValue(key, get(key), defaultValue));
  }
  const settings = result as unknown as Blip2Settings;
  // The alt-text rules have the server's own normalizer; using it keeps both sides reading them alike.
  const altRules = normalizeAltRuleSettings({ rules: get('altText.rules'), maxLength: settings.altText.maxLength });
  settings.altText = { ...settings.altText, rules: altRules.rules };
  settings.generation.minNewTokens = Math.min(settings.generation.minNewTokens, settings.generation.maxNewTokens);
  // More alternatives than beams cannot come out of beam search.
  settings.generation.alternatives = Math.min(settings.generation.alternatives, Math.max(0, settings.generation.numBeams - 1));
  return settings;
}

function shapeValue(key: string, value: unknown, defaultValue: unknown): unknown {
  if (value === undefined || value === null) return defaultValue;
  const enumValues = ENUMS[key];
  if (enumValues) return typeof value === 'string' && enumValues.includes(value) ? value : defaultValue;
  if (typeof defaultValue === 'number') {
    if (typeof value !== 'number' || !Number.isFinite(value)) return defaultValue;
    const limits = NUMBER_LIMITS[key];
    if (!limits) return value;
    const rounded = limits.integer ? Math.round(value) : value;
    return Math.min(limits.max ?? Infinity, Math.max(limits.min, rounded));
  }
  if (typeof defaultValue === 'string') return typeof value === 'string' ? value.trim() : defaultValue;
  if (typeof defaultValue === 'boolean') return typeof value === 'boolean' ? value : defaultValue;
  return value;
}

function setPath(target: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) node = node[part] as Record<string, unknown>;
  node[parts[parts.length - 1]] = value;
}

/** The settings among RELOAD_SETTINGS that a configuration change touched (`affects` takes a full key). */
export function changedReloadSettings(affects: (fullKey: string) => boolean): string[] {
  return RELOAD_SETTINGS.filter((key) => affects(`${SECTION}.${key}`));
}

/** Whether `blip2.model` names a folder on disk rather than a Hugging Face repo id. */
export function isLocalModel(model: string): boolean {
  return /^(?:[/\\~.]|[a-zA-Z]:[/\\]|file:)/.test(model.trim());
}

export { ALT_RULE_IDS, RULE_SETTINGS };
