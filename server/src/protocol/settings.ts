// The `blip2.*` settings, declared once for the VS Code client, the language server and the CLI: their types,
// defaults and limits, and the one validator every side runs on what a user wrote. package.json contributes the
// same settings (a test checks that its defaults, types, enums and limits are these).
import { DEFAULT_MAX_IMAGE_FILE_BYTES } from '../engine/preprocess/image-file';
import { quoteValue } from '../engine/units';

export { quoteValue };

export const PRECISION_SETTINGS = ['auto', 'fp32', 'fp16', 'int8', 'int4'] as const;
export type PrecisionSetting = (typeof PRECISION_SETTINGS)[number];
export const DEVICE_SETTINGS = ['auto', 'cpu', 'cuda', 'dml', 'coreml', 'webgpu'] as const;
export type DeviceSetting = (typeof DEVICE_SETTINGS)[number];

export const ALT_RULE_IDS = ['missing-alt', 'default-alt', 'placeholder-alt', 'redundant-phrase', 'file-name-alt', 'alt-too-long'] as const;
export type AltRuleId = (typeof ALT_RULE_IDS)[number];
export const RULE_SETTINGS = ['error', 'warning', 'information', 'hint', 'off'] as const;
export type RuleSetting = (typeof RULE_SETTINGS)[number];
export type RuleSeverity = Exclude<RuleSetting, 'off'>;

/** How each rule is reported unless a setting says otherwise. */
export const DEFAULT_RULE_SEVERITIES: Readonly<Record<AltRuleId, RuleSeverity>> = {
  'missing-alt': 'warning',
  'default-alt': 'warning',
  'placeholder-alt': 'warning',
  'redundant-phrase': 'information',
  'file-name-alt': 'warning',
  'alt-too-long': 'information',
};

export interface AltRuleSettings {
  rules: Readonly<Record<AltRuleId, RuleSetting>>;
  maxLength: number;
}

export const DEFAULT_ALT_RULE_SETTINGS: AltRuleSettings = { rules: { ...DEFAULT_RULE_SEVERITIES }, maxLength: 125 };

export interface Blip2Settings {
  /** Hub repo id, checkpoint folder or converted folder. */
  model: string;
  precision: PrecisionSetting;
  device: DeviceSetting;
  /** Threads per operator; 0 lets onnxruntime choose. */
  threads: number;
  /** Folder of converted models; '' for BLIP2_HOME or the per-user cache. */
  modelStore: string;
  /** Never contact the Hugging Face Hub. */
  offline: boolean;
  /** Keep a downloaded checkpoint in the Hugging Face cache (and convert it from there) instead of converting it as it streams. */
  keepSource: boolean;
  generation: {
    maxNewTokens: number;
    /** Keeps the end token away until this many tokens exist, for longer captions. */
    minNewTokens: number;
    numBeams: number;
    /** Captions the quick fix offers besides the one it inserts, from a beam search it runs for them (0: none). */
    alternatives: number;
    repetitionPenalty: number;
    noRepeatNgramSize: number;
    /** Text the caption continues, e.g. "a photo of"; '' for none. */
    captionPrompt: string;
  };
  altText: AltRuleSettings & {
    /** Queue captions for a document's images when it opens, so hovers are instant. */
    captionOnOpen: boolean;
  };
  localImages: {
    /** The largest image file read; larger ones are refused before a byte is read. */
    maxBytes: number;
    /**
     * Read images that documents name outside the workspace folders (absolute paths, `..`, symbolic links
     * leading out); off, so a document cannot make the server read, caption and write out the user's other files.
     */
    outsideWorkspace: boolean;
  };
  remoteImages: {
    /** Fetch http(s) images for hovers and alt text; off, because it sends requests off the machine. */
    enabled: boolean;
    maxBytes: number;
  };
  cache: {
    /** Disk cache size for captions and image encodings, in megabytes. */
    maxMegabytes: number;
  };
  /** Unload the model after this many idle minutes (0 keeps it loaded). */
  unloadAfterMinutes: number;
  server: {
    /**
     * A BLIP-2 server (blip2 serve, or vLLM serving BLIP-2) that computes instead of the model here; '' for none.
     * Images are sent to it, so only the user sets it: never a workspace or a repository's .blip2.json.
     */
    url: string;
  };
}

