import { parseArgs } from 'node:util';
import { parsePrecision, type Precision, type PrecisionChoice } from '../engine/convert/precision';
import { UserError } from '../engine/errors';
import { DEFAULT_MAX_IMAGE_FILE_BYTES } from '../engine/preprocess/image-file';
import type { GenerationSettings } from '../engine/pipeline';
import { parseDevice, type Device } from '../engine/runtime/ort';
import { serverUrl } from '../inference/remote/server-url';
import { DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUED } from '../inference/types';
import { MAX_BATCH_ROWS } from '../inference/worker-protocol';
import { DEFAULT_SETTINGS, describeLimits, NUMBER_LIMITS, OPTION_LIMITS, quoteValue, withinLimits, type NumberLimits } from '../protocol/settings';

export const DEFAULT_MODEL = 'Salesforce/blip2-opt-2.7b';

/** `blip2 serve`'s defaults: vLLM's port; a request limit far above what a caption takes on a CPU. */
export const DEFAULT_SERVE_PORT = 8000;
export const DEFAULT_REQUEST_TIMEOUT_S = 300;
export const DEFAULT_SERVE_MAX_TOKENS = 512;

export const USAGE = `Usage:
  blip2 caption IMAGE... [--prompt TEXT]     caption images (a prompt such as "a photo of" is continued)
  blip2 ask IMAGE QUESTION                   answer a question about an image
  blip2 chat IMAGE                           chat about an image (type questions; Ctrl-D ends)
  blip2 convert --model M --precision P [--out DIR]
                                             convert a checkpoint to ONNX once, into the model store or DIR
  blip2 verify --model M --precision P [--repair]
                                             check every file of a converted model against its checksums
                                             (exit 1 when damaged); --repair converts a damaged one again
  blip2 publish OWNER/REPO --precision P[,P...] [--model M] [--private]
                                             upload this machine's conversions of M (default ${DEFAULT_MODEL})
                                             at those precisions to a Hub repository of yours, with a model
                                             card; --model OWNER/REPO then downloads one with no conversion
                                             (needs HF_TOKEN with write access; HF_ENDPOINT for a mirror)
  blip2 check [PATH...] [--format F]         report missing and unhelpful alt text in markdown, HTML, JSX
                                             and TSX files (default: the current folder; .gitignore honoured)
  blip2 fix [PATH...] [--dry-run]            write generated alt text into those files (--dry-run: print a diff)
  blip2 serve [--host H] [--port P]          serve the model over the OpenAI chat completions API, as vLLM
                                             does for BLIP-2 (POST /v1/chat/completions, GET /v1/models)

Check and fix:
  --format F          text (default), json, sarif (SARIF 2.1.0, for GitHub code scanning), github (annotations)
  --dry-run           fix: print a unified diff instead of writing the files
  --max-batch N       fix: captions decoded together (default ${DEFAULT_MAX_BATCH}; 1 captions one image after another)
  Exit status: 0 nothing to report (fix: every image given alt text), 1 problems found (fix: some images
  could not be captioned or files not written), 2 a usage or settings error. Rules, the length limit and the
  generation settings come from the nearest .blip2.json.

Server (caption, ask, chat, fix):
  --server URL        use the BLIP-2 server at URL (blip2 serve, or vLLM serving BLIP-2) instead of the model
                      here; its API key from $BLIP2_API_KEY. The images are sent to that server.

Serve:
  --host H            the address to listen on (default 127.0.0.1: this machine only; another needs an API key)
  --port P            default 8000
  --api-key KEY       requests to /v1 need "Authorization: Bearer KEY" (default: $BLIP2_API_KEY, which keeps the
                      key out of the process list)
  --served-model-name NAME  the model id clients see (default: the --model given)
  --max-batch N       requests decoded together (default ${DEFAULT_MAX_BATCH})
  --max-queue N       model runs waiting at once; past it requests get 429 (default ${DEFAULT_MAX_QUEUED})
  --request-timeout S a request unanswered after S seconds gets 503 (default ${DEFAULT_REQUEST_TIMEOUT_S})
  --max-completion-tokens N  the most new tokens a request may ask for (default ${DEFAULT_SERVE_MAX_TOKENS})
  --max-image-mb N    the largest image, decoded (default ${DEFAULT_MAX_IMAGE_FILE_BYTES / (1024 * 1024)})

Model options:
  --model M           a Hub repo id (default ${DEFAULT_MODEL}), a checkpoint folder or a converted folder
  --precision P       auto (default: int4 on CPU, fp16 on GPU), fp32, fp16, int8, int4
  --device D          auto (default), cpu, cuda, dml, coreml, webgpu; falls back to cpu with a message
  --threads N         threads per operator (default: onnxruntime's choice)
  --store DIR         model store for converted models (default: $BLIP2_HOME or the per-user cache)
  --offline           never contact the Hub
  --keep-source       keep a downloaded checkpoint in the Hugging Face cache and convert it from there
                      (default: convert it as it downloads, storing only the converted model; what set-up
                      downloads and needs on disk is printed before it starts)
  --max-image-mb N    the largest image file read, in megabytes (default ${DEFAULT_MAX_IMAGE_FILE_BYTES / (1024 * 1024)})

Generation options:
  --max-new-tokens N (default ${DEFAULT_SETTINGS.generation.maxNewTokens})  --min-new-tokens N  --num-beams N  --num-return-sequences N
  --length-penalty X  --repetition-penalty X  --no-repeat-ngram-size N
  --temperature X  --top-k N  --top-p X  (any of these turns sampling on)  --seed N

Output:
  --json              one JSON object per image with text, token_ids, model, precision, device and timings_ms
  -h, --help`;

