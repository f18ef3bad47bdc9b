// Where the server may read and what it may contact: images that documents name stay within the workspace unless
// the user allows more, redirects of remote images cannot reach this machine's services, and an untrusted
// workspace cannot widen either.
import { strict as assert } from 'node:assert';
import type * as dns from 'node:dns';
import * as fs from 'node:fs';
import type { LookupFunction } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { CancellationToken } from 'vscode-languageserver-protocol';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { explicitSettings, type InspectedSetting } from '../../client/src/config';
import { altCodeActions } from '../../server/src/features/code-actions/alt-code-actions';
import { fetchRemoteImage, isLocalHost, redirectRefusal } from '../../server/src/features/images/fetch-remote';
import { loadImageAt } from '../../server/src/features/images/load-image';
import { DEFAULT_SETTINGS, normalizeSettings, type Blip2Settings } from '../../server/src/protocol/settings';
import { configurationProperties, manifest } from '../client/manifest';
import { startImageSite, type ImageSite } from '../helpers/image-site';
import { imagePath } from '../helpers/reference';

const never = CancellationToken.None;

describe('read scope: images that documents name', () => {
  let root: string;
  let ws: string;
  let outside: string;
  const settings = (outsideWorkspace: boolean): Blip2Settings => ({ ...DEFAULT_SETTINGS, localImages: { ...DEFAULT_SETTINGS.localImages, outsideWorkspace } });
  const load = (url: string, documentPath: string, over: { outsideWorkspace?: boolean; namedByUser?: boolean } = {}) =>
    loadImageAt(
      { url, documentUri: pathToFileURL(documentPath).href, workspaceFolders: [pathToFileURL(ws).href], namedByUser: over.namedByUser },
      { remoteImages: DEFAULT_SETTINGS.remoteImages, localImages: settings(over.outsideWorkspace ?? false).localImages },
      never,
    );

  before(() => {
    root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'blip2-scope-')));
    ws = path.join(root, 'workspace');
    outside = path.join(root, 'private');
    fs.mkdirSync(ws);
    fs.mkdirSync(outside);
    fs.copyFileSync(imagePath('cat.png'), path.join(ws, 'cat.png'));
    fs.copyFileSync(imagePath('coffee.png'), path.join(outside, 'secret.png'));
    fs.symlinkSync(path.join(outside, 'secret.png'), path.join(ws, 'link.png'));
    fs.symlinkSync(outside, path.join(ws, 'assets'));
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('reads images within the workspace, and refuses paths and links that lead out of it, saying how to allow them', async () => {
    const doc = path.join(ws, 'doc.md');
    assert.equal((await load('cat.png', doc)).ok, true);
    const refusals: [string, RegExp][] = [
      ['../private/secret.png', /private\/secret\.png is outside the workspace folders, so it is not read\./],
      [path.join(outside, 'secret.png'), /secret\.png is outside the workspace folders/],
      ['link.png', /link\.png is outside the workspace folders \(it leads to .*private\/secret\.png\)/],
      ['assets/secret.png', /assets\/secret\.png is outside the workspace folders \(it leads to/],
    ];
    for (const [url, reason] of refusals) {
      const loaded = await load(url, doc);
      assert.equal(loaded.ok, false, url);
      assert.match(!loaded.ok ? loaded.reason : '', reason, url);
      assert.match(!loaded.ok ? loaded.reason : '', /Set "blip2\.localImages\.outsideWorkspace" to true/, url);
    }
  });

  it('the setting, or naming the image yourself, reads it anywhere; a document outside the workspace may use its own folder', async () => {
    assert.equal((await load('link.png', path.join(ws, 'doc.md'), { outsideWorkspace: true })).ok, true);
    assert.equal((await load(path.join(outside, 'secret.png'), path.join(ws, 'doc.md'), { namedByUser: true })).ok, true);
    const loose = path.join(outside, 'notes.md');
    assert.equal((await load('secret.png', loose)).ok, true);
    assert.equal((await load(path.join(ws, 'cat.png'), loose)).ok, true);
    assert.equal((await load('/etc/hostname', loose)).ok, false);
  });

  it('the quick fix for an image outside the workspace is shown disabled, with the same sentence', () => {
    const document = TextDocument.create(pathToFileURL(path.join(ws, 'doc.md')).href, 'markdown', 1, '![](../private/secret.png)\n');
    const whole = { start: { line: 0, character: 0 }, end: { line: 1, character: 0 } };
    const [action] = altCodeActions(document, whole, { diagnostics: [], only: ['quickfix'] }, { workspaceFolders: [pathToFileURL(ws).href], settings: settings(false), disabledSupport: true });
    assert.match(action.disabled?.reason ?? '', /secret\.png is outside the workspace folders, so it is not read/);
    const [allowed] = altCodeActions(document, whole, { diagnostics: [], only: ['quickfix'] }, { workspaceFolders: [pathToFileURL(ws).href], settings: settings(true), disabledSupport: true });
    assert.equal(allowed.disabled, undefined);
  });
});

