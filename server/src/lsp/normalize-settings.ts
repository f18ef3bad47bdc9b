import { normalizeAltRuleSettings } from '../features/alt-text/rules';
import { DEFAULT_SETTINGS, type Blip2Settings, type DeviceSetting, type PrecisionSetting } from '../protocol/settings';

const PRECISIONS: readonly PrecisionSetting[] = ['auto', 'fp32', 'fp16', 'int8', 'int4'];
const DEVICES: readonly DeviceSetting[] = ['auto', 'cpu', 'cuda', 'dml', 'coreml', 'webgpu'];

type Json = Record<string, unknown>;

/**
 * Layers of `blip2` settings as clients send them (any JSON, any subset: VS Code's full object, a Neovim user's
 * three keys) made into one whole `Blip2Settings`, later layers winning. A value of the wrong type or out of
 * range is ignored rather than trusted, so a typo never breaks the server or switches checking off.
 */
export function normalizeSettings(...layers: unknown[]): Blip2Settings {
  const s = structuredClone(DEFAULT_SETTINGS);
  for (const raw of layers) {
    if (!isObject(raw)) continue;
    s.model = str(raw.model, s.model, true);
    s.precision = oneOf(raw.precision, PRECISIONS, s.precision);
    s.device = oneOf(raw.device, DEVICES, s.device);
    s.threads = int(raw.threads, s.threads, 0, 1024);
    s.modelStore = str(raw.modelStore, s.modelStore, false);
    s.offline = bool(raw.offline, s.offline);
    s.unloadAfterMinutes = num(raw.unloadAfterMinutes, s.unloadAfterMinutes, 0, 24 * 60);
    if (isObject(raw.generation)) {
      const g = raw.generation;
      s.generation = {
        maxNewTokens: int(g.maxNewTokens, s.generation.maxNewTokens, 1, 512),
        minNewTokens: int(g.minNewTokens, s.generation.minNewTokens, 0, 512),
        numBeams: int(g.numBeams, s.generation.numBeams, 1, 16),
        alternatives: int(g.alternatives, s.generation.alternatives, 0, 15),
        repetitionPenalty: num(g.repetitionPenalty, s.generation.repetitionPenalty, 0.01, 10),
        noRepeatNgramSize: int(g.noRepeatNgramSize, s.generation.noRepeatNgramSize, 0, 64),
        captionPrompt: str(g.captionPrompt, s.generation.captionPrompt, false),
      };
    }
    if (isObject(raw.altText)) {
      const a = raw.altText;
      const rules = normalizeAltRuleSettings({ rules: { ...s.altText.rules, ...(isObject(a.rules) ? a.rules : {}) }, maxLength: a.maxLength ?? s.altText.maxLength });
      s.altText = { ...rules, captionOnOpen: bool(a.captionOnOpen, s.altText.captionOnOpen) };
    }
    if (isObject(raw.localImages)) {
      s.localImages = {
        maxBytes: int(raw.localImages.maxBytes, s.localImages.maxBytes, 1, Number.MAX_SAFE_INTEGER),
        outsideWorkspace: bool(raw.localImages.outsideWorkspace, s.localImages.outsideWorkspace),
      };
    }
    if (isObject(raw.remoteImages)) {
      s.remoteImages = {
        enabled: bool(raw.remoteImages.enabled, s.remoteImages.enabled),
        maxBytes: int(raw.remoteImages.maxBytes, s.remoteImages.maxBytes, 1, Number.MAX_SAFE_INTEGER),
      };
    }
    if (isObject(raw.cache)) s.cache = { maxMegabytes: num(raw.cache.maxMegabytes, s.cache.maxMegabytes, 0, 1024 * 1024) };
  }
  return s;
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function str(value: unknown, fallback: string, nonEmpty: boolean): string {
  if (typeof value !== 'string') return fallback;
  return nonEmpty && value.trim() === '' ? fallback : value;
}

function bool(value: unknown, fallback: boolean): boolean {
  return typeof value === 'boolean' ? value : fallback;
}

function num(value: unknown, fallback: number, min: number, max: number): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= min && value <= max ? value : fallback;
}

function int(value: unknown, fallback: number, min: number, max: number): number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max ? value : fallback;
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[], fallback: T): T {
  return typeof value === 'string' && (allowed as readonly string[]).includes(value) ? (value as T) : fallback;
}
