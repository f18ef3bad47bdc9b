// The image chat page. Everything it runs comes from media/ with the page's nonce; nothing inline runs, and the
// values the script needs travel as data attributes.

export interface ChatPageInput {
  /** Fresh for every page load. */
  nonce: string;
  /** `webview.cspSource`. */
  cspSource: string;
  scriptUri: string;
  styleUri: string;
  /** What the `<img>` loads: a webview URI for a file, or the remote URL itself. */
  imageSrc: string;
  /** The image as the extension names it (a file: or http(s): URI); kept in the page's state. */
  imageUri: string;
  /** The file name, for the title and the image's description. */
  imageLabel: string;
  /** A remote image's origin (`https://example.com`), allowed in img-src; undefined for local files. */
  remoteOrigin?: string;
}

export function chatPageHtml(input: ChatPageInput): string {
  const nonce = attribute(input.nonce);
  const imgSources = [input.cspSource, ...(input.remoteOrigin ? [input.remoteOrigin] : [])].join(' ');
  const csp = [
    "default-src 'none'",
    `img-src ${imgSources}`,
    `style-src ${input.cspSource}`,
    `font-src ${input.cspSource}`,
    `script-src 'nonce-${nonce}'`,
  ].join('; ');
  const label = text(input.imageLabel);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${attribute(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${attribute(input.styleUri)}">
<title>Chat about ${label}</title>
</head>
<body data-image-uri="${attribute(input.imageUri)}" data-image-label="${attribute(input.imageLabel)}">
<header class="image">
<img id="image" src="${attribute(input.imageSrc)}" alt="The image this chat is about: ${attribute(input.imageLabel)}">
<p class="caption">${label}</p>
</header>
<main id="conversation" aria-live="polite" aria-label="Conversation about ${attribute(input.imageLabel)}"></main>
<p id="status" class="status" role="status"></p>
<form id="ask-form" class="ask">
<label for="question" class="visually-hidden">Question about the image</label>
<textarea id="question" rows="2" maxlength="2000" placeholder="Ask about the image (Enter to send, Shift+Enter for a new line)"></textarea>
<div class="buttons">
<button id="ask" type="submit">Ask</button>
<button id="stop" type="button" hidden>Stop</button>
<button id="clear" type="button" class="secondary">New Chat</button>
</div>
</form>
<script nonce="${nonce}" src="${attribute(input.scriptUri)}"></script>
</body>
</html>
`;
}

function text(value: string): string {
  return value.replace(/[&<>]/g, (c) => ENTITIES[c]);
}

function attribute(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ENTITIES[c]);
}

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** 128 random bits, base64 (what CSP nonces are usually made of); `random` is injectable for tests. */
export function makeNonce(random: (size: number) => Uint8Array): string {
  return Buffer.from(random(16)).toString('base64');
}
