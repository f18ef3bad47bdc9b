import * as fs from 'node:fs';
import * as path from 'node:path';
import { PROJECT_SETTING_KEYS, type SettingsLayer } from '../../protocol/settings';

/**
 * A repository's own BLIP-2 settings: `.blip2.json`, in the settings' nested shape
 * (`{ "altText": { "rules": {…}, "maxLength": 100 }, "generation": {…} }`). The CLI reads it, and the language
 * server reads it under what the editor's settings say, so `blip2 check` in CI and the editor agree.
 */
export const PROJECT_CONFIG_FILE = '.blip2.json';

/**
 * The `.blip2.json` that applies to files in `dir`: the nearest in `dir` or a folder above it, looking no
 * higher than the repository's root (the folder holding `.git`).
 */
export function findProjectConfig(dir: string): string | undefined {
  for (let current = path.resolve(dir); ; ) {
    const candidate = path.join(current, PROJECT_CONFIG_FILE);
    if (isFile(candidate)) return candidate;
    const parent = path.dirname(current);
    if (parent === current || fs.existsSync(path.join(current, '.git'))) return undefined;
    current = parent;
  }
}

/**
 * The settings layer of a `.blip2.json`; a file that cannot be read or is not JSON is a layer with no value and
 * one problem, so a broken file is reported instead of silently changing what is checked.
 */
export function readProjectConfig(file: string, displayName = file): SettingsLayer & { problems: string[] } {
  const layer = { source: displayName, strict: true, allowed: PROJECT_SETTING_KEYS };
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return { ...layer, value: undefined, problems: [`${displayName}: cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}).`] };
  }
  try {
    return { ...layer, value: JSON.parse(text.replace(/^\uFEFF/, '')), problems: [] };
  } catch (e) {
    return { ...layer, value: undefined, problems: [`${displayName}: is not valid JSON (${(e as Error).message}); its settings were not used.`] };
  }
}

function isFile(file: string): boolean {
  try {
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
