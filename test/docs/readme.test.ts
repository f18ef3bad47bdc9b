// The README is the user's guide: these checks tie what it says to the code and the files it describes, so that it
// cannot drift from them (the commands at the top, the images, the settings and rules tables, the messages it quotes,
// the dependency table).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { downloadOffer } from '../../client/src/setup-text';
import { statusBarView } from '../../client/src/status-text';
import type { ConvertedManifest } from '../../server/src/engine/convert/manifest';
import { damaged } from '../../server/src/engine/convert/integrity';
import { explainOutOfMemory } from '../../server/src/engine/memory-needs';
import { checkAlts } from '../../server/src/features/alt-text/rules';
import { pendingHoverMarkdown } from '../../server/src/features/hover/hover-markdown';
import { findImageElements } from '../../server/src/features/images/find-images';
import { failureReason } from '../../server/src/features/inference-failure';
import { DEFAULT_MAX_QUEUED } from '../../server/src/inference/types';
import { Scheduler } from '../../server/src/inference/scheduler';
import { configurationProperties, manifest } from '../client/manifest';
import { headings, readDoc, sectionOf, tableRows } from '../helpers/markdown';
import { repoRoot } from '../helpers/paths';

const doc = readDoc('README.md');
const readme = doc.text;
/** The README's prose as one line: quotes wrap across lines and through `> ` blockquote markers. */
const flat = readme.replace(/^> ?/gm, '').replace(/\s+/g, ' ');

it('starts with the set-up command and the test command', () => {
  const firstBlock = /```bash\n([\s\S]*?)```/.exec(readme)![1].trim().split('\n');
  assert.match(firstBlock[0], /^npm ci && npm run build && node dist\/cli\.js caption /);
  assert.equal(firstBlock[1], 'npm test');
});

it('links images that exist, each with alt text', () => {
  // Our own finder: it knows that images inside code spans are not images.
  const images = findImageElements(readme, 'markdown');
  assert.ok(images.length >= 2);
  for (const image of images) {
    assert.ok(fs.existsSync(path.join(repoRoot, image.destination)), image.destination);
    assert.deepEqual(checkAlts([image]), [], image.destination);
  }
});

it('has the sections a new user looks for, in that order, in at most 350 lines', () => {
  const sections = headings(doc).filter((h) => h.depth === 2).map((h) => h.text);
  const wanted = [
    'Requirements', 'What it does', 'Install', 'First run', 'Features', 'Settings', 'Other editors', 'Command line and CI',
    'Privacy', 'Troubleshooting', 'Dependencies, and why each is there',
  ];
  assert.deepEqual(sections.filter((s) => wanted.includes(s)), wanted);
  assert.ok(readme.split('\n').length <= 350, `${readme.split('\n').length} lines`);
});

it('uses none of the model\'s inner words before the install section', () => {
  const beforeInstall = readme.slice(0, readme.indexOf('\n## Install\n'));
  assert.ok(beforeInstall.length > 1000);
  for (const word of ['Q-Former', 'KV cache', 'MatMulNBits', 'madvise', 'ONNX']) assert.ok(!beforeInstall.includes(word), word);
});

it('says how to find the VSIX it builds instead of naming one version and platform', () => {
  const install = sectionOf(doc, 'Install');
  assert.doesNotMatch(install, new RegExp(`${manifest.name}-\\d+\\.\\d+\\.\\d+-`));
  assert.match(install, /\$\(npm run --silent package\)/);
});

