// Browser tests of the console (/ui/): Debian's Chromium driven by playwright-core, against the
// real `outbox-relay` binary (`migrate`, `apply`, `run`) on a real Postgres database of its own and
// a receiver in this process. Run by tests/console/run.sh (and .ci/run).
//
// Environment: DATABASE_URL (an admin URL: a database is created and dropped), RELAY_BIN (the
// binary), CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (default target/console-screenshots).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdirSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const ADMIN_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const RELAY_BIN = resolve(process.env.RELAY_BIN || '../../target/debug/outbox-relay');
const SHOTS = resolve(process.env.SCREENSHOTS || '../../target/console-screenshots');
const TOKEN = 'console-admin-token-Zq81';
// Secrets the pages must never show.
const SIGNING_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const PASSWORD = 'pw-s3cret-console';
const API_KEY = 'key-s3cret-console';
const SECRETS = [SIGNING_SECRET, PASSWORD, API_KEY, TOKEN];

const dbName = `outbox_console_${process.pid}_${Date.now() % 100000}`;
const dbUrl = ADMIN_URL.replace(/\/[^/?]*(\?|$)/, `/${dbName}$1`);
let relay, receiver, browser, page, base;
const received = [];
const receiverState = { failing: true };
const pagesSeen = [];
const scriptProblems = [];

const sql = (query, url = dbUrl) =>
  execFileSync('psql', [url, '-qAtX', '-v', 'ON_ERROR_STOP=1', '-c', query], { encoding: 'utf8' }).trim();
const count = (query) => Number(sql(query));

async function waitFor(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
  });
}

function startReceiver() {
  return new Promise((ok) => {
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        received.push({ method: req.method, url: req.url, headers: req.headers, body });
        if (req.url.startsWith('/fail') && receiverState.failing) {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end('receiver is down <b>for maintenance</b>');
        } else {
          res.writeHead(200, { 'content-type': 'application/json', 'x-receipt': `r-${received.length}` });
          res.end('{"accepted": "by the test receiver"}');
        }
      });
    });
    server.listen(0, '127.0.0.1', () => ok(server));
  });
}

function run(args, env = {}) {
  return execFileSync(RELAY_BIN, args, { env: { ...process.env, DATABASE_URL: dbUrl, ...env }, encoding: 'utf8' });
}

/// Loads a console page, remembers its HTML (for the secrets check) and screenshots it.
async function visit(path, shot) {
  const response = await page.goto(base + path);
  await remember(shot);
  return response;
}

async function remember(shot) {
  pagesSeen.push({ url: page.url(), html: await page.content() });
  if (shot) await page.screenshot({ path: join(SHOTS, `${shot}.png`), fullPage: true });
}

