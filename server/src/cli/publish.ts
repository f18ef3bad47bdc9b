/**
 * `blip2 publish OWNER/REPO --precision int4,int8`: uploads this machine's conversions of a model to a Hub repository
 * (one folder per precision, each a converted model with its manifest) with @huggingface/hub, and a model card that
 * names the source repository and commit, the converter version, the precisions and the source's license. Another
 * machine then sets up with `--model OWNER/REPO` (or the blip2.model setting) and downloads one precision's files,
 * checked against the manifest, with no conversion (engine/store/converted-repo.ts).
 */
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createRepo, HubApiError, modelInfo, uploadFiles } from '@huggingface/hub';
import { CONVERTER_VERSION, MANIFEST_FILE, readManifest, type ConvertedManifest } from '../engine/convert/manifest';
import { UserError } from '../engine/errors';
import { hfEndpoint, hfToken } from '../engine/store/hf-cache';
import { resolveModel } from '../engine/store/resolve';
import { formatBytes } from '../engine/units';
import { UsageError, type CliArgs } from './args';

export async function runPublish(args: CliArgs, signal: AbortSignal): Promise<number> {
  const repo = args.positionals[0];
  const { precisions, private: isPrivate } = args.publish!;
  const endpoint = hfEndpoint();
  const token = await hfToken();
  if (!token) throw new UsageError('publish needs a Hugging Face token with write access.', 'Set HF_TOKEN to a token from https://huggingface.co/settings/tokens (or log in with `hf auth login`).');

  // The conversions must be on this machine already: publishing never converts (nor downloads) anything.
  const conversions: { precision: string; dir: string; manifest: ConvertedManifest }[] = [];
  for (const precision of precisions) {
    const resolved = await resolveModel(args.model.model, { precision, store: args.model.store, offline: true, signal }).catch(() => undefined);
    if (resolved?.kind !== 'converted') {
      throw new UserError(
        `There is no ${precision} conversion of ${args.model.model} on this machine to publish.`,
        `Convert it first: blip2 convert --model ${args.model.model} --precision ${precision}`,
      );
    }
    conversions.push({ precision, dir: resolved.dir, manifest: readManifest(resolved.dir) });
  }

  const source = conversions[0].manifest.source;
  const license = await sourceLicense(source.model, endpoint, token);
  try {
    await createRepo({ repo, accessToken: token, hubUrl: endpoint, private: isPrivate });
    process.stderr.write(`blip2: created ${endpoint}/${repo}${isPrivate ? ' (private)' : ''}\n`);
  } catch (e) {
    // Publishing again into one's own repository updates it.
    if (!(e instanceof HubApiError && e.statusCode === 409)) throw publishError(e, repo, endpoint);
  }
  const files = conversions.flatMap(({ precision, dir, manifest }) =>
    [MANIFEST_FILE, ...manifest.files!.map((f) => f.name)].map((name) => ({ path: `${precision}/${name}`, content: pathToFileURL(path.join(dir, ...name.split('/'))) })),
  );
  const bytes = conversions.reduce((s, c) => s + c.manifest.files!.reduce((a, f) => a + f.bytes, 0), 0);
  process.stderr.write(`blip2: uploading ${files.length} files (${formatBytes(bytes)}) to ${endpoint}/${repo}\n`);
  const card = modelCard(repo, conversions.map((c) => ({ precision: c.precision, manifest: c.manifest })), license);
  try {
    const result = await uploadFiles({
      repo,
      accessToken: token,
      hubUrl: endpoint,
      files: [...files, { path: 'README.md', content: new Blob([card]) }],
      commitTitle: `BLIP-2 ${precisions.join(', ')} converted from ${source.model}${source.revision ? `@${source.revision.slice(0, 7)}` : ''}`,
      abortSignal: signal,
    });
    process.stdout.write(`${endpoint}/${repo}${result?.commit.oid ? ` at ${result.commit.oid}` : ''}\n`);
  } catch (e) {
    throw publishError(e, repo, endpoint);
  }
  return 0;
}

/** The source repository's license from its model card's metadata; unknown when the Hub does not say. */
async function sourceLicense(model: string, endpoint: string, token: string): Promise<string | undefined> {
  if (!/^[\w.-]+\/[\w.-]+$/.test(model)) return undefined;
  try {
    const info = await modelInfo({ name: model, hubUrl: endpoint, accessToken: token, additionalFields: ['cardData'] });
    const license = (info as { cardData?: { license?: unknown } }).cardData?.license;
    return typeof license === 'string' ? license : undefined;
  } catch {
    return undefined;
  }
}

function publishError(e: unknown, repo: string, endpoint: string): unknown {
  if (e instanceof HubApiError && (e.statusCode === 401 || e.statusCode === 403)) {
    return new UserError(`${endpoint} refused to let the token in HF_TOKEN write to ${repo} (HTTP ${e.statusCode}).`, 'Use a token with write access to that user or organisation.');
  }
  return e;
}

/** The Hub model card: what the conversions are, where they come from, and how to use them. */
export function modelCard(repo: string, conversions: { precision: string; manifest: ConvertedManifest }[], license: string | undefined): string {
  const source = conversions[0].manifest.source;
  const isHub = /^[\w.-]+\/[\w.-]+$/.test(source.model);
  const rows = conversions.map(({ precision, manifest }) => `| ${precision} | \`${precision}/\` | ${formatBytes(manifest.files!.reduce((s, f) => s + f.bytes, 0))} | ${manifest.decoderForms?.join(', ') ?? 'onnxruntime, native'} |`);
  return [
    '---',
    `license: ${license ?? 'other'}`,
    ...(isHub ? [`base_model: ${source.model}`] : []),
    'library_name: onnx',
    'pipeline_tag: image-to-text',
    'tags:',
    '  - blip-2',
    '  - onnx',
    '  - blip2-vscode',
    '---',
    '',
    `# ${repo}`,
    '',
    `BLIP-2 converted to ONNX by [BLIP-2 for VS Code](https://github.com/blip2-local/blip2-vscode) (converter version ${CONVERTER_VERSION}),`,
    `from ${isHub ? `[${source.model}](https://huggingface.co/${source.model})` : `\`${source.model}\``}${source.revision ? ` at commit \`${source.revision}\`` : ''}.`,
    `License: ${license ?? 'the source repository\'s (not stated in its metadata)'}.`,
    '',
    '| precision | folder | size | decoder weights |',
    '|---|---|---|---|',
    ...rows,
    '',
    'Each folder is a converted model with its `blip2-onnx.json` manifest, which records every file\'s SHA-256.',
    'To use one, set the `blip2.model` setting (or pass `--model` to the `blip2` command line) to',
    `\`${repo}\` and the precision to one of the above: only that folder is downloaded and checked, and nothing is`,
    'converted. A conversion by another converter version is refused with a sentence saying so.',
    '',
  ].join('\n');
}
