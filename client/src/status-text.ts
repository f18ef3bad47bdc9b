// What the status bar and "Show Model Status" say, from the server's ModelStatus and the client's own state.
// No `vscode` import, so every state's wording is tested.
import type { GenerationResult, InferenceCounters, ModelStatus } from '../../server/src/protocol/messages';

/** The language client's side of the story: the model state only means something while the server runs. */
export type ServerState =
  | { kind: 'starting' }
  | { kind: 'restarting'; reason: string }
  | { kind: 'running'; model?: ModelStatus }
  | { kind: 'stopped'; reason?: string };

export interface StatusBarView {
  /** With codicons: `$(check) BLIP-2`. */
  text: string;
  /** Markdown-free tooltip, one fact a line. */
  tooltip: string;
  /** What a screen reader says for the item. */
  accessibilityLabel: string;
  severity: 'normal' | 'warning' | 'error';
}

export function statusBarView(state: ServerState): StatusBarView {
  switch (state.kind) {
    case 'starting':
      return view('$(sync~spin) BLIP-2', 'BLIP-2 server starting', ['Starting the BLIP-2 language server…']);
    case 'restarting':
      return view('$(sync~spin) BLIP-2 restarting', 'BLIP-2 server restarting', [state.reason, 'Restarting the BLIP-2 language server…'], 'warning');
    case 'stopped':
      return view(
        '$(debug-disconnect) BLIP-2 stopped',
        'BLIP-2 server stopped',
        [state.reason ?? 'The BLIP-2 language server is not running.', 'Click for details, or run "BLIP-2: Restart Server".'],
        'error',
      );
    case 'running':
      return state.model ? modelView(state.model) : view('$(sync~spin) BLIP-2', 'BLIP-2 server starting', ['Asking the server for the model state…']);
  }
}

function modelView(status: ModelStatus): StatusBarView {
  const facts = modelFacts(status);
  if (status.server) return serverView(status, facts);
  // A note says why every load stays slow and what to do about it: worth a colour while that model is loaded, not
  // only a tooltip line.
  const whileLoaded = status.notes?.length ? 'warning' : 'normal';
  const percent = status.progress === undefined ? '' : ` ${Math.floor(status.progress * 100)}%`;
  switch (status.state) {
    case 'noModel':
      return view('$(cloud-download) BLIP-2: no model', 'BLIP-2: no model set up', [status.message ?? 'No BLIP-2 model is set up yet.', 'Click to set one up.', ...facts], 'warning');
    case 'downloading':
      return view(`$(cloud-download) BLIP-2 downloading${percent}`, `BLIP-2 model downloading${percent}`, [status.message ?? 'Downloading the model weights…', ...facts]);
    case 'converting':
      return view(`$(gear~spin) BLIP-2 converting${percent}`, `BLIP-2 model converting${percent}`, [status.message ?? 'Converting the weights to ONNX on this machine…', ...facts]);
    case 'loading':
      return view('$(sync~spin) BLIP-2 loading', 'BLIP-2 model loading', [status.message ?? 'Loading the model…', ...facts]);
    case 'ready':
      return view('$(check) BLIP-2 ready', 'BLIP-2 model ready', ['The model is loaded and idle.', ...facts], whileLoaded);
    case 'busy':
      return view(
        `$(loading~spin) BLIP-2 busy${status.queued > 1 ? ` (${status.queued})` : ''}`,
        `BLIP-2 model busy, ${status.queued} request${status.queued === 1 ? '' : 's'}`,
        [`Working on ${status.queued} request${status.queued === 1 ? '' : 's'}.`, ...facts],
        whileLoaded,
      );
    case 'unloaded':
      return view('$(circle-outline) BLIP-2', 'BLIP-2 model set up, not loaded', ['The model is set up and loads on first use.', ...facts]);
    case 'error':
      return view('$(error) BLIP-2 error', 'BLIP-2 model error', [status.message ?? 'The model failed.', 'Click for details.', ...facts], 'error');
  }
}

