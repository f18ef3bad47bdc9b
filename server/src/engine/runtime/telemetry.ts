import { isMainThread } from 'node:worker_threads';

/**
 * onnxruntime 1.30's Linux library carries Microsoft's 1DS telemetry client, on unless ORT_DISABLE_TELEMETRY is set.
 * At the first session it reads /etc/machine-id and /proc/self/cmdline, keeps a database under
 * ~/.cache/Microsoft/DeveloperTools/.onnxruntime to upload where it finds a CA bundle, and parses the command line
 * with a recursive regular expression that overflows the stack on a long one: one argument of 30,000 characters
 * (a long question to `blip2 ask`) was a segmentation fault. Nothing is to leave this machine, so it is switched off
 * in every process that runs a model. onnxruntime reads the variable with getenv(), which sees only what the main
 * thread sets (a worker's `process.env` is a copy of its own), so this is called on the main thread before any
 * session: where onnxruntime is imported and where worker threads are started.
 */
export function disableOnnxruntimeTelemetry(): void {
  if (isMainThread) process.env.ORT_DISABLE_TELEMETRY = '1';
}
