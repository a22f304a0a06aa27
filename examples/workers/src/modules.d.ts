// Module types the bundlers provide: wrangler's Data rule (wrangler.toml) and workerd's `data` modules (build.mjs).
declare module '*.gguf' {
  const bytes: ArrayBuffer;
  export default bytes;
}
