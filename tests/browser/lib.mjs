// Shared set-up of the browser tests: Debian's chromium driven by playwright-core,
// headless, with nothing downloaded and no connection off the machine.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

export const CHROMIUM = process.env.CAPSTAN_CHROMIUM || '/usr/bin/chromium';

// Without the background-networking flags chromium tries Google's hosts at every start,
// which this machine's closed network refuses.
const FLAGS = [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage',
];

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
}

/// A page that records every failure a person would notice: script errors, console
/// errors, failed requests, and any request that leaves `allowed` origins.
export async function watchedPage(browser, allowed, viewport = { width: 1400, height: 1000 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  page.on('requestfailed', (r) => {
    // Navigations cancelled by the page itself (a refresh overtaking another) are not failures.
    const why = r.failure()?.errorText || '';
    if (!why.includes('ERR_ABORTED')) problems.push(`request failed: ${r.url()} ${why}`);
  });
  page.on('request', (r) => {
    const url = r.url();
    if (!allowed.some((origin) => url.startsWith(origin))) problems.push(`request off the page's origin: ${url}`);
  });
  return { context, page, problems };
}

/// Writes a screenshot into CAPSTAN_SCREENSHOT_DIR when it is set (the lead sets it to
/// docs/ to refresh the committed pictures); otherwise nothing is written.
export async function screenshot(page, name, options = {}) {
  const dir = process.env.CAPSTAN_SCREENSHOT_DIR;
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, name), ...options });
}

export function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through scripts/browser-tests.sh`);
  return value;
}
