import { UserError } from '../../engine/errors';

/**
 * A BLIP-2 server's base URL as users write it (`http://gpu-box:8000`, `…/v1`, a trailing slash), as the origin
 * and path the client appends `/v1/…` to. Only http(s), and no user or password in it: the key goes in
 * BLIP2_API_KEY (or VS Code's secret storage), never in a setting anyone can read.
 */
export function serverUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    throw new UserError(`"${text}" is not a server URL.`, 'Give one such as http://127.0.0.1:8000.');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UserError(`The server URL must start with http:// or https:// (got ${url.protocol}//).`, 'Give one such as http://127.0.0.1:8000.');
  }
  if (url.username || url.password) {
    throw new UserError('The server URL must not hold a user name or password.', 'Put the API key in BLIP2_API_KEY (in VS Code: "BLIP-2: Set Server API Key…").');
  }
  if (url.search || url.hash) throw new UserError('The server URL must not have a query or a fragment.', 'Give one such as http://127.0.0.1:8000.');
  const path = url.pathname.replace(/\/+$/, '').replace(/\/v1$/, '');
  return `${url.origin}${path}`;
}

/** Whether a host name or address is this machine's loopback (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127(?:\.\d{1,3}){3}$/.test(h) || h === '::ffff:127.0.0.1';
}