export interface ModelArgs {
  model: string;
  precision: PrecisionChoice;
  device: Device;
  threads: number;
  store?: string;
  offline: boolean;
  keepSource: boolean;
}

/** A mistake on the command line or in the settings: exit status 2, so scripts tell it from problems found. */
export class UsageError extends UserError {}

export interface ServeArgs {
  host: string;
  port: number;
  apiKey?: string;
  servedModelName?: string;
  maxQueue: number;
  requestTimeoutS: number;
  maxCompletionTokens: number;
}

export interface CliArgs {
  command: 'caption' | 'ask' | 'chat' | 'convert' | 'verify' | 'publish' | 'check' | 'fix' | 'serve' | 'help';
  positionals: string[];
  model: ModelArgs;
  generation: GenerationSettings;
  prompt?: string;
  out?: string;
  json: boolean;
  blockSize?: number;
  /** check: the report's format as given (validated by the reporter). */
  format?: string;
  /** fix: print a diff instead of writing. */
  dryRun: boolean;
  /** Which options were given, for commands that take only some of them. */
  given: ReadonlySet<string>;
  /** `verify --repair`. */
  repair: boolean;
  maxImageBytes: number;
  /** fix and serve: captions decoded together as one batch (1: one after another). */
  maxBatch: number;
  /** caption, ask, chat, fix: the BLIP-2 server to use instead of the model here. */
  server?: string;
  serve: ServeArgs;
  /** publish: the precisions to upload (`--precision int4,int8`), and `--private`. */
  publish?: { precisions: Precision[]; private: boolean };
}

