import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { chatPageHtml, makeNonce, type ChatPageInput } from '../../client/src/chat-html';
import { MAX_HISTORY_TURNS, MAX_QUESTION_LENGTH, parseWebviewMessage } from '../../client/src/chat-messages';
import { ROOT } from './manifest';

const input: ChatPageInput = {
  nonce: 'bm9uY2Utbm9uY2Utbm9uY2U=',
  cspSource: 'https://file+.vscode-resource.vscode-cdn.net',
  scriptUri: 'https://file+.vscode-resource.vscode-cdn.net/ext/media/chat.js',
  styleUri: 'https://file+.vscode-resource.vscode-cdn.net/ext/media/chat.css',
  imageSrc: 'https://file+.vscode-resource.vscode-cdn.net/work/cat.png',
  imageUri: 'file:///work/cat.png',
  imageLabel: 'cat.png',
};

function csp(html: string): string {
  const match = /<meta http-equiv="Content-Security-Policy" content="([^"]+)">/.exec(html);
  assert.ok(match, 'a CSP meta tag');
  return match[1].replace(/&#39;/g, "'");
}

describe('chat page', () => {
  it('has a strict CSP: nothing by default, scripts only with the nonce', () => {
    const policy = csp(chatPageHtml(input));
    assert.match(policy, /default-src 'none'/);
    assert.match(policy, new RegExp(`script-src 'nonce-${input.nonce.replace(/[+/=]/g, '\\$&')}'`));
    assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval/);
    assert.match(policy, new RegExp(`img-src ${input.cspSource.replace(/[.+]/g, '\\$&')}(;|$)`));
  });

  it('runs no script without the nonce, and no inline script or handler', () => {
    const html = chatPageHtml(input);
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    assert.ok(scripts.length >= 1);
    for (const [, attributes, body] of scripts) {
      assert.match(attributes, new RegExp(`nonce="${input.nonce}"`));
      assert.match(attributes, /src="/);
      assert.equal(body.trim(), '', 'no inline script');
    }
    assert.doesNotMatch(html, /\son[a-z]+=/i, 'no inline event handlers');
    assert.doesNotMatch(html, /<style\b|\sstyle=/i, 'no inline styles');
    assert.doesNotMatch(html, /javascript:/i);
  });

  it('allows a remote image only from its own origin', () => {
    const policy = csp(chatPageHtml({ ...input, imageSrc: 'https://example.com/a.png', imageUri: 'https://example.com/a.png', remoteOrigin: 'https://example.com' }));
    assert.match(policy, /img-src \S+ https:\/\/example\.com;/);
  });

  it('escapes what it shows', () => {
    const html = chatPageHtml({ ...input, imageLabel: '"><script>alert(1)</script>.png', imageUri: 'file:///a/"x".png' });
    assert.doesNotMatch(html, /<script>alert/);
    assert.match(html, /data-image-uri="file:\/\/\/a\/&quot;x&quot;\.png"/);
  });

  it('has the elements the script and the end-to-end tests use', () => {
    const html = chatPageHtml(input);
    for (const id of ['image', 'conversation', 'question', 'ask', 'stop', 'status', 'ask-form']) assert.match(html, new RegExp(`id="${id}"`), id);
  });

  it('makes a fresh 128-bit nonce', () => {
    const a = makeNonce((size) => new Uint8Array(size).fill(1));
    assert.equal(Buffer.from(a, 'base64').length, 16);
    assert.notEqual(makeNonce((size) => new Uint8Array(size).fill(2)), a);
  });

  it("has a script that keeps the conversation in the webview's state and writes text, never HTML", () => {
    const script = readFileSync(path.join(ROOT, 'media/chat.js'), 'utf8');
    assert.match(script, /vscode\.getState\(\)/);
    assert.match(script, /vscode\.setState\(/);
    assert.doesNotMatch(script, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(/);
    for (const type of ['ready', 'ask', 'cancel', 'copy']) assert.match(script, new RegExp(`type: '${type}'`), `posts ${type}`);
    for (const type of ['partial', 'answer', 'error', 'hello', 'status']) assert.match(script, new RegExp(`case '${type}'`), `handles ${type}`);
  });
});

describe('webview messages', () => {
  it('accepts what the page sends', () => {
    assert.deepEqual(parseWebviewMessage({ type: 'ready' }), { type: 'ready' });
    assert.deepEqual(parseWebviewMessage({ type: 'cancel', requestId: 'q1' }), { type: 'cancel', requestId: 'q1' });
    assert.deepEqual(parseWebviewMessage({ type: 'copy', text: 'a dog' }), { type: 'copy', text: 'a dog' });
    assert.deepEqual(
      parseWebviewMessage({ type: 'ask', requestId: 'q2', question: ' what is it? ', history: [{ question: 'a', answer: 'b', extra: 1 }] }),
      { type: 'ask', requestId: 'q2', question: 'what is it?', history: [{ question: 'a', answer: 'b' }] },
    );
  });

  it('rejects anything else', () => {
    for (const bad of [
      undefined,
      null,
      'ask',
      [],
      { type: 'run', command: 'rm' },
      { type: 'ask', requestId: 'q', question: '   ' },
      { type: 'ask', requestId: 'q', question: 'x'.repeat(MAX_QUESTION_LENGTH + 1) },
      { type: 'ask', requestId: '../etc', question: 'hi' },
      { type: 'ask', requestId: 'q', question: 7 },
      { type: 'cancel' },
      { type: 'copy', text: 5 },
    ]) {
      assert.equal(parseWebviewMessage(bad), undefined, JSON.stringify(bad));
    }
  });

  it('keeps well-formed history turns, the latest ones', () => {
    const turns = Array.from({ length: MAX_HISTORY_TURNS + 5 }, (_, i) => ({ question: `q${i}`, answer: `a${i}` }));
    const parsed = parseWebviewMessage({ type: 'ask', requestId: 'q', question: 'and?', history: [...turns, { question: 1 }, 'x'] });
    assert.equal(parsed?.type, 'ask');
    if (parsed?.type !== 'ask') return;
    assert.equal(parsed.history.length, MAX_HISTORY_TURNS);
    assert.equal(parsed.history.at(-1)?.question, `q${MAX_HISTORY_TURNS + 4}`);
  });
});