describe('settings table', () => {
  const rows = tableRows(sectionOf(doc, 'Settings'), 'setting');
  const properties = configurationProperties();
  const key = (cell: string) => /^`(blip2\.[\w.]+)`$/.exec(cell)?.[1];

  it('has one line per setting of package.json, in its order, and nothing else', () => {
    assert.deepEqual(rows.map((r) => key(r[0])), Object.keys(properties));
    for (const row of rows) assert.equal(row.length, 3, row.join(' | '));
  });

  it('gives each setting the default package.json declares', () => {
    for (const [cell, defaultCell] of rows) {
      const declared = properties[key(cell)!].default;
      if (typeof declared === 'object') {
        assert.match(defaultCell, /\(#alt-text-rules\)/, `${cell} points at its table`);
      } else if (declared === '') {
        assert.equal(defaultCell, '(empty)', cell);
      } else {
        assert.equal(defaultCell, `\`${String(declared)}\``, cell);
      }
    }
  });

  it('lists every alt-text rule with its default severity', () => {
    const rules = tableRows(sectionOf(doc, 'Alt-text rules'), 'rule').map(([id, severity]) => [id.replace(/`/g, ''), severity.replace(/`/g, '')]);
    const declared = properties['blip2.altText.rules'].properties!;
    assert.deepEqual(rules, Object.entries(declared).map(([id, rule]) => [id, rule.default]));
  });
});

describe('quotes what users see, as the code words it', () => {
  it('the set-up offer, with its button', () => {
    const offer = downloadOffer({ model: 'Salesforce/blip2-opt-2.7b', precision: 'auto', device: 'auto', offline: false });
    assert.ok(flat.includes(offer.message), offer.message);
    assert.ok(flat.includes(`**${offer.downloadLabel}**`), offer.downloadLabel);
    const offline = downloadOffer({ model: 'Salesforce/blip2-opt-2.7b', precision: 'auto', device: 'auto', offline: true });
    assert.ok(flat.includes(offline.message.slice(offline.message.indexOf('and "blip2.offline"'))), offline.message);
  });

  it('the status bar and the hover without a model, and the hover that waits', () => {
    const noModel = statusBarView({ kind: 'running', model: { state: 'noModel', model: 'm', queued: 0, cache: { entries: 0, bytes: 0 } } });
    assert.ok(flat.includes(`**${noModel.text.replace(/^\$\([^)]*\) /, '')}**`), noModel.text);
    const restarting = statusBarView({ kind: 'restarting', reason: 'r' });
    assert.ok(flat.includes(`**${restarting.text.replace(/^\$\([^)]*\) /, '')}**`), restarting.text);
    const hover = failureReason(new Error('x'), { status: () => ({ state: 'noModel', model: 'm', message: 'Gone.', queued: 0, cache: { entries: 0, bytes: 0 } }) });
    assert.ok(flat.includes(`"${hover.slice(0, hover.indexOf(':'))}"`), hover);
    const waiting = pendingHoverMarkdown({ sized: false }).replace(/\*/g, '');
    assert.ok(flat.includes(`"${waiting}"`), waiting);
  });

  it('out of memory, with the numbers the committed benchmark gives', () => {
    // The latest `npm run bench` (the set-up and server benchmarks write files of their own, without `runs`).
    const results = fs.readdirSync(path.join(repoRoot, 'bench', 'results')).filter((f) => f.endsWith('.json')).sort();
    const bench = results.map((f) => JSON.parse(fs.readFileSync(path.join(repoRoot, 'bench', 'results', f), 'utf8'))).filter((b) => b.runs).at(-1);
    const int8 = bench.runs.find((r: { engine: string; precision: string }) => r.engine === 'blip2' && r.precision === 'int8');
    const manifestOf = { precision: 'int8', sizes: { 'onnx/a.onnx': int8.conversion.bytes_on_disk } } as unknown as ConvertedManifest;
    const line = explainOutOfMemory(manifestOf, 1.2 * 1024 ** 3).line;
    assert.ok(flat.includes(`"${line}"`), line);
  });

  it('a damaged model and its way out', () => {
    const error = damaged('/m', [{ name: 'onnx/a.onnx', problem: 'changed' }]);
    const shown = error.message.replace('/m', '…').replace(/onnx\/a\.onnx changed\.$/, '…');
    assert.ok(flat.includes(`"${shown} ${error.hint}"`), `${shown} ${error.hint}`);
  });

  it('a full queue', async () => {
    const scheduler = new Scheduler(DEFAULT_MAX_QUEUED);
    const never = new Promise<void>(() => undefined);
    const signal = new AbortController().signal;
    for (let i = 0; i <= DEFAULT_MAX_QUEUED; i++) void scheduler.run(() => 'background', signal, () => never).catch(() => undefined);
    const refused = await scheduler.run(() => 'background', signal, async () => undefined).then(() => undefined, (e: Error) => e.message);
    assert.ok(refused && flat.includes(`"${refused}"`), refused);
  });

  it('a platform onnxruntime has no build for', () => {
    const r = spawnSync(process.execPath, [path.join(repoRoot, 'scripts', 'package.mjs'), '--target', 'darwin-x64'], { cwd: repoRoot, encoding: 'utf8' });
    assert.equal(r.status, 1);
    const said = r.stderr.trim().replace(/^package: /, '');
    assert.ok(flat.includes(`"${said}"`), said);
  });
});

it('names every package it depends on in the dependency table, saying why', () => {
  const rows = tableRows(sectionOf(doc, 'Dependencies, and why each is there'), 'package');
  const named = new Set(rows.flatMap(([packages]) => packages.replace(/\(dev\)/g, '').split(',').map((p) => p.trim())));
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8'));
  const all = [...Object.keys(pkg.dependencies), ...Object.keys(pkg.devDependencies)].filter((p) => !p.startsWith('@types/') || p === '@types/sarif');
  assert.deepEqual(all.filter((p) => !named.has(p)), []);
  for (const [packages, why] of rows) assert.ok(why.length > 10, packages);
});