export const DEFAULT_SETTINGS: Blip2Settings = {
  model: 'Salesforce/blip2-opt-2.7b',
  precision: 'auto',
  device: 'auto',
  threads: 0,
  modelStore: '',
  offline: false,
  keepSource: false,
  generation: {
    // A hover caption in the time benchmark measures (docs/performance.md): greedy, and as long as an alt text should be
    // (20 tokens is about 100 characters); the quick fix's alternatives come from beam search only when it runs.
    maxNewTokens: 20,
    minNewTokens: 0,
    numBeams: 1,
    alternatives: 2,
    repetitionPenalty: 1.0,
    noRepeatNgramSize: 3,
    captionPrompt: '',
  },
  altText: { ...DEFAULT_ALT_RULE_SETTINGS, captionOnOpen: true },
  localImages: { maxBytes: DEFAULT_MAX_IMAGE_FILE_BYTES, outsideWorkspace: false },
  remoteImages: { enabled: false, maxBytes: 10 * 1024 * 1024 },
  cache: { maxMegabytes: 256 },
  unloadAfterMinutes: 15,
  server: { url: '' },
};

/**
 * Settings that decide where the user's images go: taken from the user's own settings only. VS Code's `machine`
 * scope already keeps workspace values out; the client warns about one a workspace sets, and a repository's
 * `.blip2.json` can never set them (PROJECT_SETTING_KEYS).
 */
export const USER_ONLY_SETTINGS = ['server.url'] as const;

/** Settings whose change needs the model reloaded (the client offers "Restart now" for these). */
export const RELOAD_SETTINGS = ['model', 'precision', 'device', 'threads', 'modelStore'] as const;

/** A number's range: the one description every side checks (settings here, the CLI's options, package.json). */
export interface NumberLimits {
  min: number;
  max?: number;
  integer: boolean;
  /** Also a power of two (block sizes). */
  powerOfTwo?: boolean;
  /** 0, or at least this much: 0 has a meaning of its own (a temperature of 0 is greedy decoding). */
  zeroOrAtLeast?: number;
}

const MIB = 1024 * 1024;

/** Limits of the numeric settings, by key relative to the section; package.json declares the same (a test checks). */
export const NUMBER_LIMITS: Readonly<Record<string, NumberLimits>> = {
  threads: { min: 0, max: 256, integer: true },
  'generation.maxNewTokens': { min: 1, max: 512, integer: true },
  'generation.minNewTokens': { min: 0, max: 512, integer: true },
  'generation.numBeams': { min: 1, max: 16, integer: true },
  'generation.alternatives': { min: 0, max: 15, integer: true },
  'generation.repetitionPenalty': { min: 1, max: 5, integer: false },
  'generation.noRepeatNgramSize': { min: 0, max: 20, integer: true },
  'altText.maxLength': { min: 1, max: 1000, integer: true },
  // Whole files are read into one buffer: a gigabyte is far above any image and below what a buffer can hold.
  'localImages.maxBytes': { min: 1024, max: 1024 * MIB, integer: true },
  'remoteImages.maxBytes': { min: 1024, max: 1024 * MIB, integer: true },
  'cache.maxMegabytes': { min: 0, integer: true },
  // A week: a timer longer than 24.8 days fires at once (Node's setTimeout limit), unloading the model after every use.
  unloadAfterMinutes: { min: 0, max: 7 * 24 * 60, integer: true },
};

/**
 * Limits of the command line's numeric options that are no setting, declared here beside the settings' so that one
 * function (`numberProblem`) checks every number a user gives, wherever it comes from.
 */
