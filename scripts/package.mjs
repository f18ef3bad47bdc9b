#!/usr/bin/env node
// Builds a platform VSIX: the production bundles plus the native runtime of ONE platform.
//
//   npm run package                          the current platform's target (linux-x64 here)
//   npm run package -- --target linux-arm64  another target (its sharp packages must be installed, see below)
//   npm run package -- --out some/dir        where the .vsix goes (default: out/)
//
// .vscodeignore is an allowlist written for linux-x64; for another target this script rewrites its platform
// lines into out/vscodeignore-<target> and hands that to vsce. The VSIX's readme (its Details page on the
// Marketplace) is media/marketplace/README.md, a page for users; the repository's README.md is for developers.
// Prints the VSIX's path on stdout (all else on stderr).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
/** The Details page: what the extension does and needs, for someone deciding whether to install it. */
const MARKETPLACE_README = 'media/marketplace/README.md';
const BUNDLES = ['dist/extension.js', 'dist/server.js', 'dist/worker.js', 'dist/parse-worker.js', 'dist/session-worker.js', 'dist/stream-worker.js', 'dist/cli.js'];

function fail(message) {
  console.error(`package: ${message}`);
  process.exit(1);
}

function parseArgs(argv) {
  const args = { target: undefined, out: path.join(root, 'out') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i] ?? fail(`${a} needs a value`);
    if (a === '--target' || a === '-t') args.target = value();
    else if (a.startsWith('--target=')) args.target = a.slice('--target='.length);
    else if (a === '--out' || a === '-o') args.out = path.resolve(value());
    else if (a.startsWith('--out=')) args.out = path.resolve(a.slice('--out='.length));
    else fail(`unknown argument ${a} (valid: --target <vsce target>, --out <folder>)`);
  }
  return args;
}

/** The vsce target of the machine running this script. */
function currentTarget() {
  const glibc = process.report?.getReport?.().header?.glibcVersionRuntime;
  const os = process.platform === 'linux' && !glibc ? 'alpine' : process.platform;
  return `${os}-${process.arch}`;
}

/** Where each native piece lives for a vsce target: onnxruntime-node's bin folder and sharp's platform suffix. */
function nativeLayout(target) {
  const [os, arch] = target.split('-');
  const ortOs = { linux: 'linux', darwin: 'darwin', win32: 'win32' }[os];
  const sharpOs = { linux: 'linux', darwin: 'darwin', win32: 'win32', alpine: 'linuxmusl' }[os];
  const ortBin = path.join(root, 'node_modules/onnxruntime-node/bin');
  const napi = fs.readdirSync(ortBin).filter((d) => d.startsWith('napi-v'));
  const supported = napi.flatMap((v) =>
    fs.readdirSync(path.join(ortBin, v)).flatMap((o) => fs.readdirSync(path.join(ortBin, v, o)).map((a) => `${o}-${a}`)),
  );
  if (!ortOs || !supported.includes(`${ortOs}-${arch}`)) {
    fail(`onnxruntime-node has no binary for ${target}; targets it supports: ${[...new Set(supported)].join(', ')}`);
  }
  const sharp = `${sharpOs}-${arch}`;
  const sharpDir = path.join(root, 'node_modules/@img', `sharp-${sharp}`);
  if (!fs.existsSync(sharpDir)) {
    fail(
      `sharp's prebuilt package for ${target} (@img/sharp-${sharp}) is not installed; npm installs only this ` +
        `machine's. Install it first: npm install --no-save --os=${sharpOs === 'linuxmusl' ? 'linux' : sharpOs} ` +
        `--cpu=${arch}${sharpOs === 'linuxmusl' ? ' --libc=musl' : ''} sharp`,
    );
  }
  return { ort: `${ortOs}/${arch}`, sharp };
}

/** .vscodeignore with its linux-x64 lines pointed at the target's folders. */
function ignoreFileFor(target, layout, outDir) {
  const text = fs.readFileSync(path.join(root, '.vscodeignore'), 'utf8');
  const rewritten = text
    .split('\n')
    .map((line) => (line.startsWith('!node_modules/') || line.startsWith('!dist/native/') ? line.replaceAll('/linux/x64/', `/${layout.ort}/`).replaceAll('linux-x64', layout.sharp) : line))
    .join('\n');
  const file = path.join(outDir, `vscodeignore-${target}`);
  fs.writeFileSync(file, rewritten);
  return file;
}

/** Runs a tool with its output on stderr; returns that output when `capture` is set (it is still shown). */
function run(cmd, args, { capture = false } = {}) {
  // The tools' own output goes to stderr: stdout carries only the VSIX's path, for scripts.
  const r = spawnSync(cmd, args, { cwd: root, stdio: ['ignore', capture ? 'pipe' : 2, capture ? 'pipe' : 2], encoding: 'utf8' });
  if (capture) process.stderr.write(`${r.stdout ?? ''}${r.stderr ?? ''}`);
  if (r.status !== 0) fail(`${path.basename(cmd)} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`})`);
  return capture ? `${r.stdout}${r.stderr}` : '';
}

const args = parseArgs(process.argv.slice(2));
const target = args.target ?? currentTarget();
const layout = nativeLayout(target);
const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
fs.mkdirSync(args.out, { recursive: true });

// 1. Production bundles. Every one must be written by this build (a stale one from an earlier build must not ship).
const started = Date.now() - 1000;
run(process.execPath, ['esbuild.config.mjs', '--production']);
// The native decoder is compiled for the machine packaging (linux-x64 only); other targets ship without it and use
// onnxruntime's decoder.
if (target === currentTarget()) run(process.execPath, ['scripts/build-native.mjs']);
const stale = BUNDLES.filter((b) => !fs.existsSync(path.join(root, b)) || fs.statSync(path.join(root, b)).mtimeMs < started);
if (stale.length) fail(`the build did not write ${stale.join(', ')} (is its source file missing?)`);

// 2. vsce, with the allowlist for this target. npm's dependency listing stays on: it names the production
//    dependencies, and the allowlist keeps only the native runtime pieces of them.
const ignoreFile = ignoreFileFor(target, layout, args.out);
const vsix = path.join(args.out, `${manifest.name}-${manifest.version}-${target}.vsix`);
const vsceArgs = ['package', '--target', target, '--out', vsix, '--ignoreFile', ignoreFile, '--readme-path', MARKETPLACE_README];
// With a repository vsce points the changelog's relative links at it, and checks that the readme's images are https.
if (!manifest.repository) vsceArgs.push('--allow-missing-repository', '--no-rewrite-relative-links');
if (!['LICENSE', 'LICENSE.md', 'LICENSE.txt'].some((f) => fs.existsSync(path.join(root, f)))) {
  console.warn('package: warning: no LICENSE file; packaging without one');
  vsceArgs.push('--skip-license');
}
const vsceBin = path.join(path.dirname(require.resolve('@vscode/vsce/package.json')), 'vsce');
const vsceOutput = run(process.execPath, [vsceBin, ...vsceArgs], { capture: true });
// A vsce warning (" WARNING ", or "::warning::" under GitHub Actions) names something the Marketplace would show
// wrongly or a user would pay for: fix its cause rather than ship with it.
if (/\bWARNING\b|::warning::/.test(vsceOutput)) {
  fs.rmSync(vsix, { force: true });
  fail('vsce printed a warning (above); fix its cause rather than package with it');
}

const bytes = fs.statSync(vsix).size;
console.error(`package: ${target}: ${(bytes / 1024 / 1024).toFixed(1)} MB`);
console.log(vsix);