const formValue = async (selector) => page.locator(selector).inputValue();

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  sql(`CREATE DATABASE ${dbName}`, ADMIN_URL);
  run(['migrate']);
  receiver = await startReceiver();
  const hook = `http://127.0.0.1:${receiver.address().port}`;
  const dir = mkdtempSync(join(tmpdir(), 'outbox-console-'));
  const file = join(dir, 'hooks.toml');
  writeFileSync(file, `
[[webhook]]
name = "shop"
contact = "it@shop.example"
events = ["order.*"]
url = "${hook}/shop/{{ entity_id }}"
headers = { "X-Api-Key" = "${API_KEY}", "X-Shop" = "{{ event.metadata.shop }}" }
[webhook.auth]
basic = { username = "relay", password = "${PASSWORD}" }
[webhook.signature]
secrets = ["${SIGNING_SECRET}"]

[[webhook]]
name = "failing"
events = ["order.*"]
url = "${hook}/fail/{{ entity_id }}"
max_attempts = 1
`);
  run(['apply', file]);
  // A row written with SQL whose filter does not compile: the relay marks it invalid.
  sql(`INSERT INTO outbox.webhooks (name, events, url, filter) VALUES ('broken', '{order.*}', '${hook}/broken', 'event.data.(')`);

  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  relay = spawn(RELAY_BIN, ['run'], {
    env: {
      ...process.env, DATABASE_URL: dbUrl, OUTBOX_LISTEN: `127.0.0.1:${port}`,
      OUTBOX_ADMIN_TOKEN: TOKEN, OUTBOX_POLL_INTERVAL: '100ms',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitFor('the relay to answer', async () => {
    try { return (await fetch(`${base}/readyz`)).ok; } catch { return false; }
  });

  // Event data is attacker-controlled: markup and a closing script tag must stay text.
  const hostile = JSON.stringify({
    id: 1, note: '<img src=x onerror=window.__xss=1>', tail: '</script><script>window.__xss=2</script>',
  }).replace(/'/g, "''");
  sql(`SELECT outbox.emit('order.created', 'order', '1', '${hostile}'::jsonb, '{"shop": "nl"}'::jsonb)`);
  for (const id of [2, 3]) {
    sql(`SELECT outbox.emit('order.created', 'order', '${id}', '{"id": ${id}, "total": ${id * 10}}'::jsonb, '{"shop": "de"}'::jsonb)`);
  }
  await waitFor('shop deliveries to succeed and failing ones to die', () =>
    count("SELECT count(*) FROM outbox.delivery_log WHERE webhook = 'shop' AND status = 'succeeded'") === 3 &&
    count("SELECT count(*) FROM outbox.delivery_log WHERE webhook = 'failing' AND status = 'dead'") === 3);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (e) => scriptProblems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') scriptProblems.push(`console: ${m.text()}`); });
  page.on('dialog', (d) => d.accept());
});

after(async () => {
  await browser?.close();
  relay?.kill('SIGTERM');
  await new Promise((r) => (relay ? relay.once('exit', r) : r()));
  receiver?.close();
  try { sql(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`, ADMIN_URL); } catch { /* left for the next run */ }
});

test('sign-in: a wrong token is refused, the admin token lets in', async () => {
  await visit('/ui/');
  assert.match(page.url(), /\/ui\/login$/, 'an unsigned visitor is sent to sign in');
  await page.getByLabel('Admin token').fill('not-the-token');
  const refused = await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in' }).click()]);
  assert.equal(refused[0].status(), 401);
  assert.match(await page.textContent('body'), /not the admin token/);
  await remember('login');
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === 'outbox_console');
  assert.ok(session.httpOnly, 'the session cookie is HttpOnly');
  assert.equal(session.sameSite, 'Strict');

  await page.getByLabel('Admin token').fill(TOKEN);
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in' }).click()]);
  assert.match(page.url(), /\/ui\/$/);
  assert.match(await page.textContent('h1'), /Overview/);
});

test('every page answers with the CSP and no-store', async () => {
  const response = await visit('/ui/webhooks');
  const headers = response.headers();
  assert.equal(headers['content-security-policy'], "default-src 'self'");
  assert.equal(headers['cache-control'], 'no-store');
});

test('the overview shows the figures the database holds', async () => {
  await visit('/ui/', 'overview');
  for (const status of ['pending', 'in_flight', 'succeeded', 'dead', 'cancelled']) {
    const shown = Number(await page.textContent(`#queue [data-status="${status}"] .value`));
    const stored = count(`SELECT count(*) FROM outbox.delivery_log WHERE status = '${status}'`);
    assert.equal(shown, stored, status);
  }
  // The failing webhook comes first, with its failed attempts of the last hour.
  const first = page.locator('#webhook-hour tbody tr').first();
  const failed = count("SELECT count(*) FROM outbox.attempts a JOIN outbox.delivery_log d ON d.id = a.delivery_id WHERE d.webhook = 'failing' AND a.outcome <> 'success'");
  assert.ok(['failing', 'broken'].includes(await first.getAttribute('data-webhook')));
  const row = page.locator('#webhook-hour tr[data-webhook="failing"] td');
  assert.equal(Number(await row.nth(3).textContent()), failed);
});

test('the webhook list shows a row written with SQL that is invalid, with its error', async () => {
  await visit('/ui/webhooks', 'webhooks');
  const row = page.locator('tr[data-webhook="broken"]');
  assert.match(await row.textContent(), /invalid/);
  const error = sql("SELECT error FROM outbox.webhooks WHERE name = 'broken'");
  assert.match(error, /filter/);
  assert.equal((await row.locator('[data-error]').textContent()).trim(), error);
});

test('the queue filters by status and webhook', async () => {
  await visit('/ui/deliveries');
  await page.selectOption('#status', 'dead');
  await page.selectOption('#webhook', 'failing');
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Filter' }).click()]);
  await remember('deliveries');
  const rows = page.locator('#rows tr[data-id]');
  assert.equal(await rows.count(), count("SELECT count(*) FROM outbox.delivery_log WHERE webhook = 'failing' AND status = 'dead'"));
  for (const status of await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.status))) assert.equal(status, 'dead');
  assert.ok((await page.textContent('#rows')).includes('failing'));
  assert.ok(!(await page.textContent('#rows')).includes('shop'));
});

test('a delivery shows its event as text and every attempt with its response', async () => {
  const id = sql("SELECT id FROM outbox.delivery_log WHERE webhook = 'shop' AND entity_id = '1'");
  await visit(`/ui/deliveries/${id}`, 'delivery');
  const data = await page.textContent('#event-data');
  assert.ok(data.includes('<img src=x onerror=window.__xss=1>'), data);
  assert.ok(data.includes('</script><script>window.__xss=2</script>'), data);
  assert.equal(await page.locator('#event-data img, img[src="x"], script:not([src])').count(), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined, 'no script of the event ran');
  const attempt = page.locator('.attempt[data-attempt="1"]');
  assert.match(await attempt.textContent(), /HTTP 200/);
  assert.match(await attempt.locator('.response').textContent(), /by the test receiver/);
  // The request as it was sent (stored with the attempt), with its secrets hidden: the one the
  // receiver got, and its response's headers.
  assert.match(await attempt.locator('summary').textContent(), /Request \(as sent\)/);
  const request = await attempt.locator('.request').textContent();
  const got = received.find((r) => r.url === '/shop/1' && r.headers['webhook-attempt'] === '1');
  assert.ok(got, 'the receiver got the request');
  assert.match(request, /POST http:\/\/127\.0\.0\.1:\d+\/shop\/1/);
  assert.match(request, /webhook-signature: \*\*\*/);
  assert.match(request, /authorization: \*\*\*/);
  assert.match(request, /X-Api-Key: \*\*\*/i);
  assert.ok(request.includes(`webhook-id: ${got.headers['webhook-id']}`), request);
  assert.ok(request.includes(`webhook-timestamp: ${got.headers['webhook-timestamp']}`), request);
  assert.ok(request.includes('window.__xss=1'), 'the body as sent, as text');
  assert.match(await attempt.locator('.response-headers').textContent(), /x-receipt: r-\d+/);
  assert.equal(await page.locator('text=rendered again').count(), 0);

  // An attempt recorded before requests were stored: rendered again, and labelled so.
  sql(`UPDATE outbox.attempts SET request = NULL WHERE delivery_id = ${id}`);
  await visit(`/ui/deliveries/${id}`);
  const old = page.locator('.attempt[data-attempt="1"]');
  assert.match(await old.locator('summary').textContent(), /rendered again/);
  assert.match(await old.locator('.request').textContent(), /POST http:\/\/127\.0\.0\.1:\d+\/shop\/1/);

  const deadId = sql("SELECT id FROM outbox.delivery_log WHERE webhook = 'failing' AND entity_id = '1'");
  await visit(`/ui/deliveries/${deadId}`);
  const response = await page.textContent('.attempt[data-attempt="1"] .response');
  assert.equal(response.trim(), 'receiver is down <b>for maintenance</b>', 'a response body is text too');
});

test('retry of a dead delivery, then of the filtered set after its count', async () => {
  receiverState.failing = false;
  const one = sql("SELECT id FROM outbox.delivery_log WHERE webhook = 'failing' AND entity_id = '1'");
  await visit(`/ui/deliveries/${one}`);
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Retry', exact: true }).click()]);
  await waitFor('the retried delivery to succeed', () =>
    sql(`SELECT status FROM outbox.delivery_log WHERE id = ${one}`) === 'succeeded');

  await visit('/ui/deliveries?status=dead&webhook=failing');
  await Promise.all([page.waitForNavigation(), page.click('#bulk-retry')]);
  await remember('retry');
  const dead = count("SELECT count(*) FROM outbox.delivery_log WHERE webhook = 'failing' AND status = 'dead'");
  assert.equal(dead, 2);
  assert.match(await page.textContent('#bulk-count'), /^2 dead deliveries match for webhook failing/);
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Retry 2 deliveries' }).click()]);
  assert.match(await page.textContent('.flash'), /Re-queued 2 deliveries/);
  await waitFor('the re-queued set to succeed', () =>
    count("SELECT count(*) FROM outbox.delivery_log WHERE webhook = 'failing' AND status = 'succeeded'") === 3);
});

test('pause holds new deliveries, resume sends them', async () => {
  await visit('/ui/webhooks/shop');
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Pause' }).click()]);
  assert.equal(sql("SELECT active FROM outbox.webhooks WHERE name = 'shop'"), 'f');
  assert.match(await page.textContent('h1'), /paused/);
  sql(`SELECT outbox.emit('order.updated', 'order', '4', '{"id": 4}'::jsonb, '{"shop": "nl"}'::jsonb)`);
  await waitFor('the paused webhook to queue the event', () =>
    sql("SELECT status FROM outbox.delivery_log WHERE webhook = 'shop' AND entity_id = '4'") === 'pending');
  // The unpaused webhook got the same event meanwhile; the paused one still holds it.
  await waitFor('the other webhook to deliver it', () =>
    sql("SELECT status FROM outbox.delivery_log WHERE webhook = 'failing' AND entity_id = '4'") === 'succeeded');
  assert.equal(sql("SELECT status FROM outbox.delivery_log WHERE webhook = 'shop' AND entity_id = '4'"), 'pending');
  assert.ok(!received.some((r) => r.url === '/shop/4'));

  await visit('/ui/webhooks/shop');
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Resume' }).click()]);
  assert.equal(sql("SELECT active FROM outbox.webhooks WHERE name = 'shop'"), 't');
  await waitFor('the held delivery to be sent', () =>
    sql("SELECT status FROM outbox.delivery_log WHERE webhook = 'shop' AND entity_id = '4'") === 'succeeded')
    .catch((e) => {
      throw new Error(`${e.message}: ${sql("SELECT row_to_json(d)::text FROM outbox.deliveries d WHERE entity_id = '4'")}`);
    });
  assert.ok(received.some((r) => r.url === '/shop/4'));
});

test('the pending deliveries of a filtered queue are cancelled after their count', async () => {
  sql("UPDATE outbox.webhooks SET active = false WHERE name = 'failing'");
  for (const id of [6, 7]) sql(`SELECT outbox.emit('order.created', 'order', '${id}', '{"id": ${id}}'::jsonb, '{"shop": "nl"}'::jsonb)`);
  await waitFor('the paused webhook to queue both', () =>
    count("SELECT count(*) FROM outbox.deliveries WHERE webhook = 'failing' AND status = 'pending'") === 2);
  await visit('/ui/deliveries?status=pending&webhook=failing');
  await Promise.all([page.waitForNavigation(), page.click('#bulk-cancel')]);
  assert.match(await page.textContent('#bulk-count'), /^2 pending deliveries match for webhook failing/);
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Cancel 2 deliveries' }).click()]);
  assert.match(await page.textContent('.flash'), /Cancelled 2 deliveries/);
  assert.equal(count("SELECT count(*) FROM outbox.delivery_log WHERE webhook = 'failing' AND status = 'cancelled'"), 2);
  sql("UPDATE outbox.webhooks SET active = true WHERE name = 'failing'");
});

test('test renders the exact request for a record and Send test reaches the receiver', async () => {
  await visit('/ui/webhooks/shop');
  await page.getByLabel('Entity', { exact: true }).fill('order');
  await page.getByLabel('Record id', { exact: true }).fill('2');
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Render request' }).click()]);
  await remember('webhook');
  const request = await page.textContent('#request');
  assert.match(request, /^POST http:\/\/127\.0\.0\.1:\d+\/shop\/2/);
  assert.match(request, /x-shop: de/i);
  assert.match(request, /x-api-key: \*\*\*/i);
  assert.match(request, /"total": 20/);
  const before = received.length;
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Send test' }).click()]);
  assert.match(await page.textContent('#response'), /HTTP 200/);
  const sent = received.slice(before).find((r) => r.url === '/shop/2');
  assert.ok(sent, 'the receiver got the test request');
  assert.match(sent.headers['webhook-id'], /^msg_test_/);
  assert.equal(sent.headers['x-api-key'], API_KEY, 'the real request carries the secret');
  // The merge fields of its event types, here of one record.
  await page.getByLabel('For record id').fill('2');
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Show fields' }).click()]);
  const fields = await page.textContent('#merge-fields');
  assert.match(fields, /event\.data\.total\s*20/);
  assert.match(fields, /event\.metadata\.shop\s*"de"/);
});

test('an edit with a filter that does not compile shows the error next to it and writes nothing', async () => {
  const stored = sql("SELECT row_to_json(w)::text FROM (SELECT filter, url, headers, auth, signature FROM outbox.webhooks WHERE name = 'shop') w");
  await visit('/ui/webhooks/shop/edit');
  assert.equal(await formValue('#f-url'), sql("SELECT url FROM outbox.webhooks WHERE name = 'shop'"));
  await page.fill('#f-filter', 'event.data.(');
  const [response] = await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Save changes' }).click()]);
  await remember('edit-error');
  assert.equal(response.status(), 422);
  assert.match(await page.textContent('.error[data-field="filter"]'), /CEL/);
  assert.equal(await page.locator('.error[data-field="url"]').count(), 0);
  assert.equal(sql("SELECT row_to_json(w)::text FROM (SELECT filter, url, headers, auth, signature FROM outbox.webhooks WHERE name = 'shop') w"), stored);

  // A valid change keeps the hidden secrets.
  await page.fill('#f-filter', 'event.data.id > 0');
  await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Save changes' }).click()]);
  assert.match(page.url(), /\/ui\/webhooks\/shop$/);
  assert.equal(sql("SELECT filter FROM outbox.webhooks WHERE name = 'shop'"), 'event.data.id > 0');
  assert.equal(sql("SELECT auth->'basic'->>'password' FROM outbox.webhooks WHERE name = 'shop'"), PASSWORD);
  assert.equal(sql("SELECT signature->'secrets'->>0 FROM outbox.webhooks WHERE name = 'shop'"), SIGNING_SECRET);
  assert.equal(sql("SELECT headers->>'X-Api-Key' FROM outbox.webhooks WHERE name = 'shop'"), API_KEY);
});

test('a POST without the CSRF token, or with another one, is refused', async () => {
  for (const form of [{}, { csrf: 'forged' }]) {
    const response = await page.request.post(`${base}/ui/webhooks/shop/pause`, { form });
    assert.equal(response.status(), 403, JSON.stringify(form));
  }
  assert.equal(sql("SELECT active FROM outbox.webhooks WHERE name = 'shop'"), 't');
});

test('the queue refreshes itself and pages by id', async () => {
  await visit('/ui/deliveries');
  const newest = Number(await page.locator('#rows tr[data-id]').first().getAttribute('data-id'));
  sql(`SELECT outbox.emit('order.created', 'order', '5', '{"id": 5}'::jsonb, '{"shop": "nl"}'::jsonb)`);
  await waitFor('the live refresh to show the new delivery', async () =>
    Number(await page.locator('#rows tr[data-id]').first().getAttribute('data-id')) > newest);
  await remember('queue');
  const all = count('SELECT count(*) FROM outbox.delivery_log');
  assert.ok(all < 100, 'one page holds them all here');
  assert.equal(await page.locator('#older').count(), 0);
});

test('no page showed a secret, and no page had a script error', () => {
  assert.ok(pagesSeen.length >= 10, `${pagesSeen.length} pages seen`);
  for (const { url, html } of pagesSeen) {
    for (const secret of SECRETS) assert.ok(!html.includes(secret), `${url} shows a secret`);
  }
  // Pages answered 401 (wrong token) and 422 (refused form) on purpose.
  const expected = /the server responded with a status of (401|422)/;
  assert.deepEqual(scriptProblems.filter((p) => !expected.test(p)), []);
});
