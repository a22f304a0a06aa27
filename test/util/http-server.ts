/**
 * A real HTTP server on loopback for the download tests: it serves files with or without Range support, with strong
 * ETags (and If-Range), can cut a connection mid-body, force an error status, and answers the few hub endpoints that
 * `hf:` names use, so no test needs the network or a mock of fetch.
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ServedFile {
  /** The URL path, e.g. '/m/sotu.gguf'; a hub file is served under '/OWNER/REPO/resolve/main/FILE'. */
  path: string;
  file?: string;
  bytes?: Uint8Array;
}

export interface ServerOptions {
  /** Honour Range (206, Accept-Ranges: bytes); default true. false: always 200 with the full body, no Accept-Ranges. */
  ranges?: boolean;
  /** Send a strong ETag (from size+mtime of a file, a hash of bytes) and honour If-Range; default true. */
  etag?: boolean;
  /** Send Content-Length; default true. false: a chunked body, so the client cannot know the size up front. */
  contentLength?: boolean;
  /** For the next `cutRequests` file bodies, destroy the socket after this many body bytes. */
  cutAfterBytes?: number;
  /** Default 1 when cutAfterBytes is set; counts down with each cut. */
  cutRequests?: number;
  /** A cut stalls instead: the bytes stop but the connection stays open (a dead mobile link), until the client gives up. */
  stallCuts?: boolean;
  /** Force a status (404/416/500…) for a URL path; the body is a short text. */
  status?: Record<string, number>;
  /** Every request needs `Authorization: Bearer <requireToken>`, else 401 (as the hub answers for gated repos). */
  requireToken?: string;
  /**
   * Last word on a file response's status and headers before they are sent, for servers that lie (a wrong
   * Content-Range, a changed ETag). The body sent is still the one the request asked for.
   */
  alter?: (res: { status: number; headers: Record<string, string> }, req: { method: string; path: string; range?: string }) => void;
}

export interface LogEntry {
  method: string;
  path: string;
  range?: string;
  status: number;
  /** Body bytes actually written (less than asked when the connection was cut or the client went away). */
  bodyBytes: number;
  authorization?: string;
}

export interface TestServer {
  url: string;
  log: LogEntry[];
  serve(f: ServedFile): void;
  set(opts: Partial<ServerOptions>): void;
  close(): Promise<void>;
  /** Body bytes written for requests whose path is `path` (all requests when absent). */
  bodyBytes(path?: string): number;
}

interface Entry {
  size: number;
  etag: string;
  body(start: number, end: number): AsyncIterable<Uint8Array>;
}

const CHUNK = 64 * 1024;

function entryOf(f: ServedFile): Entry {
  if (f.bytes) {
    const bytes = f.bytes;
    const hash = createHash('sha1').update(bytes).digest('hex').slice(0, 20);
    return {
      size: bytes.length,
      etag: `"${hash}"`,
      async *body(start, end) {
        for (let at = start; at < end; at += CHUNK) yield bytes.subarray(at, Math.min(end, at + CHUNK));
      },
    };
  }
  if (f.file) {
    const file = f.file;
    const st = statSync(file);
    return {
      size: st.size,
      etag: `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`,
      body: (start, end) =>
        end > start ? createReadStream(file, { start, end: end - 1, highWaterMark: CHUNK }) : (async function* () {})(),
    };
  }
  throw new Error(`served file ${f.path}: give file or bytes`);
}

/** One `bytes=a-b`, `bytes=a-` or `bytes=-n` range, clamped to the size; undefined when absent or several. */
function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const m = header?.match(/^bytes=(\d*)-(\d*)$/);
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Math.min(Number(m[2]), size);
    return n === 0 ? 'unsatisfiable' : { start: size - n, end: size };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size : Math.min(Number(m[2]) + 1, size);
  if (start >= size || end <= start) return 'unsatisfiable';
  return { start, end };
}

