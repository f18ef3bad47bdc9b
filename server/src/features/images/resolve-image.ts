import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { percentDecode } from './image-reference';

/** Where the image behind a destination is. Never thrown: an odd path is a result the caller shows. */
export type ResolvedImage =
  /** A file on disk. `alternatives`, when present, are where else it may be, to try in order if `path` is missing. */
  | { kind: 'file'; path: string; uri: string; alternatives?: string[] }
  | { kind: 'remote'; url: string }
  /** An `http(s)` image while remote images are switched off. */
  | { kind: 'remote-disallowed'; url: string }
  | { kind: 'inline'; mimeType: string; bytes: Uint8Array }
  | { kind: 'unresolved'; reason: string };

export interface ResolveContext {
  /** The document the destination is written in (an LSP URI, normally `file:`). */
  documentUri: string;
  /** The workspace folders' URIs; a destination starting with `/` is relative to the one holding the document. */
  workspaceFolders?: readonly string[];
  /** The user's setting; remote images are never fetched without it. */
  allowRemote: boolean;
}

/**
 * Turns a destination as written (`url` of an image reference: escapes resolved, percent-encoding kept) into
 * a file, a remote URL or inline bytes. Relative paths are relative to the document; `/x.png` is relative to
 * the workspace folder (as VS Code's markdown preview reads it), or the file system root outside a workspace;
 * the query and fragment of a local path are dropped.
 */
export function resolveImage(destination: string, context: ResolveContext): ResolvedImage {
  const value = destination.trim();
  if (!value) return { kind: 'unresolved', reason: 'The image has no path.' };

  if (/^data:/i.test(value)) return decodeDataUri(value);
  if (value.startsWith('//')) return remote(`https:${value}`, context);

  const scheme = /^([a-z][a-z0-9+.-]+):/i.exec(value)?.[1]?.toLowerCase();
  if (scheme === 'http' || scheme === 'https') return remote(value, context);
  if (scheme === 'file') return fileUri(value);
  // One letter before the colon is a Windows drive (`C:\x.png`), not a scheme.
  if (scheme) return { kind: 'unresolved', reason: `Images at "${scheme}:" addresses are not supported.` };

  const local = percentDecode(value.replace(/[?#].*$/s, ''));
  if (!local) return { kind: 'unresolved', reason: 'The image path is only a query or fragment.' };

  if (path.isAbsolute(local) && !/^[/\\]/.test(local)) return file(path.normalize(local)); // drive-letter path

  if (/^[/\\]/.test(local)) {
    const root = workspaceRoot(context);
    if (!root) return file(path.normalize(local));
    const inWorkspace = path.join(root, local);
    return { ...file(inWorkspace), alternatives: [path.normalize(local)] };
  }

  const documentPath = localPath(context.documentUri);
  if (!documentPath) {
    const root = workspaceRoot(context);
    if (root) return file(path.resolve(root, local));
    return { kind: 'unresolved', reason: 'Save the document first: a relative image path needs its folder.' };
  }
  return file(path.resolve(path.dirname(documentPath), local));
}

function remote(url: string, context: ResolveContext): ResolvedImage {
  return context.allowRemote ? { kind: 'remote', url } : { kind: 'remote-disallowed', url };
}

function file(filePath: string): Extract<ResolvedImage, { kind: 'file' }> {
  return { kind: 'file', path: filePath, uri: pathToFileURL(filePath).href };
}

function fileUri(value: string): ResolvedImage {
  try {
    const url = new URL(value);
    url.search = '';
    url.hash = '';
    return file(fileURLToPath(url));
  } catch {
    return { kind: 'unresolved', reason: `"${value}" is not a local file address.` };
  }
}

/** The file system path of a `file:` URI; undefined for any other. */
export function localPath(uri: string): string | undefined {
  if (!/^file:/i.test(uri)) return undefined;
  try {
    return fileURLToPath(uri);
  } catch {
    return undefined;
  }
}

/** The workspace folder holding the document (the innermost, for nested folders), else the first one. */
function workspaceRoot(context: ResolveContext): string | undefined {
  const folders = (context.workspaceFolders ?? []).map(localPath).filter((p): p is string => p !== undefined);
  const documentPath = localPath(context.documentUri);
  if (documentPath) {
    const holding = folders
      .filter((folder) => {
        const relative = path.relative(folder, documentPath);
        return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
      })
      .sort((a, b) => b.length - a.length);
    if (holding.length) return holding[0];
  }
  return folders[0];
}

/** `data:[<mime>][;base64],<data>`; only images are accepted, since the bytes go to the image decoder. */
function decodeDataUri(value: string): ResolvedImage {
  const comma = value.indexOf(',');
  if (comma < 0) return { kind: 'unresolved', reason: 'The data: address has no data.' };
  const parameters = value.slice(5, comma).split(';').map((p) => p.trim());
  const mimeType = (parameters[0] || 'text/plain').toLowerCase();
  if (!mimeType.startsWith('image/')) return { kind: 'unresolved', reason: `The data: address holds ${mimeType}, not an image.` };
  const data = value.slice(comma + 1);
  const base64 = parameters.slice(1).some((p) => p.toLowerCase() === 'base64');
  try {
    const bytes = base64
      ? Buffer.from(decodeURIComponent(data).replace(/\s+/g, ''), 'base64')
      : Buffer.from(decodeURIComponent(data), 'utf8');
    if (bytes.length === 0) return { kind: 'unresolved', reason: 'The data: address is empty.' };
    return { kind: 'inline', mimeType, bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
  } catch {
    return { kind: 'unresolved', reason: 'The data: address is not valid percent-encoding.' };
  }
}

/**
 * The file a resolved destination names on disk: its path, or the first of its alternatives that exists (a
 * `/docs/x.png` may be workspace-relative or absolute). Undefined when none exists.
 */
export function existingImageFile(resolved: Extract<ResolvedImage, { kind: 'file' }>): string | undefined {
  return [resolved.path, ...(resolved.alternatives ?? [])].find((p) => fs.existsSync(p));
}
