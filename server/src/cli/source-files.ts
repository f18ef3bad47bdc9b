import type { Dirent } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import ignore, { type Ignore } from 'ignore';
import { repositoryRoot } from '../features/workspace/project-config';
import { languageIdOfPath, skippedFolder } from '../features/workspace/workspace-files';
import { UsageError } from './args';

export interface SourceFile {
  /** Absolute path. */
  path: string;
  /** Relative to the current folder, with `/`, as reports show it. */
  display: string;
  languageId: string;
}

/**
 * The markdown, HTML, JSX and TSX files under `paths`, sorted, honouring every `.gitignore` from the
 * repository's root (the folder with `.git`, else the current folder) down and skipping the folders the editor's
 * workspace command skips (`node_modules`, dot-folders). A file named on the command line is checked
 * even when ignored: it was asked for. A path that does not exist is a usage error.
 */
export function findSourceFiles(paths: readonly string[], cwd: string): SourceFile[] {
  const rules = new GitignoreRules(repositoryRoot(cwd));
  const found = new Map<string, SourceFile>();
  const add = (file: string, languageId: string): void => {
    if (!found.has(file)) found.set(file, { path: file, display: displayPath(file, cwd), languageId });
  };
  for (const given of paths.length > 0 ? paths : ['.']) {
    const start = path.resolve(cwd, given);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(start);
    } catch {
      throw new UsageError(`${given} does not exist.`, 'Give files or folders to check (default: the current folder).');
    }
    if (stat.isFile()) {
      const languageId = languageIdOfPath(start);
      if (!languageId) throw new UsageError(`${given} is not a markdown, HTML, JSX or TSX file.`);
      add(start, languageId);
      continue;
    }
    const pending = [start];
    while (pending.length > 0) {
      const dir = pending.pop()!;
      let entries: Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        continue; // an unreadable folder holds nothing we could check
      }
      for (const entry of entries) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) {
          if (!skippedFolder(entry.name) && !rules.ignores(full, true)) pending.push(full);
        } else if (entry.isFile()) {
          const languageId = languageIdOfPath(full);
          if (languageId && !rules.ignores(full, false)) add(full, languageId);
        }
      }
    }
  }
  return [...found.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** `file` as reports name it: relative to the current folder (absolute only on another drive); always with `/`. */
export function displayPath(file: string, cwd: string): string {
  const relative = path.relative(cwd, file);
  return (path.isAbsolute(relative) ? file : relative).split(path.sep).join('/');
}

/** The `.gitignore` of each folder, read once, each applied to paths relative to its own folder, as git does. */
class GitignoreRules {
  private readonly perFolder = new Map<string, Ignore | null>();

  constructor(private readonly root: string) {}

  ignores(file: string, isFolder: boolean): boolean {
    const relativeToRoot = path.relative(this.root, file);
    if (relativeToRoot.startsWith('..') || path.isAbsolute(relativeToRoot)) return false;
    // Every folder from the root down to the file's own, each with its rules for the path below it.
    const parts = relativeToRoot.split(path.sep);
    for (let depth = 0; depth < parts.length; depth++) {
      const folder = path.join(this.root, ...parts.slice(0, depth));
      const rules = this.rulesOf(folder);
      if (!rules) continue;
      const below = parts.slice(depth).join('/') + (isFolder ? '/' : '');
      if (rules.ignores(below)) return true;
    }
    return false;
  }

  private rulesOf(folder: string): Ignore | null {
    let rules = this.perFolder.get(folder);
    if (rules === undefined) {
      try {
        rules = ignore().add(fs.readFileSync(path.join(folder, '.gitignore'), 'utf8'));
      } catch {
        rules = null;
      }
      this.perFolder.set(folder, rules);
    }
    return rules;
  }
}
