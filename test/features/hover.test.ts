import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { CancellationToken, CancellationTokenSource } from 'vscode-languageserver-protocol';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { imageHover, type ImageHoverOptions } from '../../server/src/features/hover/image-hover';
import { escapeMarkdown } from '../../server/src/features/hover/hover-markdown';
import { ClientCommands, HOVER_COMMANDS } from '../../server/src/protocol/messages';
import { DEFAULT_SETTINGS } from '../../server/src/protocol/settings';
import { FakeInference } from '../helpers/fake-inference';

let dir: string;
const doc = (name: string, languageId: string, text: string) => TextDocument.create(pathToFileURL(path.join(dir, name)).href, languageId, 1, text);
const options = (overrides: Partial<ImageHoverOptions> = {}): ImageHoverOptions => ({
  workspaceFolders: [pathToFileURL(dir).href],
  settings: DEFAULT_SETTINGS,
  waitMs: 10_000,
  vscodeClient: true,
  ...overrides,
});

describe('image hover', () => {
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-hover-'));
    for (const name of ['cat.png', 'my pic.png']) fs.writeFileSync(path.join(dir, name), 'png');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('shows the caption, provenance, a sized thumbnail and our two command links', async () => {
    const inference = new FakeInference({ 'cat.png': 'a cat [on] a *mat*' });
    const document = doc('a.md', 'markdown', 'Look: ![](cat.png)\n');
    const hover = await imageHover(document, 9, inference, options(), CancellationToken.None);
    assert.equal(hover?.state, 'caption');
    assert.deepEqual(hover.range, { start: 6, end: 18 });
    const md = hover.markdown;
    assert.match(md, new RegExp(`!\\[thumbnail\\]\\(${pathToFileURL(path.join(dir, 'cat.png')).href.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\|height=128\\)`));
    assert.ok(md.includes(`**${escapeMarkdown('a cat [on] a *mat*')}**`));
    assert.ok(md.includes('fake-model · fp32 · cpu · 12 ms'));
    const useAsAlt = /\[Use as alt text\]\(command:blip2\.useAsAltText\?([^ )]+)/.exec(md);
    assert.ok(useAsAlt);
    assert.deepEqual(JSON.parse(decodeURIComponent(useAsAlt[1])), [document.uri, { start: { line: 0, character: 6 }, end: { line: 0, character: 18 } }, 'a cat [on] a *mat*']);
    assert.match(md, /\[Ask a question…\]\(command:blip2\.askAboutImage\?/);
    assert.equal(inference.calls[0].priority, 'interactive');
  });

  it('hovers path strings in any file, without "Use as alt text"', async () => {
    const inference = new FakeInference({ 'my pic.png': 'a picture' });
    const document = doc('a.css', 'css', '.x { background: url("my%20pic.png"); }');
    const hover = await imageHover(document, 25, inference, options(), CancellationToken.None);
    assert.equal(hover?.state, 'caption');
    assert.ok(!hover.markdown.includes('useAsAltText'));
    assert.ok(hover.markdown.includes('askAboutImage'));
  });

  it('outside VS Code: a plain thumbnail and no command links, which other editors would show as raw text', async () => {
    const inference = new FakeInference({ 'my pic.png': 'a picture' });
    const document = doc('a.md', 'markdown', '![](my%20pic.png)');
    const hover = await imageHover(document, 5, inference, options({ vscodeClient: false }), CancellationToken.None);
    assert.equal(hover?.state, 'caption');
    assert.ok(!hover.markdown.includes('command:'), hover.markdown);
    assert.ok(hover.markdown.includes('**a picture**'));
    assert.ok(hover.markdown.includes('my%20pic.png)'), hover.markdown);
  });

  it('answers "Captioning…" after the wait and lets the run go on', async () => {
    const inference = new FakeInference({ 'cat.png': 'a cat' });
    inference.hold();
    const source = new CancellationTokenSource();
    const hover = await imageHover(doc('a.md', 'markdown', '![](cat.png)'), 5, inference, options({ waitMs: 20 }), source.token);
    assert.equal(hover?.state, 'pending');
    assert.match(hover.markdown, /Captioning… hover again in a moment/);
    // A late cancellation of the answered hover must not reach the run.
    source.cancel();
    assert.equal(inference.calls[0].token.isCancellationRequested, false);
    inference.release();
  });

  it('withdraws its interest in the run when the hover is cancelled while waiting', async () => {
    const inference = new FakeInference({ 'cat.png': 'a cat' });
    inference.hold();
    const source = new CancellationTokenSource();
    const pending = imageHover(doc('a.md', 'markdown', '![](cat.png)'), 5, inference, options(), source.token);
    while (inference.calls.length === 0) await new Promise((r) => setImmediate(r));
    source.cancel();
    assert.equal(await pending, undefined);
    assert.equal(inference.cancelled, 1);
  });

  it('says in one sentence why there is no caption', async () => {
    const inference = new FakeInference({});
    const missing = await imageHover(doc('a.md', 'markdown', '![](nope.png)'), 5, inference, options(), CancellationToken.None);
    assert.equal(missing?.state, 'problem');
    assert.match(missing.markdown, /The image file does not exist: .*nope\.png\./);

    const remote = await imageHover(doc('a.md', 'markdown', '![](https://example.com/a.png)'), 5, inference, options(), CancellationToken.None);
    assert.match(remote!.markdown, /Remote images are off.*blip2\.remoteImages\.enabled/);
    assert.equal(inference.calls.length, 0);

    inference.state = 'noModel';
    inference.failure = Object.assign(new Error('Model not found: fake-model'), { name: 'UserError' });
    const noModel = await imageHover(doc('a.md', 'markdown', '![](cat.png)'), 5, inference, options(), CancellationToken.None);
    assert.match(noModel!.markdown, /No BLIP-2 model is set up yet: Model not found: fake-model\. \[Set Up Model…\]\(command:blip2\.setUpModel\?/);
    assert.ok(HOVER_COMMANDS.includes(ClientCommands.setUpModel), 'the link is one the client lets hovers run');
    assert.ok(!noModel!.markdown.includes('    at '), 'no stack trace');

    // Any other editor shows links as raw text and has no such command: it is told about the setting.
    const elsewhere = await imageHover(doc('a.md', 'markdown', '![](cat.png)'), 5, inference, options({ vscodeClient: false }), CancellationToken.None);
    assert.match(elsewhere!.markdown, /No BLIP-2 model is set up yet: Model not found: fake-model\. Set the "model" setting to a folder/);
    assert.ok(!/command:|Set Up Model/.test(elsewhere!.markdown), elsewhere!.markdown);
  });

  it('returns nothing away from images', async () => {
    const hover = await imageHover(doc('a.md', 'markdown', 'text ![](cat.png)'), 1, new FakeInference({}), options(), CancellationToken.None);
    assert.equal(hover, undefined);
  });
});