const OPTIONS = {
  model: { type: 'string' },
  precision: { type: 'string' },
  device: { type: 'string' },
  threads: { type: 'string' },
  store: { type: 'string' },
  offline: { type: 'boolean' },
  'keep-source': { type: 'boolean' },
  private: { type: 'boolean' },
  out: { type: 'string' },
  prompt: { type: 'string' },
  json: { type: 'boolean' },
  format: { type: 'string' },
  'dry-run': { type: 'boolean' },
  repair: { type: 'boolean' },
  'max-image-mb': { type: 'string' },
  'max-batch': { type: 'string' },
  server: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  'api-key': { type: 'string' },
  'served-model-name': { type: 'string' },
  'max-queue': { type: 'string' },
  'request-timeout': { type: 'string' },
  'max-completion-tokens': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  'block-size': { type: 'string' },
  'max-new-tokens': { type: 'string' },
  'min-new-tokens': { type: 'string' },
  'num-beams': { type: 'string' },
  'num-return-sequences': { type: 'string' },
  'length-penalty': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  'no-repeat-ngram-size': { type: 'string' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
} as const;

export function parseCli(argv: string[]): CliArgs {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    // Node quotes the option whole, however long it is: only its start is repeated back.
    const line = String((e as Error).message).split('\n')[0].split('. ')[0].replace(/'([^']{40})[^']+'/g, "'$1…'");
    throw new UsageError(`${line.replace(/\.$/, '')}.`, 'Run `blip2 --help` for the options.');
  }
  const v = parsed.values;
  const [command = 'help', ...positionals] = parsed.positionals;
  const given = new Set(Object.keys(v));
  if (v.help || command === 'help') {
    return {
      command: 'help',
      positionals: [],
      model: defaults(),
      generation: { maxNewTokens: DEFAULT_SETTINGS.generation.maxNewTokens },
      json: false,
      repair: false,
      maxImageBytes: DEFAULT_MAX_IMAGE_FILE_BYTES,
      maxBatch: DEFAULT_MAX_BATCH,
      serve: serveDefaults(),
      dryRun: false,
      given,
    };
  }
  if (!['caption', 'ask', 'chat', 'convert', 'verify', 'publish', 'check', 'fix', 'serve'].includes(command)) {
    throw new UsageError(`Unknown command ${quoteValue(command)}.`, 'Use caption, ask, chat, convert, verify, publish, check, fix or serve (`blip2 --help`).');
  }
  if (v.repair && command !== 'verify') throw new UsageError('--repair goes with verify.', 'Example: blip2 verify --model DIR --repair');
  const model: ModelArgs = {
    ...defaults(),
    ...(v.model !== undefined && { model: v.model }),
    ...(v.precision !== undefined && command !== 'publish' && { precision: asUsage(() => parsePrecision(v.precision!)) }),
    ...(v.device !== undefined && { device: asUsage(() => parseDevice(v.device!)) }),
    ...(v.threads !== undefined && { threads: numberOption('threads', v.threads) }),
    ...(v.store !== undefined && { store: v.store }),
    offline: v.offline ?? false,
    keepSource: v['keep-source'] ?? false,
  };
  const n = (name: keyof typeof NUMERIC_OPTIONS): number | undefined => {
    const given = v[name];
    return given === undefined ? undefined : numberOption(name, given);
  };
  const generation: GenerationSettings = {
    maxNewTokens: n('max-new-tokens') ?? DEFAULT_SETTINGS.generation.maxNewTokens,
    minNewTokens: n('min-new-tokens'),
    numBeams: n('num-beams'),
    numReturnSequences: n('num-return-sequences'),
    lengthPenalty: n('length-penalty'),
    repetitionPenalty: n('repetition-penalty'),
    noRepeatNgramSize: n('no-repeat-ngram-size'),
    temperature: n('temperature'),
    topK: n('top-k'),
    topP: n('top-p'),
    seed: n('seed'),
  };
  const maxImageMegabytes = n('max-image-mb');
  const args: CliArgs = {
    command: command as CliArgs['command'],
    positionals,
    model,
    generation,
    prompt: v.prompt,
    out: v.out,
    json: v.json ?? false,
    blockSize: n('block-size'),
    format: v.format,
    dryRun: v['dry-run'] ?? false,
    given,
    repair: v.repair ?? false,
    maxImageBytes: maxImageMegabytes !== undefined ? maxImageMegabytes * 1024 * 1024 : DEFAULT_MAX_IMAGE_FILE_BYTES,
    maxBatch: v['max-batch'] !== undefined ? numberOption('max-batch', v['max-batch']) : DEFAULT_MAX_BATCH,
    ...(v.server !== undefined && { server: asUsage(() => serverUrl(v.server!)) }),
    serve: {
      ...serveDefaults(),
      ...(v.host !== undefined && { host: v.host }),
      ...(v.port !== undefined && { port: numberOption('port', v.port) }),
      ...(v['api-key'] !== undefined && { apiKey: v['api-key'] }),
      ...(v['served-model-name'] !== undefined && { servedModelName: v['served-model-name'] }),
      ...(v['max-queue'] !== undefined && { maxQueue: numberOption('max-queue', v['max-queue']) }),
      ...(v['request-timeout'] !== undefined && { requestTimeoutS: numberOption('request-timeout', v['request-timeout']) }),
      ...(v['max-completion-tokens'] !== undefined && { maxCompletionTokens: numberOption('max-completion-tokens', v['max-completion-tokens']) }),
    },
    ...(command === 'publish' && {
      publish: {
        precisions: [...new Set((v.precision ?? '').split(',').map((p) => p.trim()).filter(Boolean))].map((p) => {
          const choice = asUsage(() => parsePrecision(p));
          if (choice === 'auto') throw new UsageError('publish uploads named precisions, not auto.', 'Example: --precision int4,int8');
          return choice;
        }),
        private: v.private ?? false,
      },
    }),
  };
  checkPositionals(args);
  return args;
}

