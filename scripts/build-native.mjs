// Compiles the native decoder (server/native/opt-decoder.c) into dist/native/, for the int4 decoder's steps on the
// CPU (server/src/engine/runtime/native-decoder.ts). Optional: without a C compiler, or on a platform it does not
// build for, it says so and the engine keeps onnxruntime's decoder. Run by `npm run build` and `npm test`.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const source = path.join(root, 'server/native/opt-decoder.c');
const out = path.join(root, 'dist/native', `opt-decoder-${process.platform}-${process.arch}.so`);

if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.log(`native decoder: not built for ${process.platform}-${process.arch}; onnxruntime's decoder is used there`);
  process.exit(0);
}
if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(source).mtimeMs) process.exit(0);
fs.mkdirSync(path.dirname(out), { recursive: true });
const cc = process.env.CC ?? 'cc';
// x86-64-v2 for everything; the AVX-512 kernels carry their own target attributes and run only where the CPU has them.
const tmp = `${out}.tmp-${process.pid}`;
const r = spawnSync(cc, ['-O3', '-march=x86-64-v2', '-fPIC', '-shared', '-pthread', '-Wall', '-Wextra', '-o', tmp, source, '-lm'], { stdio: 'inherit' });
if (r.error || r.status !== 0) {
  fs.rmSync(tmp, { force: true });
  console.log(`native decoder: not built (${r.error ? r.error.message : `${cc} exited with ${r.status}`}); onnxruntime's decoder is used instead`);
  process.exit(0);
}
fs.renameSync(tmp, out);
console.log(`native decoder: ${path.relative(root, out)}`);
