/**
 * A Hub repository that holds conversions in this project's layout (`blip2 publish` writes them): one folder per
 * precision, each a converted model with its blip2-onnx.json, or one converted model at the top. `--model
 * owner/repo` then downloads only the chosen precision's files, checks each against the Hub's checksum as it streams
 * and the whole folder against the manifest's, and uses it with no conversion: a team converts once and shares the
 * result through its own organisation or a mirror (HF_ENDPOINT).
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { listFiles } from '@huggingface/hub';
import { verifyModelFiles } from '../convert/integrity';
import { CONVERTER_VERSION, MANIFEST_FILE, MANIFEST_FORMAT, type ConvertedManifest } from '../convert/manifest';
import { PRECISIONS, type Precision } from '../convert/precision';
import { UserError } from '../errors';
import { FileFetcher, planFile, withLock, type HubDownloadOptions, type HubRevision, type PlannedFile } from './hub-download';
import { publishDir } from './model-store';

/** The folder of a repository that holds `precision`'s conversion ('' for one at the top), or undefined. */
function precisionFolder(rev: HubRevision, precision: Precision): string | undefined {
  if (rev.listing.has(MANIFEST_FILE)) return '';
  return rev.listing.has(precision) ? precision : undefined;
}

/** Whether the repository holds conversions at all (a manifest at the top, or a folder per precision). */
export function holdsConversions(rev: HubRevision): boolean {
  return rev.listing.has(MANIFEST_FILE) || PRECISIONS.some((p) => rev.listing.get(p)?.type === 'directory');
}

export interface ConvertedRepoPlan {
  /** The repository's files to download, with their paths in the repository. */
  files: PlannedFile[];
  /** Where each goes, relative to the converted folder. */
  targets: string[];
  manifest: ConvertedManifest;
  bytes: number;
  fetcher: FileFetcher;
}

/**
 * The files of `precision`'s conversion in a repository that holds conversions, after its manifest (downloaded into
 * `staging`) has been checked: this converter's version, this precision.
 */
export async function planConvertedDownload(rev: HubRevision, precision: Precision, staging: string, opts: HubDownloadOptions): Promise<ConvertedRepoPlan> {
  const { hub, commit } = rev;
  const repo = hub.ref.repo;
  const folder = precisionFolder(rev, precision);
  if (folder === undefined) {
    const held = PRECISIONS.filter((p) => rev.listing.get(p)?.type === 'directory');
    throw new UserError(
      `${repo} holds converted models at ${held.join(', ')}, not at ${precision}.`,
      `Choose one of them (blip2.precision, or --precision ${held[0]}), or set up ${precision} from the original checkpoint.`,
    );
  }
  const prefix = folder ? `${folder}/` : '';
  const entries = new Map<string, Awaited<ReturnType<typeof planFile>>>();
  try {
    for await (const entry of listFiles({ repo, revision: commit, hubUrl: hub.endpoint, fetch: hub.fetch, recursive: true, ...(folder ? { path: folder } : {}) })) {
      if (entry.type === 'file') entries.set(entry.path, await planFile(hub, commit, entry));
    }
  } catch (e) {
    throw hub.toUserError(e);
  }
  const manifestEntry = entries.get(`${prefix}${MANIFEST_FILE}`);
  if (!manifestEntry) throw new UserError(`${repo} has a ${folder} folder without a ${MANIFEST_FILE}.`, 'Ask its publisher to publish it again with `blip2 publish`.');
  const fetcher = new FileFetcher(hub, rev.layout, commit, opts);
  await fs.mkdir(staging, { recursive: true });
  await fetcher.fetchInto(manifestEntry, path.join(staging, MANIFEST_FILE));
  let manifest: ConvertedManifest;
  try {
    manifest = JSON.parse(await fs.readFile(path.join(staging, MANIFEST_FILE), 'utf8')) as ConvertedManifest;
  } catch {
    throw new UserError(`The ${MANIFEST_FILE} of ${repo} is not valid JSON.`, 'Ask its publisher to publish it again with `blip2 publish`.');
  }
  if (manifest.format !== MANIFEST_FORMAT || !Array.isArray(manifest.files)) {
    throw new UserError(`${repo} is not a BLIP-2 conversion this project wrote (its ${MANIFEST_FILE} is of another kind).`, 'Set up from the original checkpoint, for example Salesforce/blip2-opt-2.7b.');
  }
  if (manifest.converterVersion !== CONVERTER_VERSION) {
    throw new UserError(
      `${repo} holds a conversion by converter version ${manifest.converterVersion}, and this version of BLIP-2 reads version ${CONVERTER_VERSION}.`,
      `Ask its publisher to convert and publish it again with this version (\`blip2 publish\`), or set up from the original checkpoint${manifest.source?.model ? ` (${manifest.source.model})` : ''}.`,
    );
  }
  if (manifest.precision !== precision) {
    throw new UserError(`${repo}'s ${folder || 'top-level'} conversion is ${manifest.precision}, not ${precision}.`, `Choose ${manifest.precision} (blip2.precision, or --precision).`);
  }
  const files: PlannedFile[] = [];
  const targets: string[] = [];
  for (const f of manifest.files) {
    const entry = entries.get(`${prefix}${f.name}`);
    if (!entry || f.name.split('/').some((part) => part === '..' || part === '')) {
      throw new UserError(`${repo} is incomplete: its ${MANIFEST_FILE} names ${f.name}, which is not in the repository.`, 'Ask its publisher to publish it again with `blip2 publish`.');
    }
    files.push(entry);
    targets.push(f.name);
  }
  fetcher.total = files.reduce((s, f) => s + f.size, manifestEntry.size);
  return { files, targets, manifest, bytes: fetcher.total, fetcher };
}

/**
 * Downloads the planned files into `staging` (each resumed where an earlier attempt stopped), checks the folder
 * against the manifest, and moves it into place as `convertedDir`. A file that differs discards the download.
 */
export async function downloadConverted(plan: ConvertedRepoPlan, staging: string, convertedDir: string, repo: string, signal?: AbortSignal): Promise<void> {
  await withLock(`${convertedDir}.lock`, signal, async () => {
    for (let i = 0; i < plan.files.length; i++) await plan.fetcher.fetchInto(plan.files[i], path.join(staging, ...plan.targets[i].split('/')));
    const problems = await verifyModelFiles(staging, plan.manifest, 'full', { signal });
    if (problems.length > 0) {
      await fs.rm(staging, { recursive: true, force: true });
      throw new UserError(
        `The conversion downloaded from ${repo} does not match its own ${MANIFEST_FILE} (${problems[0].name} ${problems[0].problem}), so it was discarded.`,
        'Set up again to download it afresh; if it keeps failing, ask its publisher to publish it again.',
      );
    }
    await publishDir(staging, convertedDir);
  });
}
