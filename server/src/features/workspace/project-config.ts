import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileRefused, readSmallFile } from '../../engine/small-file';
import { PROJECT_SETTING_KEYS, type SettingsLayer } from '../../protocol/settings';

/**
 * A repository's own BLIP-2 settings: `.blip2.json`, in the settings' nested shape
 * (`{ "altText": { "rules": {…}, "maxLength": 100 }, "generation": {…} }`). The CLI reads it, and the language
 * server reads it under what the editor's settings say, so `blip2 check` in CI and the editor agree.
 */
export const PROJECT_CONFIG_FILE = '.blip2.json';

/** Far above any settings file (they are a few hundred bytes); checked before a byte is read. */
export const MAX_PROJECT_CONFIG_BYTES = 64 * 1024;

/**
 * The `.blip2.json` that applies to files in `dir`: the nearest in `dir` or a folder above it, looking no
 * higher than the repository's root (the folder holding `.git`). Anything of that name but a folder counts, so that
 * one that cannot be used (a link out of the repository, a pipe) is reported rather than passed over.
 */
export function findProjectConfig(dir: string): string | undefined {
  for (let current = path.resolve(dir); ; ) {
    const candidate = path.join(current, PROJECT_CONFIG_FILE);
    if (isCandidate(candidate)) return candidate;
    const parent = path.dirname(current);
    if (parent === current || fs.existsSync(path.join(current, '.git'))) return undefined;
    current = parent;
  }
}

/** The folder whose `.git` marks the repository around `dir`, else `dir` itself. */
export function repositoryRoot(dir: string): string {
  for (let current = path.resolve(dir); ; ) {
    if (fs.existsSync(path.join(current, '.git'))) return current;
    const parent = path.dirname(current);
    if (parent === current) return path.resolve(dir);
    current = parent;
  }
}

/**
 * The settings layer of a `.blip2.json`. The file must be a regular file of at most 64 KB inside the repository
 * (a symbolic link may lead elsewhere in it, never out of it: a cloned repository must not make the editor read
 * and quote `/etc/passwd`); each is checked before a byte is read. A file that fails a check, cannot be read or is
 * not JSON is a layer with no value and one problem, so a broken file is reported instead of silently changing what
 * is checked.
 */
export function readProjectConfig(file: string, displayName = file): SettingsLayer & { problems: string[] } {
  const layer = { source: displayName, strict: true, allowed: PROJECT_SETTING_KEYS };
  const refused = (why: string) => ({ ...layer, value: undefined, problems: [`${displayName}: ${why}; its settings were not used.`] });
  let text: string;
  try {
    const real = fs.realpathSync(file);
    const root = fs.realpathSync(repositoryRoot(path.dirname(file)));
    const inside = path.relative(root, real);
    if (inside.startsWith('..') || path.isAbsolute(inside)) return refused('is a symbolic link to a file outside the repository');
    text = readSmallFile(real, MAX_PROJECT_CONFIG_BYTES, 'a settings file');
  } catch (e) {
    if (e instanceof FileRefused) return refused(e.why);
    return refused(`cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return { ...layer, value: JSON.parse(text.replace(/^\uFEFF/, '')), problems: [] };
  } catch (e) {
    return refused(`is not valid JSON (${(e as Error).message.slice(0, 120)})`);
  }
}

function isCandidate(file: string): boolean {
  try {
    return !fs.lstatSync(file).isDirectory();
  } catch {
    return false;
  }
}