/** A BLIP-2 server computes: the item names it, the tooltip its model. */
function serverView(status: ModelStatus, facts: string[]): StatusBarView {
  const host = hostOf(status.server!);
  switch (status.state) {
    case 'ready':
      return view(`$(check) BLIP-2 ready · ${host}`, `BLIP-2 server ${host} ready`, ['The BLIP-2 server answers.', ...facts]);
    case 'busy':
      return view(`$(loading~spin) BLIP-2 busy · ${host}`, `BLIP-2 server ${host} busy`, [`Waiting on the server for ${status.queued} request${status.queued === 1 ? '' : 's'}.`, ...facts]);
    case 'error':
      return view(`$(error) BLIP-2 server error`, `BLIP-2 server ${host} failed`, [status.message ?? 'The server failed.', 'Click for details; "BLIP-2: Use the Local Model" computes here instead.', ...facts], 'error');
    default:
      return view(`$(sync~spin) BLIP-2 · ${host}`, `BLIP-2 connecting to ${host}`, [status.message ?? `Connecting to ${status.server}…`, ...facts]);
  }
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

function view(text: string, accessibilityLabel: string, lines: string[], severity: StatusBarView['severity'] = 'normal'): StatusBarView {
  return { text, tooltip: lines.join('\n'), accessibilityLabel, severity };
}

/** Model, precision, device and fallback, one a line; only what the server reported. */
function modelFacts(status: ModelStatus): string[] {
  const lines = status.server ? [`Server: ${status.server}`, `Model: ${status.model || 'not known yet'}`] : [`Model: ${status.model}`];
  if (status.precision) lines.push(`Precision: ${status.precision}`);
  if (status.device) lines.push(`Device: ${status.device}${status.fallbackReason ? ` (${status.fallbackReason})` : ''}`);
  lines.push(...(status.notes ?? []));
  return lines;
}

/** The body of "Show Model Status": every fact the server gave, then what it has done. */
export function modelStatusDetail(state: ServerState, counters?: InferenceCounters): string {
  if (state.kind !== 'running' || !state.model) return statusBarView(state).tooltip;
  const status = state.model;
  const lines = [`State: ${STATE_WORDS[status.state]}`];
  if (status.message) lines.push(status.message);
  lines.push(...modelFacts(status));
  if (status.progress !== undefined) lines.push(`Progress: ${Math.floor(status.progress * 100)}%`);
  if (status.memoryBytes !== undefined) lines.push(`Server memory: ${formatBytes(status.memoryBytes)}`);
  lines.push(`Requests waiting or running: ${status.queued}`);
  lines.push(`Cache: ${status.cache.entries} entr${status.cache.entries === 1 ? 'y' : 'ies'}, ${formatBytes(status.cache.bytes)}`);
  if (status.cache.dir) lines.push(`Cache folder: ${status.cache.dir}`);
  if (counters) {
    lines.push(
      '',
      `Since the server started: ${counters.generations} generation${counters.generations === 1 ? '' : 's'} ` +
        `(${counters.tokensGenerated} tokens, ${counters.cancelledGenerations} cancelled, in ${counters.batches} batch${counters.batches === 1 ? '' : 'es'}), ` +
        `${counters.visionRuns} image encoding${counters.visionRuns === 1 ? '' : 's'}, ` +
        `${counters.captionCacheHits} caption${counters.captionCacheHits === 1 ? '' : 's'} and ${counters.visionCacheHits} encoding${counters.visionCacheHits === 1 ? '' : 's'} from the cache, ` +
        `${counters.sharedRequests} duplicate request${counters.sharedRequests === 1 ? '' : 's'} shared.`,
    );
  }
  return lines.join('\n');
}

const STATE_WORDS: Record<ModelStatus['state'], string> = {
  noModel: 'no model set up',
  downloading: 'downloading',
  converting: 'converting',
  loading: 'loading',
  ready: 'ready',
  busy: 'busy',
  unloaded: 'set up, not loaded (loads on first use)',
  error: 'error',
};

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return 'unknown';
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 100 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

/** How a result came about, for the line under a caption or answer: "int4 · cpu · 1.2 s" or "… · from the cache". */
export function generationFacts(result: Pick<GenerationResult, 'precision' | 'device' | 'durationMs' | 'cached'>): string {
  const time = result.cached ? 'from the cache' : formatDuration(result.durationMs);
  return [result.precision, result.device, time].filter(Boolean).join(' · ');
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}
