// `blip2 check` on a docs folder: the problems the rules give for the fixture (listed by hand in
// test/fixtures/docs-site/expected-check.json), in every output format, and the exit codes scripts rely on.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import Ajv from 'ajv-draft-04';
import type * as Sarif from 'sarif';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { altTextDiagnostics } from '../../server/src/features/diagnostics/alt-diagnostics';
import { languageIdOfPath } from '../../server/src/features/workspace/workspace-files';
import { normalizeSettings } from '../../server/src/protocol/settings';
import { isolatedEnv, runCli } from '../helpers/cli';
import { DOCS_SITE_FIXTURE, docsSiteCopy } from '../helpers/docs-site';

interface Reported {
  file: string;
  line: number;
  column: number;
  endLine: number;
  endColumn: number;
  rule: string;
  severity: string;
  message: string;
  image: string;
}

const expected: Omit<Reported, 'message'>[] = JSON.parse(fs.readFileSync(path.join(DOCS_SITE_FIXTURE, 'expected-check.json'), 'utf8'));
const withoutMessage = ({ message: _message, ...rest }: Reported) => rest;

describe('blip2 check', () => {
  const iso = isolatedEnv();
  let site: string;

  before(() => {
    site = docsSiteCopy(path.dirname(iso.store));
  });
  after(() => iso.cleanup());

  it('reports what the rules find, honouring .gitignore files, node_modules and the .blip2.json, with the language server\'s messages', async () => {
    const r = await runCli(['check', '--format', 'json'], iso.env, undefined, site);
    assert.equal(r.code, 1, r.stderr);
    const reported: Reported[] = JSON.parse(r.stdout);
    assert.deepEqual(reported.map(withoutMessage), expected);
    // The same sentences the editor shows for the same files, under the same project settings.
    const project = normalizeSettings(JSON.parse(fs.readFileSync(path.join(site, '.blip2.json'), 'utf8')));
    for (const problem of reported) {
      const file = path.join(site, problem.file);
      const document = TextDocument.create(pathToFileURL(file).href, languageIdOfPath(file)!, 1, fs.readFileSync(file, 'utf8'));
      const diagnostic = altTextDiagnostics(document, project.altText).find((d) => d.range.start.line === problem.line - 1 && d.code === problem.rule);
      assert.equal(problem.message, diagnostic?.message, `${problem.file}:${problem.line}`);
      assert.equal(diagnostic?.range.start.character, problem.column - 1);
    }
  });

  it('prints file:line:column  severity  message  rule, relative to the current folder', async () => {
    const json: Reported[] = JSON.parse((await runCli(['check', '--format', 'json'], iso.env, undefined, site)).stdout);
    const r = await runCli(['check', '..'], iso.env, undefined, path.join(site, 'guide'));
    assert.equal(r.code, 1);
    const lines = r.stdout.trimEnd().split('\n');
    assert.deepEqual(
      lines,
      json.map((p) => `${path.posix.relative('guide', p.file)}:${p.line}:${p.column}  ${p.severity}  ${p.message}  ${p.rule}`),
    );
    assert.match(r.stderr, /9 problems in 4 files/);
  });

  it('writes SARIF 2.1.0 that the schema accepts, one result per problem with its rule and region', async () => {
    const r = await runCli(['check', '--format', 'sarif'], iso.env, undefined, site);
    assert.equal(r.code, 1);
    const log: Sarif.Log = JSON.parse(r.stdout);
    const schema = JSON.parse(fs.readFileSync(require.resolve('@microsoft/jest-sarif/lib/schemas/sarif-2.1.0-rtm.5.json'), 'utf8'));
    const validate = new Ajv({ allErrors: true, strict: false, unicodeRegExp: false, validateFormats: false }).compile(schema);
    assert.ok(validate(log), JSON.stringify(validate.errors, null, 2));
    assert.equal(log.version, '2.1.0');
    const [run] = log.runs;
    const rules = run.tool.driver.rules!;
    assert.deepEqual(
      run.results!.map((result) => {
        const { artifactLocation, region } = result.locations![0].physicalLocation!;
        assert.equal(rules[result.ruleIndex!].id, result.ruleId);
        return { file: artifactLocation!.uri, line: region!.startLine, column: region!.startColumn, endLine: region!.endLine, endColumn: region!.endColumn, rule: result.ruleId, level: result.level };
      }),
      expected.map((p) => ({ file: p.file, line: p.line, column: p.column, endLine: p.endLine, endColumn: p.endColumn, rule: p.rule, level: p.severity })),
    );
  });

  it('writes GitHub workflow annotations', async () => {
    const r = await runCli(['check', '--format', 'github'], iso.env, undefined, site);
    assert.equal(r.code, 1);
    const annotations = r.stdout.trimEnd().split('\n').map((line) => {
      const m = /^::(\w+) (.*?)::(.*)$/.exec(line);
      assert.ok(m, line);
      const properties: Record<string, string> = Object.fromEntries(m[2].split(',').map((kv) => kv.split('=') as [string, string]));
      return { level: m[1], properties, message: m[3] };
    });
    assert.deepEqual(
      annotations.map(({ level, properties: p }) => [level, p.file, Number(p.line), Number(p.col), Number(p.endLine), Number(p.endColumn)]),
      expected.map((p) => [p.severity, p.file, p.line, p.column, p.endLine, p.endColumn]),
    );
    assert.ok(annotations.every((a) => a.message.length > 20 && !a.message.includes('\n')));
  });

  it('writes the whole report into a pipe, in every format (a pipe takes 64 KB at once)', async () => {
    const dir = path.join(site, 'many');
    fs.mkdirSync(dir);
    const images = 1000;
    fs.writeFileSync(path.join(dir, 'gallery.md'), Array.from({ length: images }, (_, i) => `![](shots/${i}.png)\n`).join('\n'));
    const outputs: Record<string, string> = {};
    for (const format of ['text', 'json', 'sarif', 'github']) {
      const r = await runCli(['check', 'many', '--format', format], iso.env, undefined, site);
      assert.equal(r.code, 1, r.stderr);
      outputs[format] = r.stdout;
    }
    assert.ok(outputs.sarif.length > 4 * 65536, 'the SARIF report is far beyond one pipe buffer');
    assert.equal(outputs.text.trimEnd().split('\n').filter((line) => / missing-alt$/.test(line)).length, images);
    assert.equal(JSON.parse(outputs.json).length, images);
    assert.equal((JSON.parse(outputs.sarif) as Sarif.Log).runs[0].results!.length, images);
    assert.equal(outputs.github.trimEnd().split('\n').filter((line) => line.startsWith('::warning file=many/gallery.md,')).length, images);
  });

  it('refuses a hostile .blip2.json with one short line (exit 2): a huge value, deep nesting, a link out of the repository, a pipe, a huge file', async () => {
    const repo = path.join(site, 'hostile');
    const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    const cases: [string, (file: string) => void, RegExp][] = [
      ['a 60 KB string', (f) => fs.writeFileSync(f, JSON.stringify({ generation: { captionPrompt: 1, numBeams: 'x'.repeat(60_000) } })), /blip2\.generation\.numBeams must be a number \(got "x{40}…" \(60000 characters\)\)/],
      ['arrays 30,000 deep', (f) => fs.writeFileSync(f, `{"generation":{"numBeams":${deep(30_000)}}}`), /blip2\.generation\.numBeams must be a number \(got \[\[\[/],
      ['arrays 30,000 deep under an unknown key', (f) => fs.writeFileSync(f, `{"colour":${deep(30_000)}}`), /"colour" is not a setting/],
      ['a link to /etc/passwd', (f) => fs.symlinkSync('/etc/passwd', f), /hostile\/\.blip2\.json: is a symbolic link to a file outside the repository; its settings were not used/],
      ['a named pipe', (f) => spawnSync('mkfifo', [f]), /hostile\/\.blip2\.json: is a named pipe, not a regular file/],
      // Sparse: 50 MB on paper, refused by its size before a byte is read.
      ['a 50 MB file', (f) => fs.truncateSync((fs.closeSync(fs.openSync(f, 'w')), f), 50 * 1024 * 1024), /hostile\/\.blip2\.json: is 50 MB, more than the 64 KB a settings file may be/],
    ];
    for (const [name, write, pattern] of cases) {
      fs.rmSync(repo, { recursive: true, force: true });
      fs.mkdirSync(path.join(repo, '.git'), { recursive: true });
      fs.writeFileSync(path.join(repo, 'a.md'), '![](x.png)\n');
      write(path.join(repo, '.blip2.json'));
      const r = await runCli(['check', 'hostile'], iso.env, undefined, site);
      assert.equal(r.code, 2, `${name}: ${r.stderr.slice(0, 500)}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, name);
      assert.ok(r.stderr.length < 300, `${name}: ${r.stderr.length} characters on stderr`);
      assert.match(r.stderr, pattern, name);
      assert.doesNotMatch(r.stderr, /root:|internal error/, name);
    }
    // A link within the repository is followed.
    fs.rmSync(path.join(repo, '.blip2.json'));
    fs.writeFileSync(path.join(repo, 'shared.json'), JSON.stringify({ altText: { rules: { 'missing-alt': 'off' } } }));
    fs.symlinkSync('shared.json', path.join(repo, '.blip2.json'));
    const r = await runCli(['check', 'hostile', '--format', 'json'], iso.env, undefined, site);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), []);
  });

  it('checks a file named on the command line even when it is ignored', async () => {
    const r = await runCli(['check', 'build/out.md', '--format', 'json'], iso.env, undefined, site);
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.stdout).map((p: Reported) => [p.file, p.rule]), [['build/out.md', 'missing-alt']]);
  });

  it('exits 0 when only information and hints are left', async () => {
    const dir = path.join(site, 'clean');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'ok.md'), `![A cat on a sofa](../images/cat.png)\n\n![${'A long description of a rocket. '.repeat(5)}](../images/rocket.jpg)\n`);
    fs.writeFileSync(path.join(dir, '.blip2.json'), JSON.stringify({ altText: { rules: { 'redundant-phrase': 'hint' } } }));
    const r = await runCli(['check', 'clean', '--format', 'json'], iso.env, undefined, site);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).map((p: Reported) => [p.rule, p.severity]), [['alt-too-long', 'information']]);
  });

  it('exits 2, with one line saying what to fix, for a usage or settings mistake', async () => {
    const cases: [string[], RegExp][] = [
      [['check', '--format', 'xml'], /--format must be one of text, json, sarif, github \(got "xml"\)/],
      [['check', 'no-such-folder'], /no-such-folder does not exist/],
      [['check', '--num-beams', '2'], /check does not take --num-beams/],
      [['check', '.blip2.json'], /\.blip2\.json is not a markdown, HTML, JSX or TSX file/],
    ];
    for (const [args, pattern] of cases) {
      const r = await runCli(args, iso.env, undefined, site);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      assert.match(r.stderr.trim(), new RegExp(`^blip2: .*${pattern.source}`));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    const broken = path.join(site, 'broken');
    fs.mkdirSync(broken);
    fs.writeFileSync(path.join(broken, 'a.md'), '![](x.png)\n');
    fs.writeFileSync(path.join(broken, '.blip2.json'), '{ "altText": { "rules": { "missing-alt": "loud" } } }');
    const r = await runCli(['check', 'broken'], iso.env, undefined, site);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^blip2: broken\/\.blip2\.json: blip2\.altText\.rules\["missing-alt"\] must be one of error, warning, information, hint, off \(got "loud"\)/);
  });
});
