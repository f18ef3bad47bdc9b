import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A web server on loopback that serves `routes` (path → PNG bytes, or a redirect) and 404 for anything else. */
export interface ImageSite {
  /** `http://127.0.0.1:<port>`. */
  base: string;
  /** Requests it has been sent, answered or not. */
  readonly requests: number;
  close(): Promise<void>;
}

export type Route = Buffer | { redirect: string } | { png: Buffer; announceLength: false };

export async function startImageSite(routes: (base: string) => Record<string, Route>): Promise<ImageSite> {
  let table: Record<string, Route> = {};
  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    const route = req.url ? table[req.url] : undefined;
    if (Buffer.isBuffer(route)) {
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': route.length });
      res.end(route);
    } else if (route && 'redirect' in route) {
      res.writeHead(302, { location: route.redirect });
      res.end();
    } else if (route) {
      // No length announced: a size limit has to be enforced while reading.
      res.writeHead(200, { 'content-type': 'image/png' });
      res.end(route.png);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  table = routes(base);
  return {
    base,
    get requests() {
      return requests;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