describe('remote images: redirects', () => {
  let site: ImageSite;
  let other: ImageSite;
  let base: string;
  let otherBase: string;
  const cat = fs.readFileSync(imagePath('cat.png'));
  const limits = { maxBytes: 1 << 20, timeoutMs: 10_000 };

  before(async () => {
    other = await startImageSite(() => ({ '/cat.png': cat }));
    otherBase = other.base;
    site = await startImageSite((b) => ({
      '/cat.png': cat,
      '/moved.png': { redirect: '/cat.png' },
      '/elsewhere.png': { redirect: `${otherBase}/cat.png` },
      '/loop.png': { redirect: '/loop.png' },
      '/file.png': { redirect: 'file:///etc/passwd' },
      // By names the test's resolver gives this machine's address: the other service, and this one.
      '/to-intranet.png': { redirect: `http://intranet.example.com:${new URL(otherBase).port}/cat.png` },
      '/to-cdn.png': { redirect: `http://cdn.example.com:${new URL(b).port}/cat.png` },
    }));
    base = site.base;
  });
  after(async () => {
    await site?.close();
    await other?.close();
  });

  it('follows a redirect within the same host and port', async () => {
    assert.deepEqual(Buffer.from(await fetchRemoteImage(`${base}/moved.png`, limits, never)), cat);
  });

  it('refuses a redirect to another service on this machine, to a non-http address, and a loop', async () => {
    await assert.rejects(fetchRemoteImage(`${base}/elsewhere.png`, limits, never), (e: Error) => {
      assert.equal(e.message, `${base}/elsewhere.png redirects to ${otherBase}/cat.png, which is on this machine or its local network, so it is not followed.`);
      return true;
    });
    await assert.rejects(fetchRemoteImage(`${base}/file.png`, limits, never), /redirects to file:\/\/\/etc\/passwd, which is not an http\(s\) address/);
    await assert.rejects(fetchRemoteImage(`${base}/loop.png`, limits, never), /redirects more than 5 times/);
  });

  it('checks a redirect against the address its host resolves to, not the name (an /etc/hosts alias of this machine)', async () => {
    // The test's own resolver: two names that look public and are this machine, as /etc/hosts can make any name.
    const hosts: Record<string, string> = { 'images.example.com': '127.0.0.1', 'intranet.example.com': '127.0.0.1', 'cdn.example.com': '127.0.0.1' };
    const resolved: string[] = [];
    const lookup = ((hostname: string, options: dns.LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void) => {
      resolved.push(hostname);
      const address = hosts[hostname];
      if (!address) return callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), '');
      if (options.all) callback(null, [{ address, family: 4 }]);
      else callback(null, address, 4);
    }) as unknown as LookupFunction;
    const port = new URL(base).port;
    const otherPort = new URL(otherBase).port;
    const at = (host: string, p: string, file: string) => `http://${host}:${p}${file}`;

    // Another service on this machine, reached by a name: refused by its address, before anything is sent to it.
    await assert.rejects(fetchRemoteImage(at('images.example.com', port, '/to-intranet.png'), limits, never, { lookup }), (e: Error) => {
      assert.equal(
        e.message,
        `${at('images.example.com', port, '/to-intranet.png')} redirects to ${at('intranet.example.com', otherPort, '/cat.png')}, which is on this machine or its local network (127.0.0.1), so it is not followed.`,
      );
      return true;
    });
    assert.equal(other.requests, 0, 'the other service was never asked');
    // The image's own service under another name (the same address and port): followed.
    assert.deepEqual(Buffer.from(await fetchRemoteImage(at('images.example.com', port, '/to-cdn.png'), limits, never, { lookup })), cat);
    assert.deepEqual(resolved, ['images.example.com', 'intranet.example.com', 'images.example.com', 'cdn.example.com']);
    // A resolver's IPv4-in-IPv6 answer is this machine too.
    assert.equal(isLocalHost('::ffff:127.0.0.1'), true);
    assert.equal(isLocalHost('::ffff:10.1.2.3'), true);
    assert.equal(isLocalHost('::ffff:93.184.216.34'), false);
  });

  it('lets public hosts redirect to other public hosts and to https, never from a public host to a local one', () => {
    const url = (s: string) => new URL(s);
    assert.equal(redirectRefusal(url('https://github.com/o/r/raw/main/a.png'), url('https://raw.githubusercontent.com/o/r/main/a.png')), undefined);
    assert.equal(redirectRefusal(url('http://example.com/a.png'), url('https://example.com/a.png')), undefined);
    for (const target of ['http://127.0.0.1/a.png', 'http://localhost:8080/a.png', 'http://10.1.2.3/a.png', 'http://192.168.0.1/a.png', 'http://[::1]/a.png', 'http://[::ffff:127.0.0.1]/a.png', 'http://2130706433/a.png', 'http://169.254.169.254/latest']) {
      assert.equal(redirectRefusal(url('https://images.example.com/a.png'), url(target)), 'is on this machine or its local network', target);
    }
    assert.equal(isLocalHost('93.184.216.34'), false);
    assert.equal(isLocalHost('cdn.example.com'), false);
  });
});

