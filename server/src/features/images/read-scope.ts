/**
 * Where the server reads the images that documents name. A document is the workspace's, not the user's: a cloned
 * repository could name `/home/me/Pictures/passport.jpg` and have its caption written into its own alt text. So
 * unless the user allows more (`blip2.localImages.outsideWorkspace`), an image is read only when its real path,
 * after every symbolic link, lies within a workspace folder, or, for a document outside every workspace folder,
 * within that document's folder (as VS Code's markdown preview lets images load). Images the user names
 * themselves (`blip2/caption`, the command line) are not confined.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { localPath } from './resolve-image';

export const OUTSIDE_WORKSPACE_HINT = 'Set "blip2.localImages.outsideWorkspace" to true to caption images anywhere on this machine.';

/** The folders a document's images may be read from. */
export function readRoots(documentUri: string, workspaceFolders: readonly string[]): string[] {
  const folders = workspaceFolders.map(localPath).filter((p): p is string => p !== undefined);
  const document = localPath(documentUri);
  if (document && !folders.some((folder) => within(folder, document))) folders.push(path.dirname(document));
  return folders;
}

/** Whether `file` lies within one of `roots` as written, before links: cheap enough for every code action. */
export function insideByPath(file: string, roots: readonly string[]): boolean {
  return roots.some((root) => within(root, file));
}

/** Why `file` may not be read from a document with these roots, after following its links; undefined when it may. */
export async function outsideReason(file: string, roots: readonly string[]): Promise<string | undefined> {
  let real: string;
  try {
    real = await fs.promises.realpath(file);
  } catch {
    // Missing or unreadable: the read that follows says so in its own words.
    return undefined;
  }
  const realRoots = await Promise.all(roots.map((root) => fs.promises.realpath(root).catch(() => root)));
  if (realRoots.some((root) => within(root, real))) return undefined;
  return outsideSentence(file, real === path.resolve(file) ? undefined : real);
}

/** The one sentence for an image outside the read scope (reached through a link to `leadsTo`, if given). */
export function outsideSentence(file: string, leadsTo?: string): string {
  return `${file} is outside the workspace folders${leadsTo ? ` (it leads to ${leadsTo})` : ''}, so it is not read. ${OUTSIDE_WORKSPACE_HINT}`;
}

function within(root: string, file: string): boolean {
  const relative = path.relative(root, file);
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}
