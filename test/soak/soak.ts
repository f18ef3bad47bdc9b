/**
 * Soak test of the language server (not part of `npm test` or CI): minutes of mixed requests over many images, as a
 * busy editor session would send them, with the tiny fixture model. Reports what was served, what failed, and the
 * server's resident memory over time.
 *
 *   heavy node --import tsx test/soak/soak.ts [--minutes 5] [--images 200] [--concurrency 8]
 *
 * Requests: hovers on images and on plain text, code actions, quick fixes resolved (the model runs), blip2/caption,
 * blip2/ask with a growing chat history, blip2/modelStatus, malformed requests (which must get -32602), and typing
 * (didChange) into the open documents; a share of requests is cancelled by the client mid-way, as VS Code does on
 * cursor moves. Any other error counts as an error, as does a request still unanswered a minute after the last one
 * was sent (a cancelled one must be answered too) and a server that does not exit with 0 after shutdown. RSS is
 * the whole server process (its worker threads included), read from /proc every five seconds; modelStatus round
 * trips are timed throughout.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import {
  CancellationTokenSource,
  CodeActionRequest,
  CodeActionResolveRequest,
  DidChangeTextDocumentNotification,
  ErrorCodes,
  HoverRequest,
  LSPErrorCodes,
  type CodeAction,
} from 'vscode-languageserver-protocol/node';
import { AskRequest, CaptionRequest, CountersRequest, ModelStatusRequest } from '../../server/src/protocol/messages';
import { bigMarkdown } from '../helpers/documents';
import { testSettings, TestServer } from '../helpers/lsp-server';

const args = parseArgs({
  options: { minutes: { type: 'string', default: '5' }, images: { type: 'string', default: '200' }, concurrency: { type: 'string', default: '8' } },
}).values;
const MINUTES = Number(args.minutes);
const IMAGES = Number(args.images);
const CONCURRENCY = Number(args.concurrency);
const PER_DOC = 50;
const UNANSWERED_AFTER_MS = 60_000;

function rssBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) * 1024;
}

const mb = (bytes: number) => Math.round(bytes / (1024 * 1024));

async function main(): Promise<void> {
  const ws = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-soak-'));
  for (let i = 0; i < IMAGES; i++) {
    const pixels = Buffer.alloc(48 * 48 * 3);
    for (let p = 0; p < pixels.length; p++) pixels[p] = (p * (i + 7) * 2654435761) >>> 24;
    await sharp(pixels, { raw: { width: 48, height: 48, channels: 3 } }).png().toFile(path.join(ws, `image-${i}.png`));
  }
  const docs: { uri: string; text: string; version: number; imageLines: number[] }[] = [];
  for (let d = 0; d * PER_DOC < IMAGES; d++) {
    const lines = ['# Notes', ''];
    for (let i = d * PER_DOC; i < Math.min(IMAGES, (d + 1) * PER_DOC); i++) lines.push(`Figure ${i}: ![](image-${i}.png)`, '', 'Some prose about it.', '');
    docs.push({ uri: pathToFileURL(path.join(ws, `doc-${d}.md`)).href, text: lines.join('\n'), version: 1, imageLines: [] });
  }
  // And one long changelog with a few images, as projects have.
  docs.push({ uri: pathToFileURL(path.join(ws, 'CHANGELOG.md')).href, text: bigMarkdown(512 * 1024, 10), version: 1, imageLines: [] });
  for (const doc of docs) doc.imageLines = doc.text.split('\n').flatMap((l, i) => (/!\[\]\(image-/.test(l) ? [i] : []));

  const server = await TestServer.start({
    settings: testSettings({ generation: { maxNewTokens: 8, numBeams: 2, alternatives: 1 }, altText: { captionOnOpen: true } }),
    workspaceFolder: ws,
    initializationOptions: { hoverWaitMs: 300 },
  });
  const pid = server.pid;
  const started = Date.now();
  const deadline = started + MINUTES * 60_000;
  const rss: { s: number; mb: number }[] = [{ s: 0, mb: mb(rssBytes(pid, 'VmRSS')) }];
  const served = new Map<string, number>();
  const errors: string[] = [];
  let cancelled = 0;
  const latencies: number[] = [];
  const count = (kind: string) => served.set(kind, (served.get(kind) ?? 0) + 1);

  for (const doc of docs) await server.open(doc.uri, 'markdown', doc.text);

  const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)];
  // Every request the client is waiting for, so that one the server never answers is reported, not waited on forever.
  const inFlight = new Map<number, { what: () => string; since: number }>();
  let nextId = 1;
  const history: { question: string; answer: string }[] = [];

  async function one(): Promise<void> {
    const doc = pick(docs);
    const line = pick(doc.imageLines);
    const position = { line, character: doc.text.split('\n')[line].indexOf('![') + 2 };
    const cancel = new CancellationTokenSource();
    // A quarter of the requests are given up on by the client, as cursor moves do.
    const cancelAfter = Math.random() < 0.25 ? setTimeout(() => cancel.cancel(), Math.random() * 200) : undefined;
    const roll = Math.random();
    let kind = '';
    const id = nextId++;
    inFlight.set(id, { what: () => `${kind} at ${path.basename(doc.uri)}:${line + 1}${cancel.token.isCancellationRequested ? ', cancelled by the client' : ''}`, since: Date.now() });
    try {
      if (roll < 0.3) {
        kind = 'hover';
        await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri: doc.uri }, position }, cancel.token);
      } else if (roll < 0.5) {
        kind = 'codeAction';
        const actions = (await server.connection.sendRequest(
          CodeActionRequest.type,
          { textDocument: { uri: doc.uri }, range: { start: position, end: position }, context: { diagnostics: [], only: ['quickfix'] } },
          cancel.token,
        )) as CodeAction[] | null;
        if (actions?.[0] && Math.random() < 0.3) {
          kind = 'codeAction/resolve';
          await server.connection.sendRequest(CodeActionResolveRequest.type, actions[0], cancel.token);
        }
      } else if (roll < 0.6) {
        kind = 'caption';
        await server.connection.sendRequest(CaptionRequest.type, { image: pathToFileURL(path.join(ws, `image-${Math.floor(Math.random() * IMAGES)}.png`)).href }, cancel.token);
      } else if (roll < 0.7) {
        kind = 'ask';
        const question = `what is in part ${Math.floor(Math.random() * 1000)}?`;
        const answer = await server.connection.sendRequest(AskRequest.type, { image: pathToFileURL(path.join(ws, 'image-0.png')).href, question, history: history.slice(-400) }, cancel.token);
        history.push({ question, answer: answer.text });
      } else if (roll < 0.8) {
        kind = 'typing';
        const at = { line: 0, character: 0 };
        doc.version++;
        await server.connection.sendNotification(DidChangeTextDocumentNotification.type, {
          textDocument: { uri: doc.uri, version: doc.version },
          contentChanges: [{ range: { start: at, end: at }, text: 'x' }],
        });
        doc.text = `x${doc.text}`;
      } else if (roll < 0.9) {
        kind = 'hover (plain text)';
        await server.connection.sendRequest(HoverRequest.type, { textDocument: { uri: doc.uri }, position: { line: 0, character: 1 } }, cancel.token);
      } else {
        kind = 'malformed';
        try {
          await server.connection.sendRequest(CaptionRequest.method, { image: 42 });
          errors.push('a malformed request was answered');
        } catch (e) {
          if ((e as { code?: number }).code !== ErrorCodes.InvalidParams) throw e;
        }
      }
      count(kind);
    } catch (e) {
      const code = (e as { code?: number }).code;
      if (code === LSPErrorCodes.RequestCancelled || code === LSPErrorCodes.ServerCancelled) cancelled++;
      else errors.push(`${kind}: ${(e as Error).message}`);
    } finally {
      clearTimeout(cancelAfter);
      inFlight.delete(id);
    }
  }

  const workers = Array.from({ length: CONCURRENCY }, async () => {
    while (Date.now() < deadline && server.exitCode === undefined) await one();
  });
  const sampler = setInterval(() => {
    if (server.exitCode !== undefined) return;
    const sample = { s: Math.round((Date.now() - started) / 1000), mb: mb(rssBytes(pid, 'VmRSS')) };
    rss.push(sample);
    const total = [...served.values()].reduce((a, b) => a + b, 0);
    process.stderr.write(`soak: ${sample.s} s, ${total} served, ${cancelled} cancelled, ${errors.length} errors, RSS ${sample.mb} MB\n`);
  }, 5000);
  const prober = (async () => {
    while (Date.now() < deadline && server.exitCode === undefined) {
      const t0 = performance.now();
      try {
        await server.connection.sendRequest(ModelStatusRequest.type);
        latencies.push(performance.now() - t0);
      } catch (e) {
        errors.push(`modelStatus: ${(e as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  // Every request has to be answered (or its cancellation acknowledged) soon after the last one was sent.
  const finished = Promise.all([...workers, prober]);
  const grace = new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), deadline - Date.now() + UNANSWERED_AFTER_MS).unref());
  if ((await Promise.race([finished, grace])) === 'late') {
    for (const request of inFlight.values()) errors.push(`unanswered ${Math.round((Date.now() - request.since) / 1000)} s after it was sent: ${request.what()}`);
  }
  clearInterval(sampler);

  const durationS = Math.round((Date.now() - started) / 1000);
  const alive = server.exitCode === undefined;
  const counters = alive ? await server.connection.sendRequest(CountersRequest.type) : undefined;
  const end = alive ? mb(rssBytes(pid, 'VmRSS')) : undefined;
  const peak = alive ? mb(rssBytes(pid, 'VmHWM')) : Math.max(...rss.map((r) => r.mb));
  // After shutdown and exit the server must end by itself with 0; one that died meanwhile is an error.
  const stopped = alive ? Promise.race([server.stop(), new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 30_000).unref())]) : server.exitCode;
  const serverExit = await stopped;
  if (serverExit !== 0) errors.push(`the server ${alive ? 'ended' : 'died'} with exit code ${serverExit}`);
  await server.dispose();
  fs.rmSync(ws, { recursive: true, force: true });

  latencies.sort((a, b) => a - b);
  const quantile = (q: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]);
  const total = [...served.values()].reduce((a, b) => a + b, 0);
  const report = {
    minutes: MINUTES,
    durationS,
    images: IMAGES,
    concurrency: CONCURRENCY,
    requestsServed: total,
    byKind: Object.fromEntries([...served].sort()),
    cancelledByClient: cancelled,
    errors: errors.length,
    firstErrors: errors.slice(0, 5),
    rssMb: { start: rss[0].mb, end, peak, samples: rss },
    modelStatusMs: { p50: quantile(0.5), p99: quantile(0.99), max: Math.round(latencies[latencies.length - 1]), n: latencies.length },
    serverExit,
    counters,
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  process.exit(errors.length === 0 ? 0 : 1);
}

void main();