describe('untrusted workspaces', () => {
  it('ignore the workspace\'s own values of every setting that names files or widens what is read or contacted', () => {
    const restricted = manifest.capabilities.untrustedWorkspaces.restrictedConfigurations ?? [];
    const widening = ['blip2.model', 'blip2.modelStore', 'blip2.remoteImages.enabled', 'blip2.localImages.outsideWorkspace', 'blip2.localImages.maxBytes', 'blip2.remoteImages.maxBytes'];
    for (const key of widening) {
      assert.ok(restricted.includes(key), `${key} is restricted`);
      assert.ok(manifest.capabilities.untrustedWorkspaces.description?.includes(key), `the description names ${key}`);
    }
  });

  it('the client sends the server what VS Code gives once trust is applied, never the workspace\'s own value', () => {
    // In restricted mode `inspect` still reports the workspace's values; `get` leaves out those of restricted
    // settings, giving the user's own value or the contributed default.
    const scopes: Record<string, InspectedSetting> = {
      model: { globalValue: '/models/mine', workspaceValue: '/evil/model' },
      'localImages.outsideWorkspace': { workspaceValue: true },
      'remoteImages.enabled': { workspaceValue: true },
      'localImages.maxBytes': { workspaceValue: 2 ** 40 },
      'generation.numBeams': { workspaceValue: 1 },
    };
    const properties = configurationProperties();
    const restricted = new Set(manifest.capabilities.untrustedWorkspaces.restrictedConfigurations);
    const untrustedGet = (key: string): unknown => {
      const s = scopes[key];
      const own = restricted.has(`blip2.${key}`) ? s?.globalValue : (s?.workspaceValue ?? s?.globalValue);
      return own ?? properties[`blip2.${key}`]?.default;
    };
    const settings = normalizeSettings(explicitSettings((key) => scopes[key], untrustedGet));
    assert.equal(settings.model, '/models/mine');
    assert.equal(settings.localImages.outsideWorkspace, false);
    assert.equal(settings.remoteImages.enabled, false);
    assert.equal(settings.localImages.maxBytes, DEFAULT_SETTINGS.localImages.maxBytes);
    // What an untrusted workspace may still choose.
    assert.equal(settings.generation.numBeams, 1);
  });
});
