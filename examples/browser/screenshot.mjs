// Takes the README's picture of the chat page (docs/browser-chat.png): a real conversation of a few turns with a test
// model, on a phone-sized screen in headless Chromium.
//
//   npm run build    # the page imports dist/browser.js
//   node examples/browser/screenshot.mjs [--model ../shared/models/sotu-15m-q4_0.gguf] [--out docs/browser-chat.png]
//
// Needs Chromium (Debian's /usr/bin/chromium, or set CHROMIUM) and the playwright-core devDependency. Greedy replies,
// so the picture only changes when the model, the page or edgellm's output does.
import path from 'node:path';
import { statSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { REPO_ROOT, startServer } from './serve.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const modelFile = path.resolve(opt('--model', path.join(REPO_ROOT, '../shared/models/sotu-15m-q4_0.gguf')));
const out = path.resolve(opt('--out', path.join(REPO_ROOT, 'docs/browser-chat.png')));
const maxTokens = opt('--max-tokens', '24');
const turns = [
  'What is the state of the Union?',
  'What should the Congress do this year?',
  'Thank you, Mr. President. Any last words?',
];

const server = await startServer({ port: 0, mounts: { '/models/': path.dirname(modelFile) } });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  // A phone: 390×844 CSS pixels (an iPhone 12–15), at twice the pixels so the text is crisp in the README.
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, colorScheme: 'light' });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.goto(server.url);
  await page.fill('#max-tokens', maxTokens);
  await page.fill('#url', `/models/${path.basename(modelFile)}`);
  await page.click('#load');
  await page.waitForFunction(() => window.edgellmLoaded || window.edgellmError, undefined, { timeout: 60_000 });
  const failed = await page.evaluate(() => window.edgellmError);
  if (failed) throw new Error(failed);
  for (const [i, text] of turns.entries()) {
    await page.fill('#input', text);
    await page.tap('#send');
    await page.waitForFunction((n) => window.edgellmTurns.length > n || window.edgellmError, i, { timeout: 60_000 });
  }
  // The message box holds a half-typed next message, as it would mid-conversation.
  await page.fill('#input', 'And the');
  await page.evaluate(() => document.activeElement instanceof HTMLElement && document.activeElement.blur());
  await page.screenshot({ path: out });
  console.log(`${path.relative(process.cwd(), out)}: ${(statSync(out).size / 1024).toFixed(0)} KB`);
} finally {
  await browser.close();
  await server.close();
}
