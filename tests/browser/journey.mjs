// The dashboard journey in a real Chromium (Debian's), driven by playwright-core, against a
// running gateway and backend over TLS. Started by tests/e2e/dashboard.rs, which gives:
//   ZG_BASE         the public origin, https://localhost:<port>
//   ZG_OUTBOX       the gateway's mail outbox directory (.eml files)
//   ZG_SHOTS        where to write screenshots
//   ZG_CHROMIUM     the browser (default /usr/bin/chromium)
//   NODE_EXTRA_CA_CERTS  the gateway's certificate, for this script's own API calls
// Every page gets axe-core (no serious or critical violation), every response the CSP header,
// and the whole run no console error and no CSP violation. Exits non-zero on the first failure.

import { chromium } from 'playwright-core';
import { createHmac } from 'node:crypto';
import { readFileSync, readdirSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const BASE = process.env.ZG_BASE;
const OUTBOX = process.env.ZG_OUTBOX;
const SHOTS = process.env.ZG_SHOTS;
const PASSWORD = 'correct horse battery staple';
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// ---- Mail and TOTP, computed here independently of the product --------------------------

/** Every mail to `to` written since `after` (ms), newest first, decoded (quoted-printable soft
 * breaks and =XX). */
function mailsTo(to, after) {
  return readdirSync(OUTBOX)
    .filter((f) => f.endsWith('.eml'))
    .map((f) => join(OUTBOX, f))
    .map((f) => ({ f, at: statSync(f).mtimeMs }))
    .filter(({ at }) => at >= after)
    .sort((a, b) => b.at - a.at)
    .map(({ f }) => readFileSync(f, 'utf8'))
    .filter((raw) => /^to:.*$/im.test(raw) && raw.match(/^to:(.*)$/im)[1].toLowerCase().includes(to))
    .map(decodeMail);
}

/** The mail's text, decoded by its Content-Transfer-Encoding (base64, quoted-printable, or
 * none): which one the mailer picks depends on the lines, and so on the port in the links. */
function decodeMail(raw) {
  const text = raw.replace(/\r\n/g, '\n');
  const split = text.indexOf('\n\n');
  const head = split < 0 ? text : text.slice(0, split);
  const body = split < 0 ? '' : text.slice(split + 2);
  const encoding = (head.match(/^content-transfer-encoding:\s*(\S+)/im) || [])[1]?.toLowerCase();
  if (encoding === 'base64') return `${head}\n\n${Buffer.from(body.replace(/\s/g, ''), 'base64').toString('utf8')}`;
  if (encoding === 'quoted-printable') {
    return `${head}\n\n${body.replace(/=\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)))}`;
  }
  return text;
}

/** Wait for a mail to `to` with a link to `path` on the dashboard, and return the link. */
async function mailedLink(to, after, path) {
  const wanted = new RegExp(`${BASE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}${path}#token=[A-Za-z0-9_-]{43}`);
  for (let i = 0; i < 300; i++) {
    for (const mail of mailsTo(to, after)) {
      const link = mail.match(wanted);
      if (link) return link[0];
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const seen = mailsTo(to, 0).map((m) => (m.match(/https:\/\/\S+#token=/) || ['(no link)'])[0]);
  throw new Error(`no mail to ${to} with a ${path} link within 30 s; mails to them: ${JSON.stringify(seen)}`);
}

function base32(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of s.replace(/=+$/, '').replace(/\s/g, '').toUpperCase()) {
    bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

/** RFC 6238 SHA-1, 6 digits, 30 s. */
function totp(secret, t = Date.now() / 1000) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(t / 30)));
  const mac = createHmac('sha1', base32(secret)).update(counter).digest();
  const o = mac[mac.length - 1] & 15;
  return String((mac.readUInt32BE(o) & 0x7fffffff) % 1000000).padStart(6, '0');
}

/** A code that stays valid for the next few seconds, and not one used before. */
const usedSteps = new Set();
async function freshCode(secret) {
  for (;;) {
    const now = Date.now() / 1000;
    const step = Math.floor(now / 30);
    if (now % 30 < 25 && !usedSteps.has(step)) {
      usedSteps.add(step);
      return totp(secret, now);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// ---- The browser ----------------------------------------------------------------------------

const problems = [];
const pagesSeen = [];

async function newPage(browser) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  const page = await context.newPage();
  page.on('console', (msg) => {
    // Chromium logs every refused fetch as a console error; a 401 or 403 is an answer the
    // journey asks for (a forced write, an ended session), anything else is a problem.
    const expected = /^Failed to load resource: the server responded with a status of 40[13]/;
    if (msg.type() === 'error' && !expected.test(msg.text())) {
      problems.push(`console error on ${page.url()}: ${msg.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
  page.on('response', (resp) => {
    const type = resp.headers()['content-type'] || '';
    if (resp.url().startsWith(BASE) && type.startsWith('text/html')) {
      if (resp.headers()['content-security-policy'] !== CSP) problems.push(`no strict CSP on ${resp.url()}`);
    }
  });
  // A CSP violation is reported to the page as an event.
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page.on('dialog', (d) => d.accept());
  return page;
}

/** Run axe-core on the page as it is now; record serious and critical violations. */
async function audit(page, name) {
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  for (const v of result) {
    if (v.impact === 'serious' || v.impact === 'critical') {
      problems.push(`axe on ${name}: ${v.id} (${v.impact}, ${v.nodes} nodes): ${v.help}`);
    }
  }
  pagesSeen.push(name);
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function heading(page, text) {
  await page.getByRole('heading', { level: 1, name: text }).waitFor({ timeout: 10000 });
}

/** Fill a form's fields by label and press its button. */
async function submit(page, fields, button) {
  for (const [label, value] of Object.entries(fields)) {
    await page.getByLabel(label, { exact: true }).fill(value);
  }
  await page.getByRole('button', { name: button, exact: true }).click();
}

async function signUpAndVerify(page, email) {
  const started = Date.now() - 1000;
  await page.goto(`${BASE}/signup`);
  await heading(page, 'Create your account');
  await audit(page, 'signup');
  await shot(page, 'signup');
  await submit(page, { Email: email, Password: PASSWORD }, 'Sign up');
  await heading(page, 'Check your email');
  await audit(page, 'check-email');
  const link = await mailedLink(email, started, '/verify-email');
  await page.goto(link);
  await heading(page, 'Email verified');
  check(!page.url().includes('token'), 'the token left the address bar');
  await audit(page, 'verify-email');
}

async function logIn(page, email, code, password = PASSWORD) {
  await page.goto(`${BASE}/login`);
  await heading(page, 'Log in');
  await submit(page, { Email: email, Password: password }, 'Log in');
  if (code) {
    await page.getByLabel('Authentication code').waitFor();
    await submit(page, { 'Authentication code': code }, 'Verify');
  }
  await heading(page, 'Your orgs');
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.ZG_CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    await journey(browser);
  } finally {
    await browser.close();
  }
}

async function journey(browser) {
  const ada = 'ada@example.com';
  const bob = 'bob@example.com';
  const page = await newPage(browser);

  // Sign up, open the mail's link, log in.
  await signUpAndVerify(page, ada);
  await page.goto(`${BASE}/login`);
  await heading(page, 'Log in');
  await audit(page, 'login');
  await shot(page, 'login');
  await logIn(page, ada);
  await audit(page, 'orgs (empty)');

  // Enrol TOTP: the secret from the page, a code from "the app", recovery codes shown once.
  await page.getByRole('link', { name: 'Account', exact: true }).click();
  await heading(page, 'Your account');
  await page.getByRole('button', { name: 'Set up two-factor authentication' }).click();
  await submit(page, { Password: PASSWORD }, 'Continue');
  await page.getByRole('img', { name: 'QR code for your authenticator app' }).waitFor();
  const secret = (await page.locator('#totp-secret').textContent()).trim();
  await audit(page, 'account (enrolling)');
  await shot(page, 'totp-enrol');
  await submit(page, { 'Authentication code': await freshCode(secret) }, 'Confirm');
  await page.locator('#recovery-codes li').first().waitFor();
  check((await page.locator('#recovery-codes li').count()) === 10, 'ten recovery codes');
  await page.getByRole('button', { name: 'Copy codes' }).click();
  await audit(page, 'account (recovery codes)');

  // Log out; log in again, now with a code.
  await page.getByRole('button', { name: 'Log out' }).click();
  await heading(page, 'Log in');
  await logIn(page, ada, await freshCode(secret));

  // Create an org.
  await submit(page, { 'Org name': 'Acme Deliveries' }, 'Create org');
  await page.getByRole('navigation', { name: 'Org' }).waitFor();
  const org = new URL(page.url()).pathname.split('/')[2];
  check(org && org.length > 0, `an org id in the URL: ${page.url()}`);
  await audit(page, 'org home');

  // Invite bob as a viewer; bob signs up, opens the invitation mail, accepts.
  await page.goto(`${BASE}/orgs/${org}/members`);
  await heading(page, 'Members');
  const invited = Date.now() - 1000;
  await page.getByLabel('Email', { exact: true }).fill(bob);
  await page.getByLabel('Role', { exact: true }).selectOption('viewer');
  await page.getByRole('button', { name: 'Invite', exact: true }).click();
  await page.getByRole('button', { name: 'Withdraw' }).waitFor();
  await audit(page, 'members');
  await shot(page, 'members');
  const invitation = await mailedLink(bob, invited, '/accept-invitation');

  const bobPage = await newPage(browser);
  await signUpAndVerify(bobPage, bob);
  await logIn(bobPage, bob);
  await bobPage.goto(invitation);
  await heading(bobPage, 'Join an org');
  await audit(bobPage, 'accept-invitation');
  await bobPage.getByRole('button', { name: 'Accept invitation' }).click();
  await bobPage.getByRole('navigation', { name: 'Org' }).waitFor();

  // An API key: created, copied from the page, used by "the integrator" (this script).
  await page.goto(`${BASE}/orgs/${org}/api-keys`);
  await heading(page, 'API keys');
  await page.getByLabel('Key name').fill('integration');
  for (const scope of ['zones:read', 'zones:write', 'coverage:read']) {
    await page.getByLabel(scope, { exact: true }).check();
  }
  await page.getByRole('button', { name: 'Create key' }).click();
  const key = (await page.locator('#new-key-secret').textContent()).trim();
  check(/^zgk_[0-9a-f]{16}_[0-9A-Za-z]{38}$/.test(key), 'the key is shown once, whole');
  await page.getByRole('button', { name: 'Copy key' }).click();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === key, 'the copy button copies the key');
  await audit(page, 'api keys (new key)');
  await shot(page, 'api-keys');
  const listed = await fetch(`${BASE}/v1/orgs/${org}/zones`, { headers: { authorization: `Bearer ${key}` } });
  check(listed.status === 200, `the key lists zones: ${listed.status}`);

  // Draw a zone on the map: four clicks, a shape, a create.
  await page.goto(`${BASE}/orgs/${org}/zones`);
  await heading(page, 'Zones');
  await page.getByLabel('Zone name').fill('Drawn square');
  const map = page.getByLabel('Map: click to add a corner of the zone');
  const box = await map.boundingBox();
  for (const [fx, fy] of [[0.52, 0.3], [0.6, 0.3], [0.6, 0.4], [0.52, 0.4]]) {
    await page.mouse.click(box.x + box.width * fx, box.y + box.height * fy);
  }
  const geojson = JSON.parse(await page.getByLabel('GeoJSON polygon').inputValue());
  check(geojson.type === 'Polygon' && geojson.coordinates[0].length === 5, 'a closed ring of four corners');
  await page.getByRole('button', { name: 'Create zone' }).click();
  await page.getByRole('button', { name: 'Delete Drawn square' }).waitFor();
  await audit(page, 'zones');
  await shot(page, 'zones');

  // Coverage: the middle of the drawn square is covered.
  const ring = geojson.coordinates[0];
  const lon = (ring[0][0] + ring[2][0]) / 2;
  const lat = (ring[0][1] + ring[2][1]) / 2;
  await submit(page, { Latitude: lat.toFixed(5), Longitude: lon.toFixed(5) }, 'Check coverage');
  await page.getByText('Covered by: Drawn square').waitFor();
  const byKey = await fetch(`${BASE}/v1/orgs/${org}/coverage?lat=${lat}&lon=${lon}`, { headers: { authorization: `Bearer ${key}` } });
  check(byKey.status === 200 && (await byKey.json()).zones.length === 1, 'the integrator sees the drawn zone');

  // The viewer sees no write controls, and a forced write is refused.
  await bobPage.goto(`${BASE}/orgs/${org}/zones`);
  await heading(bobPage, 'Zones');
  await bobPage.getByText('Drawn square').first().waitFor();
  check((await bobPage.getByRole('button', { name: 'Create zone' }).count()) === 0, 'no create for a viewer');
  check((await bobPage.getByRole('button', { name: 'Delete Drawn square' }).count()) === 0, 'no delete for a viewer');
  await audit(bobPage, 'zones (viewer)');
  const forced = await bobPage.evaluate(async (org) => {
    const csrf = document.cookie.split('; ').find((c) => c.startsWith('__Host-zonegate-csrf='))?.split('=')[1] || '';
    const r = await fetch(`/v1/orgs/${org}/zones`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify({ name: 'forced', area: { type: 'Polygon', coordinates: [[[0, 0], [1, 0], [1, 1], [0, 0]]] } }),
    });
    return r.status;
  }, org);
  check(forced === 403, `a viewer's forced write is refused: ${forced}`);

  // Revoke the key: the integrator is refused at once.
  await page.goto(`${BASE}/orgs/${org}/api-keys`);
  await page.getByRole('button', { name: 'Revoke integration' }).click();
  await page.getByRole('button', { name: 'Revoke integration' }).waitFor({ state: 'detached' });
  const refused = await fetch(`${BASE}/v1/orgs/${org}/zones`, { headers: { authorization: `Bearer ${key}` } });
  check(refused.status === 401, `a revoked key is refused: ${refused.status}`);

  // The audit page shows those events.
  await page.goto(`${BASE}/orgs/${org}/audit`);
  await heading(page, 'Audit log');
  for (const event of ['org_member_invited', 'org_member_joined', 'authn_apikey_created', 'authn_apikey_revoked']) {
    await page.getByRole('cell', { name: event, exact: true }).first().waitFor({ timeout: 10000 });
  }
  await page.getByLabel('Event', { exact: true }).selectOption('authn_apikey_revoked');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.getByRole('cell', { name: 'org_member_invited', exact: true }).waitFor({ state: 'detached' });
  await audit(page, 'audit');
  await shot(page, 'audit');

  // Settings: the owner (signed in with a second factor) requires it of every member.
  await page.goto(`${BASE}/orgs/${org}/settings`);
  await heading(page, 'Settings');
  await page.getByLabel('Require two-factor authentication for every member').check();
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  await page.getByText('Two-factor authentication is required for every member.').waitFor();
  await audit(page, 'settings');

  // A forged cross-site form post (another site's Origin, the user's own cookies) is refused.
  const forged = await page.context().request.post(`${BASE}/v1/orgs`, {
    headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
    data: 'name=forged',
  });
  check(forged.status() === 403, `a cross-site form post is refused: ${forged.status()}`);

  // A session ended elsewhere sends the page to log in, with a clear message.
  await page.context().clearCookies({ name: '__Host-zonegate-session' });
  await page.context().clearCookies({ name: '__Secure-zonegate-refresh' });
  await page.goto(`${BASE}/orgs/${org}/zones`);
  await heading(page, 'Log in');
  await page.getByText('Your session has ended. Please log in again.').waitFor();

  // Forgot the password: the reset mail's link lands on the dashboard, and the new password
  // (with the second factor) logs in.
  const resetAsked = Date.now() - 1000;
  await page.goto(`${BASE}/forgot-password`);
  await heading(page, 'Reset your password');
  await audit(page, 'forgot-password');
  await submit(page, { Email: ada }, 'Send reset link');
  const reset = await mailedLink(ada, resetAsked, '/reset-password');
  await page.goto(reset);
  await heading(page, 'Choose a new password');
  check(!page.url().includes('token'), 'the reset token left the address bar');
  await audit(page, 'reset-password');
  await submit(page, { 'New password': 'a brand new passphrase' }, 'Set new password');
  await page.getByText('Your new password is set.', { exact: false }).waitFor();
  await logIn(page, ada, await freshCode(secret), 'a brand new passphrase');

  // Every page reviewed, and what each weighs.
  for (const path of ['/', '/login', '/assets/app.js', '/assets/app.css']) {
    const r = await fetch(`${BASE}${path}`);
    console.log(`size ${path}: ${(await r.arrayBuffer()).byteLength} bytes`);
  }
  console.log(`axe-core ran on ${pagesSeen.length} pages: ${pagesSeen.join(', ')}`);
  if (problems.length) {
    throw new Error(`problems:\n  ${problems.join('\n  ')}`);
  }
}

main().then(
  () => console.log('journey: ok'),
  (e) => {
    console.error(`journey: FAILED: ${e.stack || e}`);
    for (const p of problems) console.error(`  ${p}`);
    process.exit(1);
  },
);
