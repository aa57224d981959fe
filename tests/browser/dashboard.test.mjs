// The dashboard of a running `capstan demo`, as a newcomer meets it: sign in with the
// printed token, see the pools, open one, watch its chart move, read its plan.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, watchedPage, screenshot, required } from './lib.mjs';

const base = required('CAPSTAN_DEMO_URL').replace(/\/$/, '');
const token = required('CAPSTAN_DEMO_TOKEN');
const origin = new URL(base).origin;
let browser;

before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

async function signIn(page) {
  await page.goto(`${base}/`);
  assert.match(new URL(page.url()).pathname, /^\/signin/, 'an anonymous visit is sent to the sign-in page');
  await page.fill('#signin input[name=token]', token);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/signin')), page.click('#signin [type=submit]')]);
}

test('a wrong token is refused with a message and no session', async () => {
  const { context, page, problems } = await watchedPage(browser, [origin]);
  await page.goto(`${base}/signin`);
  await page.fill('#signin input[name=token]', 'cap_nobody_0000');
  await page.click('#signin [type=submit]');
  await page.waitForSelector('#signin-error');
  assert.notEqual((await page.textContent('#signin-error')).trim(), '');
  const cookies = await context.cookies();
  assert.equal(cookies.length, 0, `no cookie after a failed sign-in, got ${JSON.stringify(cookies)}`);
  await page.goto(`${base}/`);
  assert.match(new URL(page.url()).pathname, /^\/signin/);
  // The failed attempt is answered with an error status, which chromium logs.
  assert.deepEqual(problems.filter((p) => !p.includes('status of 401')), []);
  await context.close();
});

test('sign in, see the pools, open one: its chart draws points that change over time', async () => {
  const { context, page, problems } = await watchedPage(browser, [origin]);
  await signIn(page);

  const cookie = (await context.cookies()).find((c) => c.httpOnly);
  assert.ok(cookie, 'the session cookie is HttpOnly');
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie), '', 'scripts cannot read the session');

  assert.notEqual((await page.textContent('#whoami')).trim(), '');
  const rows = page.locator('#pools tr[data-pool-id]');
  await rows.first().waitFor();
  const ids = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.poolId));
  assert.ok(ids.includes('ci/linux-large'), `the README's example pool is listed: ${ids}`);

  await Promise.all([
    page.waitForURL((u) => u.pathname.startsWith('/pools/')),
    page.click('#pools tr[data-pool-id="ci/linux-large"] a.pool-link'),
  ]);
  const chart = page.locator('#chart');
  await page.waitForFunction(() => Number(document.querySelector('#chart')?.dataset.points) > 0, null, { timeout: 20_000 });
  assert.ok(await page.locator('#chart canvas').count() > 0, 'uPlot drew on a canvas');
  const first = Number(await chart.getAttribute('data-last-at'));
  assert.ok(first > 0, 'data-last-at holds the newest point');
  // The demo feeds samples every few seconds and the page refreshes itself: a newer
  // point arrives without a reload.
  await page.waitForFunction((t) => Number(document.querySelector('#chart').dataset.lastAt) > t, first, { timeout: 45_000 });

  const plan = (await page.textContent('#plan-report')).trim();
  assert.match(plan, /target/i, `the plan report says what the target is: ${plan}`);

  await page.locator('#workers tr[data-worker-id]').first().waitFor({ timeout: 60_000 });
  // Capacity is drawn, not only listed: once machines are ready the chart's canvas holds
  // the green fill of the ready-slot stack (a lone point between empty buckets fills
  // nothing, so this fails if the stack is not joined up). The launch marks' opaque
  // green triangles are not counted.
  const fillPixels = () => page.evaluate(() => {
    const canvas = document.querySelector('#chart canvas');
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let green = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      const mark = a === 255 && Math.abs(r - 0x2b) < 10 && Math.abs(g - 0x8a) < 10 && Math.abs(b - 0x3e) < 10;
      if (a >= 100 && !mark && g > r + 30 && g > b + 30) green++;
    }
    return green;
  });
  let filled = 0;
  for (const deadline = Date.now() + 180_000; Date.now() < deadline; await page.waitForTimeout(2000)) {
    filled = await fillPixels();
    if (filled > 500) break;
  }
  assert.ok(filled > 500, `the ready-slot stack is drawn: ${filled} filled pixels; workers: ${await page.textContent('#workers')}`);
  await page.click('button[data-window="1d"]');
  await page.waitForFunction(() => Number(document.querySelector('#chart').dataset.points) > 0);
  await page.click('button[data-window="1h"]');
  await page.waitForFunction(() => Number(document.querySelector('#chart').dataset.points) > 0);
  // For the committed picture, let the demo run a while so the chart holds its
  // capacity too (CAPSTAN_SCREENSHOT_WAIT_S, default 0).
  await page.waitForTimeout(1500 + 1000 * Number(process.env.CAPSTAN_SCREENSHOT_WAIT_S || 0));
  await screenshot(page, 'dashboard-pool.png', { fullPage: true });
  assert.deepEqual(problems, []);
  await context.close();
});
