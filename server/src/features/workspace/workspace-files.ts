import type { Dirent } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { CancellationToken } from 'vscode-languageserver-protocol';
import { throwIfCancelled } from '../cancellation';
import { compileExcludes } from './glob-excludes';

/** The language ids of the files "Generate missing alt text" edits, by extension (what VS Code would assign). */
const LANGUAGE_BY_EXTENSION: Readonly<Record<string, string>> = {
  '.md': 'markdown',
  '.markdown': 'markdown',
  '.mdown': 'markdown',
  '.mkd': 'markdown',
  '.html': 'html',
  '.htm': 'html',
  '.xhtml': 'html',
  '.jsx': 'javascriptreact',
  '.tsx': 'typescriptreact',
};

export function languageIdOfPath(filePath: string): string | undefined {
  return LANGUAGE_BY_EXTENSION[path.extname(filePath).toLowerCase()];
}

/** Folders never worth walking: dependencies, version control, and every dot-folder (.git, .vscode, .cache…). */
export function skippedFolder(name: string): boolean {
  return name === 'node_modules' || name.startsWith('.');
}

export interface WalkOptions {
  /** `files.exclude` as VS Code stores it: glob → true (excluded) or false; `when` clauses are not supported. */
  excludes?: Record<string, unknown>;
  /** Stop after this many files: a safety net for a workspace that is someone's home folder. */
  maxFiles?: number;
  /** Larger files are skipped: they are generated, not written. */
  maxFileBytes?: number;
}

export interface WorkspaceFile {
  uri: string;
  path: string;
  languageId: string;
}

/** The markdown, HTML, JSX and TSX files under the workspace folders, in a stable order. */
export async function findWorkspaceFiles(folderUris: readonly string[], options: WalkOptions, token: CancellationToken): Promise<WorkspaceFile[]> {
  const maxFiles = options.maxFiles ?? 10_000;
  const maxFileBytes = options.maxFileBytes ?? 2 * 1024 * 1024;
  const excluded = compileExcludes(options.excludes ?? {});
  const found: WorkspaceFile[] = [];
  const seen = new Set<string>();
  for (const folderUri of folderUris) {
    if (!folderUri.startsWith('file:')) continue;
    const root = fileURLToPath(folderUri);
    const pending = [root];
    while (pending.length > 0 && found.length < maxFiles) {
      throwIfCancelled(token);
      const dir = pending.shift()!;
      let entries: Dirent[];
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch {
        continue; // unreadable folders are not ours to report
      }
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const entry of entries) {
        const full = path.join(dir, entry.name);
        const relative = path.relative(root, full).split(path.sep).join('/');
        if (excluded(relative)) continue;
        if (entry.isDirectory()) {
          if (!skippedFolder(entry.name)) pending.push(full);
          continue;
        }
        if (!entry.isFile() || seen.has(full)) continue;
        const languageId = languageIdOfPath(full);
        if (!languageId) continue;
        try {
          if ((await fs.stat(full)).size > maxFileBytes) continue;
        } catch {
          continue;
        }
        seen.add(full);
        found.push({ uri: pathToFileURL(full).href, path: full, languageId });
        if (found.length >= maxFiles) break;
      }
    }
  }
  return found;
}