function serveDefaults(): ServeArgs {
  return { host: '127.0.0.1', port: DEFAULT_SERVE_PORT, maxQueue: DEFAULT_MAX_QUEUED, requestTimeoutS: DEFAULT_REQUEST_TIMEOUT_S, maxCompletionTokens: DEFAULT_SERVE_MAX_TOKENS };
}

// HF_HUB_OFFLINE and friends are read where the Hub is reached (store/resolve.ts), not here.
function defaults(): ModelArgs {
  return { model: DEFAULT_MODEL, precision: 'auto', device: 'auto', threads: 0, store: undefined, offline: false, keepSource: false };
}

function checkPositionals(a: CliArgs): void {
  const p = a.positionals;
  switch (a.command) {
    case 'caption':
      if (p.length === 0) throw new UsageError('caption needs at least one image.', 'Example: blip2 caption photo.jpg');
      break;
    case 'ask':
      if (p.length !== 2) throw new UsageError('ask needs an image and a question.', 'Example: blip2 ask photo.jpg "what is on the table?"');
      break;
    case 'chat':
      if (p.length !== 1) throw new UsageError('chat needs exactly one image.', 'Example: blip2 chat photo.jpg');
      break;
    case 'publish':
      if (p.length !== 1 || !/^[\w.-]+\/[\w.-]+$/.test(p[0])) throw new UsageError('publish needs the repository to publish to, as OWNER/REPO.', 'Example: blip2 publish my-team/blip2-opt-2.7b-onnx --precision int4,int8');
      if (!a.given.has('precision')) throw new UsageError('publish needs --precision: the conversions to upload.', 'Example: blip2 publish my-team/blip2-opt-2.7b-onnx --precision int4,int8');
      break;
    case 'convert':
    case 'verify':
    case 'serve':
      if (p.length !== 0) throw new UsageError(`${a.command} takes no positional arguments (got ${quoteValue(p[0])}).`, `Example: blip2 ${a.command} --model DIR --precision int4`);
      break;
  }
  const allowed = COMMAND_OPTIONS[a.command];
  const stray = [...a.given].filter((name) => name !== 'help' && !allowed.has(name));
  if (stray.length > 0) {
    throw new UsageError(`${a.command} does not take --${stray[0]}.`, `Run \`blip2 --help\` for the options of ${a.command}.`);
  }
}

const MODEL_OPTIONS = ['model', 'precision', 'device', 'threads', 'store', 'offline', 'keep-source', 'block-size'];
const GENERATION_OPTIONS = [
  'max-new-tokens', 'min-new-tokens', 'num-beams', 'num-return-sequences', 'length-penalty', 'repetition-penalty',
  'no-repeat-ngram-size', 'temperature', 'top-k', 'top-p', 'seed',
];
/**
 * The options each command takes. `fix` takes the generation settings the editor has (beam search, lengths,
 * penalties, the prompt), not sampling: alt text written into files has to come out the same on every run,
 * and its captions are cached and shared with the editor under those settings.
 */
