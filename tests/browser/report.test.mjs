// A simulation report opened from a file, as from an e-mail attachment: every chart
// drawn, nothing fetched.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { pathToFileURL } from 'node:url';
import { launch, watchedPage, screenshot, required } from './lib.mjs';

const report = required('CAPSTAN_REPORT');
const url = pathToFileURL(report).href;
let browser;

before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('the report opens from a file and draws every chart, one panel per policy', async () => {
  const { context, page, problems } = await watchedPage(browser, [url]);
  await page.goto(url);
  const charts = await page.locator('svg.chart').evaluateAll((svgs) => svgs.map((svg) => {
    const box = svg.getBoundingClientRect();
    const paths = [...svg.querySelectorAll('path.series')];
    return {
      width: box.width,
      height: box.height,
      declared: Number(svg.dataset.series),
      drawn: paths.filter((p) => (p.getAttribute('d') || '').length > 10 && p.getTotalLength() > 0).length,
    };
  }));
  assert.ok(charts.length >= 2, `at least two charts, got ${charts.length}`);
  for (const [i, c] of charts.entries()) {
    assert.ok(c.width > 100 && c.height > 50, `chart ${i} is laid out: ${JSON.stringify(c)}`);
    assert.ok(c.drawn > 0 && c.drawn === c.declared, `chart ${i} draws all its series: ${JSON.stringify(c)}`);
  }
  const policies = (process.env.CAPSTAN_REPORT_POLICIES || 'reactive,forecast').split(',');
  const text = await page.textContent('body');
  for (const p of policies) assert.ok(text.includes(p), `the report names ${p}`);
  await screenshot(page, process.env.CAPSTAN_REPORT_SCREENSHOT || 'sdsc-report.png', { fullPage: true });
  assert.deepEqual(problems, []);
  await context.close();
});