export async function startServer(files: ServedFile[], opts: ServerOptions = {}): Promise<TestServer> {
  const entries = new Map<string, Entry>();
  let options: ServerOptions = {};
  /** Merges `next` into the options; a cutAfterBytes given without cutRequests cuts one request. */
  const set = (next: Partial<ServerOptions>) => {
    options = { ...options, ...next };
    if (next.cutAfterBytes !== undefined && next.cutRequests === undefined) options.cutRequests = 1;
  };
  set(opts);
  const log: LogEntry[] = [];
  const sockets = new Set<Socket>();

  const serve = (f: ServedFile) => void entries.set(f.path, entryOf(f));
  for (const f of files) serve(f);

  /** The hub's model info: `siblings[].rfilename` for every file served under /OWNER/REPO/resolve/main/. */
  const modelInfo = (repo: string) => {
    const prefix = `/${repo}/resolve/main/`;
    const names = [...entries.keys()].filter((p) => p.startsWith(prefix)).map((p) => p.slice(prefix.length));
    return names.length ? { id: repo, modelId: repo, siblings: names.map((rfilename) => ({ rfilename })) } : undefined;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const method = req.method ?? 'GET';
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const range = req.headers.range;
    const record: LogEntry = { method, path, status: 0, bodyBytes: 0 };
    if (range !== undefined) record.range = range;
    if (req.headers.authorization !== undefined) record.authorization = req.headers.authorization;
    log.push(record);

    const text = (status: number, body: string, headers: Record<string, string> = {}) => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'text/plain', ...headers });
      record.bodyBytes = Buffer.byteLength(body);
      res.end(body);
    };

    if (options.requireToken !== undefined && req.headers.authorization !== `Bearer ${options.requireToken}`) {
      return text(401, 'Invalid credentials in Authorization header');
    }
    const forced = options.status?.[path];
    if (forced !== undefined) return text(forced, `forced status ${forced}`);

    const api = path.match(/^\/api\/models\/([^/]+\/[^/]+?)(?:\/revision\/main)?$/);
    if (api) {
      const info = modelInfo(api[1]);
      if (!info) return text(404, JSON.stringify({ error: 'Repository not found' }), { 'content-type': 'application/json' });
      return text(200, JSON.stringify(info), { 'content-type': 'application/json' });
    }

    const entry = entries.get(path);
    if (!entry) return text(404, 'not found');
    if (method !== 'GET') return text(405, 'method not allowed');

    const ranges = options.ranges ?? true;
    const etag = options.etag ?? true;
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (etag) headers.etag = entry.etag;
    if (ranges) headers['accept-ranges'] = 'bytes';

    let start = 0;
    let end = entry.size;
    let status = 200;
    const ifRange = req.headers['if-range'];
    // If-Range with another validator means "the file changed: send all of it", as RFC 9110 says.
    const rangeApplies = ranges && range !== undefined && (ifRange === undefined || (etag && ifRange === entry.etag));
    if (rangeApplies) {
      const r = parseRange(range, entry.size);
      if (r === 'unsatisfiable') return text(416, 'range not satisfiable', { 'content-range': `bytes */${entry.size}` });
      if (r) {
        ({ start, end } = r);
        status = 206;
        headers['content-range'] = `bytes ${start}-${end - 1}/${entry.size}`;
      }
    }
    if (options.contentLength ?? true) headers['content-length'] = String(end - start);
    const out = { status, headers };
    options.alter?.(out, { method, path, range });
    record.status = out.status;
    res.writeHead(out.status, out.headers);

    let cut = Infinity;
    const stall = options.stallCuts === true;
    if (options.cutAfterBytes !== undefined && (options.cutRequests ?? 0) > 0) {
      cut = options.cutAfterBytes;
      options = { ...options, cutRequests: options.cutRequests! - 1 };
    }
    for await (const chunk of entry.body(start, end)) {
      if (res.destroyed) return;
      const part = record.bodyBytes + chunk.length > cut ? chunk.subarray(0, cut - record.bodyBytes) : chunk;
      record.bodyBytes += part.length;
      // Waiting for each write to be flushed means a cut delivers exactly `cut` bytes, not whatever was buffered.
      if (part.length) await new Promise<void>((resolve) => res.write(part, () => resolve()));
      if (record.bodyBytes >= cut) {
        if (stall) await once(res, 'close');
        else res.socket?.destroy();
        return;
      }
    }
    res.end();
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (!res.headersSent) res.writeHead(500).end(String(err));
      else res.destroy();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    log,
    serve,
    set,
    bodyBytes: (path) => log.filter((e) => path === undefined || e.path === path).reduce((n, e) => n + e.bodyBytes, 0),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
