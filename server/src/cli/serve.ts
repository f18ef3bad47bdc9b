import { isLoopbackHost } from '../inference/remote/server-url';
import { Blip2HttpServer } from '../serve/http-server';
import { ServeEngine } from '../serve/serve-engine';
import { DEFAULT_SETTINGS } from '../protocol/settings';
import { UsageError, type CliArgs } from './args';
import { ProgressReporter } from './progress';

/**
 * `blip2 serve`: loads the model (downloading and converting it first, as `caption` does), then answers the OpenAI
 * chat completions API on --host:--port until SIGINT or SIGTERM. One line per request on stderr.
 */
export async function runServe(args: CliArgs, signal: AbortSignal): Promise<number> {
  const s = args.serve;
  const apiKey = s.apiKey ?? (process.env.BLIP2_API_KEY || undefined);
  if (!isLoopbackHost(s.host) && !apiKey) {
    throw new UsageError(
      `blip2 serve answers on ${s.host}, beyond this machine, only with an API key.`,
      'Set BLIP2_API_KEY (or pass --api-key), or leave --host at 127.0.0.1.',
    );
  }
  const log = (line: string) => process.stderr.write(`blip2 serve: ${line}\n`);
  const progress = new ProgressReporter();
  const m = args.model;
  let engine: ServeEngine;
  try {
    engine = await ServeEngine.open(
      {
        settings: { model: m.model, precision: m.precision, device: m.device, threads: m.threads, store: m.store, offline: m.offline, keepSource: m.keepSource, repair: false },
        maxBatch: args.maxBatch,
        maxQueued: s.maxQueue,
        log,
      },
      (p) => progress.update(p),
      signal,
    );
  } finally {
    progress.stop();
  }
  const loaded = engine.model;
  if (loaded.fallbackReason) log(`running on the CPU because ${loaded.fallbackReason}.`);
  for (const note of loaded.loadNotes) log(note);
  const servedModelName = s.servedModelName ?? m.model;
  // Base64 makes an image a third larger; the rest of a request is a few kilobytes of JSON.
  const maxBodyBytes = Math.ceil((args.maxImageBytes * 4) / 3) + 1024 * 1024;
  const server = new Blip2HttpServer(engine, {
    host: s.host,
    port: s.port,
    apiKey,
    servedModelName,
    limits: { maxImageBytes: args.maxImageBytes, maxNewTokens: s.maxCompletionTokens, defaultMaxTokens: Math.min(DEFAULT_SETTINGS.generation.maxNewTokens, s.maxCompletionTokens) },
    maxBodyBytes,
    requestTimeoutMs: s.requestTimeoutS * 1000,
    bodyTimeoutMs: 60_000,
    log,
  });
  try {
    const address = await server.listen().catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') throw new UsageError(`Port ${s.port} on ${s.host} is in use.`, 'Pass another --port, or stop what listens there.');
      if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') throw new UsageError(`${s.host} is not an address of this machine.`, 'Pass --host 127.0.0.1, 0.0.0.0 or one of its addresses.');
      throw e;
    });
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    log(
      `${servedModelName} (${loaded.precision}, ${loaded.device}, loaded in ${Math.round(loaded.loadMs)} ms) answers at http://${host}:${address.port}/v1` +
        `${apiKey ? ' (API key required)' : ''}, up to ${args.maxBatch} requests decoded together. Ctrl-C stops it.`,
    );
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      signal.addEventListener('abort', () => resolve(), { once: true });
      process.once('SIGTERM', () => resolve());
    });
    log('stopping.');
    return 0;
  } finally {
    await server.close();
    await engine.dispose();
  }
}
