// A zero-dependency static server for the browser example (Node built-ins only).
//
//   node examples/browser/serve.mjs [--port 8080] [--host 127.0.0.1] [--models DIR] [--no-isolation]
//
// Serves the repository root, so the page at /examples/browser/ can import ../../dist/browser.js, which fetches the
// kernels from beside itself (dist/edgellm-*.wasm) and starts its model worker from there (dist/browser-worker.js).
// --models DIR is also served at /models/, e.g. the test models: `--models ../shared/models` makes
// /models/sotu-15m-q4_0.gguf loadable by URL.
//
// Cross-origin isolation: every response carries Cross-Origin-Opener-Policy: same-origin and
// Cross-Origin-Embedder-Policy: require-corp, so the page is cross-origin isolated and has SharedArrayBuffer, which
// edgellm's threads need (the page runs the model in a worker with threads: 'auto'). --no-isolation (startServer's
// `isolation: false`) leaves them out, as a plain static host or a mobile WebView would: the page then runs the
// single-thread fallback, with the same replies, and says why. (With the headers on, a model URL on another origin
// must be served with CORS, as fetch() needs anyway, or with Cross-Origin-Resource-Policy.)
// Files are streamed (models can be large), with single Range requests supported.
//
// As a module (the browser test uses this):
//   import { startServer } from './examples/browser/serve.mjs';
//   const { url, close } = await startServer({ port: 0, mounts: { '/models/': dir } });   // port 0: a free port
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository root (two levels up from examples/browser/). */
export const REPO_ROOT = path.resolve(HERE, '../..');
/** Where the example page is, relative to the served root. */
export const PAGE_PATH = '/examples/browser/';

/** The headers that make a page cross-origin isolated (so it has SharedArrayBuffer). */
export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.ts': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.wasm': 'application/wasm', // needed for WebAssembly.compileStreaming / instantiateStreaming
  '.gguf': 'application/octet-stream',
};

/** Maps a URL path to a file under root or a mount, or null when it would leave them. */
function resolvePath(pathname, root, mounts) {
  let base = root, rest = pathname;
  for (const [prefix, dir] of mounts) {
    if (pathname.startsWith(prefix)) {
      base = dir;
      rest = pathname.slice(prefix.length - 1);
      break;
    }
  }
  if (rest.includes('\0')) return null;
  const file = path.resolve(base, '.' + path.posix.normalize('/' + rest));
  return file === base || file.startsWith(base + path.sep) ? file : null;
}

/** Parses a single `bytes=a-b` range; undefined for none (or several: then the whole file is sent), null if unsatisfiable. */
function parseRange(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header ?? '');
  if (!m || (!m[1] && !m[2])) return undefined;
  let start, end;
  if (m[1]) {
    start = Number(m[1]);
    end = m[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
  } else {
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  }
  return start > end || start >= size ? null : { start, end };
}

/**
 * Starts the server. Resolves to { server, origin, url (the example page), port, isolation, close() }.
 * isolation (default true): send ISOLATION_HEADERS with every response.
 * @param {{ port?: number, host?: string, root?: string, mounts?: Record<string, string>, isolation?: boolean, log?: (line: string) => void }} [options]
 */
export async function startServer({ port = 8080, host = '127.0.0.1', root = REPO_ROOT, mounts = {}, isolation = true, log } = {}) {
  const rootDir = path.resolve(root);
  const always = { 'Cache-Control': 'no-cache', ...(isolation ? ISOLATION_HEADERS : {}) };
  const mountList = Object.entries(mounts).map(([prefix, dir]) => [prefix.endsWith('/') ? prefix : prefix + '/', path.resolve(dir)]);
  const server = http.createServer(async (req, res) => {
    const send = (status, headers = {}, body = '') => {
      res.writeHead(status, { ...always, ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
      log?.(`${status} ${req.method} ${req.url}`);
    };
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { Allow: 'GET, HEAD' });
      let pathname;
      try {
        pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
      } catch {
        return send(400);
      }
      if (pathname === '/') return send(302, { Location: PAGE_PATH });
      let file = resolvePath(pathname, rootDir, mountList);
      if (!file) return send(404);
      let info = await stat(file).catch(() => null);
      if (info?.isDirectory()) {
        if (!pathname.endsWith('/')) return send(301, { Location: pathname + '/' });
        file = path.join(file, 'index.html');
        info = await stat(file).catch(() => null);
      }
      if (!info?.isFile()) return send(404, { 'Content-Type': 'text/plain; charset=utf-8' }, `not found: ${pathname}\n`);

      const size = info.size;
      const headers = {
        'Content-Type': TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
        'Accept-Ranges': 'bytes',
        'Last-Modified': info.mtime.toUTCString(),
      };
      const range = parseRange(req.headers.range, size);
      if (range === null) return send(416, { 'Content-Range': `bytes */${size}` });
      const { start, end } = range ?? { start: 0, end: size - 1 };
      if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
      headers['Content-Length'] = String(size === 0 ? 0 : end - start + 1);
      res.writeHead(range ? 206 : 200, { ...always, ...headers });
      log?.(`${range ? 206 : 200} ${req.method} ${req.url}`);
      if (req.method === 'HEAD' || size === 0) return res.end();
      createReadStream(file, { start, end }).on('error', (e) => res.destroy(e)).pipe(res);
    } catch (e) {
      if (!res.headersSent) send(500, { 'Content-Type': 'text/plain; charset=utf-8' }, `${e?.message ?? e}\n`);
      else res.destroy(e);
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actual = server.address().port;
  const origin = `http://${host.includes(':') ? `[${host}]` : host}:${actual}`;
  return {
    server,
    port: actual,
    origin,
    url: origin + PAGE_PATH,
    isolation,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

// Run directly: node examples/browser/serve.mjs [--port N] [--host H] [--models DIR] [--no-isolation]
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (name, fallback) => {
    const i = args.indexOf(name);
    return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
  };
  if (args.includes('--help') || args.includes('-h')) {
    console.log('usage: node examples/browser/serve.mjs [--port 8080] [--host 127.0.0.1] [--models DIR] [--no-isolation]');
    process.exit(0);
  }
  const models = opt('--models', undefined);
  const { url, origin, isolation } = await startServer({
    port: Number(opt('--port', process.env.PORT ?? 8080)),
    host: opt('--host', '127.0.0.1'),
    mounts: models ? { '/models/': models } : {},
    isolation: !args.includes('--no-isolation'),
    log: args.includes('--verbose') ? (line) => console.log(line) : undefined,
  });
  console.log(`serving ${REPO_ROOT} at ${origin}/`);
  if (models) console.log(`serving ${path.resolve(models)} at ${origin}/models/`);
  console.log(isolation ? 'cross-origin isolated (COOP/COEP): the page runs threaded' : 'no COOP/COEP (--no-isolation): the page runs single-threaded');
  console.log(`open ${url}`);
}
