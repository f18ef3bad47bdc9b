// The `blip2.*` settings as VS Code stores them (flat dotted keys), read through the one settings module the
// server and the CLI use. No `vscode` import: the extension passes a getter, the tests pass a plain object.
import { parse as parseJsonc } from 'jsonc-parser';
import {
  normalizeSettings,
  nestSettings,
  RELOAD_SETTINGS,
  USER_ONLY_SETTINGS,
  type Blip2Settings,
} from '../../server/src/protocol/settings';

export const SECTION = 'blip2';
/** `publisher.name` in package.json (a test checks). */
export const EXTENSION_ID = 'blip2-local.blip2-vscode';
/** The BLIP-2 server's API key in VS Code's SecretStorage; the server process gets it as BLIP2_API_KEY. */
export const API_KEY_SECRET = 'blip2.server.apiKey';

/** The whole settings object from what the user wrote, validated as the server validates it. */
export function readSettings(get: (key: string) => unknown): Blip2Settings {
  return normalizeSettings(nestSettings(get));
}

/** What VS Code's `inspect` says about one setting: the values set in each scope (the default is not one). */
export interface InspectedSetting {
  globalValue?: unknown;
  workspaceValue?: unknown;
  workspaceFolderValue?: unknown;
}

/**
 * Only the settings the user set somewhere, nested as the server takes them: where VS Code's settings are
 * silent, the server falls back to the repository's `.blip2.json` and then to the defaults, so a project file
 * is not overridden by VS Code's own defaults. `get` gives the effective value (it applies workspace trust);
 * the rules object is merged from the scopes without the default, so one rule set in settings.json does not
 * bring the defaults of all the others.
 */
export function explicitSettings(inspect: (key: string) => InspectedSetting | undefined, get: (key: string) => unknown): Record<string, unknown> {
  return nestSettings((key) => {
    const scopes = inspect(key);
    if (!scopes) return undefined;
    const values = [scopes.globalValue, scopes.workspaceValue, scopes.workspaceFolderValue].filter((v) => v !== undefined);
    if (values.length === 0) return undefined;
    // Where images go is the user's choice alone: a workspace's value never counts (VS Code's machine scope
    // already keeps it out; this holds even where it would not).
    if ((USER_ONLY_SETTINGS as readonly string[]).includes(key)) return scopes.globalValue;
    if (key === 'altText.rules') return Object.assign({}, ...values.filter((v) => typeof v === 'object' && v !== null));
    return get(key);
  });
}

/** The settings among RELOAD_SETTINGS that a configuration change touched (`affects` takes a full key). */
export function changedReloadSettings(affects: (fullKey: string) => boolean): string[] {
  return RELOAD_SETTINGS.filter((key) => affects(`${SECTION}.${key}`));
}

/** Whether `blip2.model` names a folder on disk rather than a Hugging Face repo id. */
export function isLocalModel(model: string): boolean {
  return /^(?:[/\\~.]|[a-zA-Z]:[/\\]|file:)/.test(model.trim());
}

/**
 * The user-only settings (`blip2.server.url`) a workspace's settings file names: a `.vscode/settings.json` or the
 * `settings` of a `.code-workspace` file (JSON with comments). VS Code ignores them (machine scope) without a word;
 * the extension says so, since a repository that names a server is asking for the user's images.
 */
export function userOnlySettingsIn(text: string, workspaceFile = false): string[] {
  const parsed = parseJsonc(text, [], { allowTrailingComma: true }) as unknown;
  const settings = workspaceFile ? (parsed as { settings?: unknown } | undefined)?.settings : parsed;
  if (typeof settings !== 'object' || settings === null) return [];
  const flat = settings as Record<string, unknown>;
  return USER_ONLY_SETTINGS.map((key) => `${SECTION}.${key}`).filter((full) => {
    if (flat[full] !== undefined) return true;
    // Also nested under "blip2", as some write them.
    let node: unknown = flat;
    for (const part of full.split('.')) node = typeof node === 'object' && node !== null ? (node as Record<string, unknown>)[part] : undefined;
    return node !== undefined;
  });
}
