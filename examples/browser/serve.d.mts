// Types for serve.mjs (the zero-dependency static server of the browser example), for TypeScript importers such as
// test/browser.test.ts.
import type { Server } from 'node:http';

/** The repository root, which the server serves by default. */
export declare const REPO_ROOT: string;
/** The example page's path under the served root: '/examples/browser/'. */
export declare const PAGE_PATH: string;
/** Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp. */
export declare const ISOLATION_HEADERS: Record<string, string>;

export interface ServeOptions {
  /** default 8080; 0 picks a free port */
  port?: number;
  /** default '127.0.0.1' */
  host?: string;
  /** directory served at / (default: the repository root) */
  root?: string;
  /** extra directories by URL prefix, e.g. { '/models/': '../shared/models' } */
  mounts?: Record<string, string>;
  /** send ISOLATION_HEADERS (COOP/COEP) with every response, so the page is cross-origin isolated (default true) */
  isolation?: boolean;
  /** called with one line per request */
  log?: (line: string) => void;
}

export interface RunningServer {
  server: Server;
  port: number;
  /** e.g. 'http://127.0.0.1:8080' */
  origin: string;
  /** the example page: origin + PAGE_PATH */
  url: string;
  /** whether the COOP/COEP headers are sent */
  isolation: boolean;
  close(): Promise<void>;
}

export declare function startServer(options?: ServeOptions): Promise<RunningServer>;