export const OPTION_LIMITS = {
  numReturnSequences: { min: 1, max: NUMBER_LIMITS['generation.numBeams'].max, integer: true },
  lengthPenalty: { min: -10, max: 10, integer: false },
  // 0 is greedy; below a hundredth, scores divided by the temperature overflow and nothing can be sampled.
  temperature: { min: 0, max: 100, integer: false, zeroOrAtLeast: 0.01 },
  // 0 turns top-k off; beyond any vocabulary it changes nothing.
  topK: { min: 0, max: 1_000_000, integer: true },
  topP: { min: 0, max: 1, integer: false },
  seed: { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
  // MatMulNBits' block sizes.
  blockSize: { min: 16, max: 256, integer: true, powerOfTwo: true },
  maxImageMegabytes: { min: 1, max: NUMBER_LIMITS['localImages.maxBytes'].max! / MIB, integer: true },
} as const satisfies Record<string, NumberLimits>;

/** "a whole number from 1 to 16": what a value must be, to end a sentence that names it. */
export function describeLimits(limits: NumberLimits): string {
  const kind = limits.powerOfTwo ? 'a power of two' : limits.integer ? 'a whole number' : 'a number';
  const min = limits.zeroOrAtLeast ?? limits.min;
  const range = limits.max === undefined ? `of at least ${min}` : `from ${min} to ${limits.max}`;
  return `${limits.zeroOrAtLeast !== undefined ? '0 or ' : ''}${kind} ${range}`;
}

/** Whether `value` is within `limits`. */
export function withinLimits(value: number, limits: NumberLimits): boolean {
  if (!Number.isFinite(value) || value < limits.min || value > (limits.max ?? Infinity)) return false;
  if (limits.integer && !Number.isInteger(value)) return false;
  if (limits.zeroOrAtLeast !== undefined && value !== 0 && value < limits.zeroOrAtLeast) return false;
  return !limits.powerOfTwo || (value & (value - 1)) === 0;
}

const ENUMS: Readonly<Record<string, readonly string[]>> = { precision: PRECISION_SETTINGS, device: DEVICE_SETTINGS };

/** Settings that are one object-valued key (one entry per rule) rather than one key per field. */
const OBJECT_KEYS = new Set(['altText.rules']);

/** Strings that must not be blank: a blank one means "not set". */
const NON_EMPTY = new Set(['model']);

/**
 * What a repository's `.blip2.json` may set: the alt-text rules, the length limit and the generation settings,
 * so the editor and CI agree. Never the model, the store or remote images: a folder must not choose what runs
 * on the machine or what is fetched from the web.
 */
export const PROJECT_SETTING_KEYS: readonly string[] = ['altText.rules', 'altText.maxLength', ...Object.keys(DEFAULT_SETTINGS.generation).map((k) => `generation.${k}`)];

export interface SettingLeaf {
  /** Relative to the section: `generation.maxNewTokens`. */
  key: string;
  defaultValue: unknown;
}

/** Every setting key under `blip2.`, with its default, in the order of `DEFAULT_SETTINGS`. */
export function settingLeaves(): SettingLeaf[] {
  const leaves: SettingLeaf[] = [];
  const walk = (value: unknown, prefix: string): void => {
    if (isObject(value) && !OBJECT_KEYS.has(prefix)) {
      for (const [name, child] of Object.entries(value)) walk(child, prefix ? `${prefix}.${name}` : name);
    } else {
      leaves.push({ key: prefix, defaultValue: value });
    }
  };
  walk(DEFAULT_SETTINGS, '');
  return leaves;
}

/** One layer of settings as some source gave it (any JSON), and what to call that source in a problem. */
export interface SettingsLayer {
  value: unknown;
  /** "`.blip2.json`", "initializationOptions"…; problems are reported as `<source>: <what is wrong>`. */
  source?: string;
  /** Report keys that are not settings (for files people write by hand; editors send keys of their own). */
  strict?: boolean;
  /** Only these keys count (the project file's); the others are reported when strict, else ignored. */
  allowed?: readonly string[];
}

export interface ValidatedSettings {
  settings: Blip2Settings;
  /** One sentence per value that was not used as given, saying what was used instead. */
  problems: string[];
}

/**
 * The whole settings object from layers of what users wrote (nested objects, any subset), later layers winning.
 * A value of the wrong type or not in its enum is ignored, a number outside its limits is clamped (and rounded
 * when it must be whole), so a typo never reaches the engine nor switches checking off; each is a problem.
 */
export function validateSettings(layers: readonly SettingsLayer[]): ValidatedSettings {
  const result = structuredClone(DEFAULT_SETTINGS) as unknown as Record<string, unknown>;
  const problems: string[] = [];
  for (const layer of layers) {
    if (layer.value === undefined || layer.value === null) continue;
    const say = (message: string): void => void problems.push(layer.source ? `${layer.source}: ${message}` : message);
    if (!isObject(layer.value)) {
      say('the settings must be an object; they were ignored.');
      continue;
    }
    const leaves = settingLeaves();
    if (layer.strict) for (const key of unknownKeys(layer.value, '')) say(`${quoteValue(key)} is not a setting; it was ignored.`);
    for (const { key, defaultValue } of leaves) {
      const value = getPath(layer.value, key);
      if (value === undefined || value === null) continue;
      if (layer.allowed && !layer.allowed.some((allowed) => key === allowed)) {
        if (layer.strict) say(`"${key}" cannot be set here; it was ignored.`);
        continue;
      }
      const shaped = shapeValue(key, value, defaultValue, getPath(result, key), say);
      if (shaped !== undefined) setPath(result, key, shaped);
    }
  }
  const settings = result as unknown as Blip2Settings;
  const g = settings.generation;
  g.minNewTokens = Math.min(g.minNewTokens, g.maxNewTokens);
  return { settings, problems };
}

/** `validateSettings` without the problems, for layers nobody is told about. */
export function normalizeSettings(...layers: unknown[]): Blip2Settings {
  return validateSettings(layers.map((value) => ({ value }))).settings;
}

/** The nested settings object from flat dotted keys (how VS Code names them); keys `get` has no value for are left out. */
export function nestSettings(get: (key: string) => unknown): Record<string, unknown> {
  const nested: Record<string, unknown> = {};
  for (const { key } of settingLeaves()) {
    const value = get(key);
    if (value !== undefined) setPath(nested, key, value);
  }
  return nested;
}

/**
 * The `blip2` settings inside what a client sends: `{ blip2: {...} }` (a whole configuration, as
 * `workspace/didChangeConfiguration` and most editors' tables have it), `{ settings: {...} }` (the VS Code
 * extension's initializationOptions) or the settings themselves.
 */
export function unwrapSettings(value: unknown): unknown {
  if (!isObject(value)) return value;
  if (isObject(value.blip2)) return value.blip2;
  if (isObject(value.settings)) return unwrapSettings(value.settings);
  return value;
}

function shapeValue(key: string, value: unknown, defaultValue: unknown, current: unknown, say: (m: string) => void): unknown {
  const name = `blip2.${key}`;
  if (OBJECT_KEYS.has(key)) return shapeRules(value, current as Record<AltRuleId, RuleSetting>, name, say);
  const allowed = ENUMS[key];
  if (allowed) {
    if (typeof value === 'string' && allowed.includes(value)) return value;
    say(`${name} must be one of ${allowed.join(', ')} (got ${quoteValue(value)}); using ${quoteValue(current)}.`);
    return undefined;
  }
  switch (typeof defaultValue) {
    case 'number': {
      const limits = NUMBER_LIMITS[key];
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        say(`${name} must be a number (got ${quoteValue(value)}); using ${quoteValue(current)}.`);
        return undefined;
      }
      if (!limits || withinLimits(value, limits)) return value;
      const rounded = limits.integer ? Math.round(value) : value;
      const clamped = Math.min(limits.max ?? Infinity, Math.max(limits.min, rounded));
      say(`${name} must be ${describeLimits(limits)} (got ${quoteValue(value)}); using ${clamped}.`);
      return clamped;
    }
    case 'string':
      if (typeof value !== 'string') {
        say(`${name} must be a string (got ${quoteValue(value)}); using ${quoteValue(current)}.`);
        return undefined;
      }
      return NON_EMPTY.has(key) && value.trim() === '' ? undefined : value.trim();
    case 'boolean':
      if (typeof value === 'boolean') return value;
      say(`${name} must be true or false (got ${quoteValue(value)}); using ${quoteValue(current)}.`);
      return undefined;
    default:
      return value;
  }
}