const COMMAND_OPTIONS: Record<CliArgs['command'], ReadonlySet<string>> = {
  caption: new Set([...MODEL_OPTIONS, ...GENERATION_OPTIONS, 'max-image-mb', 'prompt', 'json', 'server']),
  ask: new Set([...MODEL_OPTIONS, ...GENERATION_OPTIONS, 'max-image-mb', 'json', 'server']),
  chat: new Set([...MODEL_OPTIONS, ...GENERATION_OPTIONS, 'max-image-mb', 'json', 'server']),
  convert: new Set([...MODEL_OPTIONS, 'out', 'json']),
  verify: new Set([...MODEL_OPTIONS, 'repair', 'json']),
  publish: new Set(['model', 'precision', 'store', 'private']),
  check: new Set(['format']),
  fix: new Set([
    ...MODEL_OPTIONS.filter((o) => o !== 'block-size'),
    'max-new-tokens', 'min-new-tokens', 'num-beams', 'repetition-penalty', 'no-repeat-ngram-size', 'prompt', 'dry-run', 'max-batch', 'server',
  ]),
  serve: new Set([
    ...MODEL_OPTIONS.filter((o) => o !== 'block-size'),
    'host', 'port', 'api-key', 'served-model-name', 'max-batch', 'max-queue', 'request-timeout', 'max-completion-tokens', 'max-image-mb',
  ]),
  help: new Set(),
};

/** An option's value the engine's parser refused, as a usage error (exit status 2). */
function asUsage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    if (e instanceof UserError && !(e instanceof UsageError)) throw new UsageError(e.message, e.hint);
    throw e;
  }
}

/**
 * The range of each numeric option: its setting's where it has one (so `--num-beams` and
 * `blip2.generation.numBeams` agree), else the command line's own, declared beside the settings.
 */
const NUMERIC_OPTIONS = {
  threads: NUMBER_LIMITS.threads,
  'max-new-tokens': NUMBER_LIMITS['generation.maxNewTokens'],
  'min-new-tokens': NUMBER_LIMITS['generation.minNewTokens'],
  'num-beams': NUMBER_LIMITS['generation.numBeams'],
  'repetition-penalty': NUMBER_LIMITS['generation.repetitionPenalty'],
  'no-repeat-ngram-size': NUMBER_LIMITS['generation.noRepeatNgramSize'],
  'num-return-sequences': OPTION_LIMITS.numReturnSequences,
  'length-penalty': OPTION_LIMITS.lengthPenalty,
  temperature: OPTION_LIMITS.temperature,
  'top-k': OPTION_LIMITS.topK,
  'top-p': OPTION_LIMITS.topP,
  seed: OPTION_LIMITS.seed,
  'block-size': OPTION_LIMITS.blockSize,
  'max-image-mb': OPTION_LIMITS.maxImageMegabytes,
  // blip2 serve's own.
  'max-batch': { min: 1, max: MAX_BATCH_ROWS, integer: true },
  port: { min: 0, max: 65535, integer: true },
  'max-queue': { min: 1, max: 100_000, integer: true },
  'request-timeout': { min: 0.001, max: 86_400, integer: false },
  'max-completion-tokens': NUMBER_LIMITS['generation.maxNewTokens'],
} satisfies Record<string, NumberLimits>;

function numberOption(name: keyof typeof NUMERIC_OPTIONS, text: string): number {
  const limits: NumberLimits = NUMERIC_OPTIONS[name];
  // Number('') is 0, and a blank is no number.
  const value = text.trim() === '' ? NaN : Number(text);
  if (!withinLimits(value, limits)) throw new UsageError(`--${name} must be ${describeLimits(limits)} (got ${quoteValue(text)}).`);
  return value;
}