function shapeRules(value: unknown, current: Record<AltRuleId, RuleSetting>, name: string, say: (m: string) => void): Record<AltRuleId, RuleSetting> | undefined {
  if (!isObject(value)) {
    say(`${name} must be an object with one entry per rule (got ${quoteValue(value)}); it was ignored.`);
    return undefined;
  }
  const rules = { ...current };
  for (const [id, setting] of Object.entries(value)) {
    if (!(ALT_RULE_IDS as readonly string[]).includes(id)) {
      say(`${name} has no rule ${quoteValue(id)} (the rules are ${ALT_RULE_IDS.join(', ')}); it was ignored.`);
    } else if (typeof setting !== 'string' || !(RULE_SETTINGS as readonly string[]).includes(setting)) {
      say(`${name}[${quoteValue(id)}] must be one of ${RULE_SETTINGS.join(', ')} (got ${quoteValue(setting)}); using ${quoteValue(rules[id as AltRuleId])}.`);
    } else {
      rules[id as AltRuleId] = setting as RuleSetting;
    }
  }
  return rules;
}

/** Dotted keys in `value` that are no setting and no object holding settings. */
function unknownKeys(value: Record<string, unknown>, prefix: string): string[] {
  const known = new Set(settingLeaves().map((leaf) => leaf.key));
  const groups = new Set([...known].flatMap((key) => key.split('.').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('.'))));
  const found: string[] = [];
  for (const [name, child] of Object.entries(value)) {
    const key = prefix ? `${prefix}.${name}` : name;
    if (known.has(key)) continue;
    if (groups.has(key) && isObject(child)) found.push(...unknownKeys(child, key));
    else found.push(key);
  }
  return found;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function getPath(target: unknown, key: string): unknown {
  let node = target;
  for (const part of key.split('.')) {
    if (!isObject(node)) return undefined;
    node = node[part];
  }
  return node;
}

function setPath(target: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    if (!isObject(node[part])) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts[parts.length - 1]] = value;
}
