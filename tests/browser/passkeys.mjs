// Passkeys and the second-factor pages in a real browser: headless Debian
// Chromium driven by puppeteer-core, with Chromium's virtual authenticators
// (DevTools protocol `WebAuthn.*`) standing in for a laptop's platform
// authenticator and for security keys. Every page is audited with axe-core.
//
//   node passkeys.mjs --url http://localhost:PORT --admin admin --admin-password PW
//                     --shots DIR [--chromium /usr/bin/chromium] [--oathtool PATH]
//                     [--step-up-secs N]   (the server's mfa.step_up_secs: the run
//                                           waits it out once, for the step-up)
//
// The URL must use a domain name (`localhost`): WebAuthn has no relying-party
// id for an IP address. Prints `ok N - ...` / `not ok N - ... -- detail`,
// then `P passed, F failed`; exits 1 when anything failed.
//
// Flows: register a passkey from the console (the first factor brings the
// recovery codes); register a second one on another authenticator; log in
// with a passkey and no username (username-less); a password login whose
// second step is a passkey; remove a passkey (it no longer logs in); a
// cloned credential whose signature counter goes backwards is refused (and
// logged); an authenticator-app enrolment with its QR code, confirmed by a
// code from oathtool; an administrator's reset removes everything.

import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import puppeteer from 'puppeteer-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const AXE_SOURCE = fs.readFileSync(path.join(HERE, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    admin: { type: 'string', default: 'admin' },
    'admin-password': { type: 'string' },
    shots: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    oathtool: { type: 'string', default: '/usr/bin/oathtool' },
    timeout: { type: 'string', default: '300' },
    'step-up-secs': { type: 'string' },
  },
  strict: true,
});
for (const required of ['url', 'admin-password', 'shots']) {
  if (!args[required]) {
    console.error(`missing --${required}; see the header of passkeys.mjs`);
    process.exit(2);
  }
}
const APP = args.url.replace(/\/$/, '');
const RUN = `pk${crypto.randomBytes(3).toString('hex')}`;
fs.mkdirSync(args.shots, { recursive: true });

let passed = 0;
let failed = 0;
const axeTable = [];
const oneLine = (s) => String(s).replace(/\s+/g, ' ').trim().slice(0, 1500);
function check(name, ok, detail = '') {
  const n = passed + failed + 1;
  if (ok) {
    passed += 1;
    console.log(`ok ${n} - ${name}`);
  } else {
    failed += 1;
    console.log(`not ok ${n} - ${name}${detail ? ` -- ${oneLine(detail)}` : ''}`);
  }
  return ok;
}
const checkEq = (name, actual, expected) =>
  check(name, actual === expected, `expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
const note = (t) => console.log(`# ${t}`);

let adminToken = '';
async function api(method, urlPath, { token = adminToken, body } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(APP + urlPath, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, json, text };
}

function totp(secret) {
  return new Promise((resolve, reject) => {
    execFile(args.oathtool, ['--totp', '-b', secret], (err, stdout) => (err ? reject(err) : resolve(stdout.trim())));
  });
}

// ---------------------------------------------------------------------------
// One browser tab with its own virtual authenticators

class Tab {
  constructor(page, cdp) {
    this.page = page;
    this.cdp = cdp;
    this.authenticator = null;
  }
  static async open(browser) {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    const cdp = await page.createCDPSession();
    await cdp.send('WebAuthn.enable', { enableUI: false });
    return new Tab(page, cdp);
  }
  /** A new authenticator (and no other): internal = a laptop's, usb = a security key. */
  async useAuthenticator(transport = 'internal', credentials = []) {
    if (this.authenticator) await this.cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: this.authenticator });
    const { authenticatorId } = await this.cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2',
        ctap2Version: 'ctap2_1',
        transport,
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });
    this.authenticator = authenticatorId;
    for (const credential of credentials) await this.cdp.send('WebAuthn.addCredential', { authenticatorId, credential });
    return authenticatorId;
  }
  async credentials() {
    return (await this.cdp.send('WebAuthn.getCredentials', { authenticatorId: this.authenticator })).credentials;
  }
  async goto(p) {
    return this.page.goto(APP + p, { waitUntil: 'load' });
  }
  /** Submits `form` by its button; the page it lands on. */
  async submit(form) {
    try {
      const [resp] = await Promise.all([
        this.page.waitForNavigation({ waitUntil: 'load', timeout: 30000 }),
        this.page.click(`${form} button[type=submit]`),
      ]);
      return resp;
    } catch (err) {
      const said = await this.text(`${form} [data-passkey-status]`);
      throw new Error(`submitting ${form} led nowhere${said ? ` (the page says: ${said})` : ''}: ${err.message}`);
    }
  }
  async text(selector) {
    return this.page.$eval(selector, (e) => e.textContent.trim()).catch(() => null);
  }
  async visible(selector) {
    return this.page.$eval(selector, (e) => !e.hidden && e.offsetParent !== null).catch(() => false);
  }
  async who() {
    return this.text('header .who');
  }
  async audit(name) {
    await this.page.screenshot({ path: path.join(args.shots, `passkeys-${name}.png`), fullPage: true });
    await this.page.evaluate(AXE_SOURCE);
    const result = await this.page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ['violations'] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact ?? 'minor', count: v.nodes.length }));
    });
    const serious = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    axeTable.push([name, result.length, serious.length]);
    check(`axe: no serious or critical violation on ${name}`, serious.length === 0, JSON.stringify(serious));
  }
}

async function passwordLogin(tab, username, password) {
  await tab.goto('/login');
  await tab.page.type('form#login input[name=username]', username);
  await tab.page.type('form#login input[name=password]', password);
  return tab.submit('form#login');
}

async function logout(tab) {
  return tab.submit('form#logout');
}

async function status(username) {
  const r = await api('GET', `/api/v1/users/${encodeURIComponent(username)}/mfa`);
  if (r.status !== 200) throw new Error(`GET mfa of ${username}: ${r.status} ${r.text}`);
  return r.json;
}

async function registerPasskey(tab, name) {
  await tab.goto('/account/mfa');
  check(`the "add a passkey" form is shown (${name})`, await tab.visible('form#new-passkey'));
  await tab.page.type('form#new-passkey input[name=name]', name);
  return tab.submit('form#new-passkey');
}

/** The tab's authenticator answers `options` (the server's JSON) as the browser would. */
async function assertion(tab, options) {
  return tab.page.evaluate(async (o) => {
    const c = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(o.publicKey) });
    return c.toJSON();
  }, options);
}

function claimsOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

/** The OpenID Provider's ID token for the tab's session (a first-party client, PKCE). */
async function providerIdToken(tab, client) {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const redirect = 'http://localhost:9/cb';
  const q = new URLSearchParams({
    response_type: 'code', client_id: client.client_id, redirect_uri: redirect, scope: 'openid',
    state: 's', code_challenge: challenge, code_challenge_method: 'S256',
  });
  let landed = null;
  await tab.page.setRequestInterception(true);
  const handler = (req) => {
    if (req.url().startsWith(redirect)) {
      landed = req.url();
      req.respond({ status: 200, contentType: 'text/plain', body: 'ok' });
    } else {
      req.continue();
    }
  };
  tab.page.on('request', handler);
  try {
    await tab.page.goto(`${APP}/oauth2/authorize?${q}`, { waitUntil: 'load' });
  } finally {
    tab.page.off('request', handler);
    await tab.page.setRequestInterception(false);
  }
  const code = landed && new URL(landed).searchParams.get('code');
  if (!code) throw new Error(`no code from the provider (ended on ${tab.page.url()})`);
  const res = await fetch(`${APP}/oauth2/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirect, code_verifier: verifier }),
  });
  const t = await res.json();
  return claimsOf(t.id_token);
}

async function basic(urlPath, user, pw, method = 'GET') {
  const res = await fetch(APP + urlPath, {
    method,
    headers: { authorization: `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`, accept: 'application/json' },
  });
  const text = await res.text();
  return { status: res.status, text };
}

// ---------------------------------------------------------------------------

async function main() {
  const login = await api('POST', '/api/v1/auth/login', { token: null, body: { username: args.admin, password: args['admin-password'] } });
  if (!check('the admin logs in through the API', login.status === 200, login.text)) return;
  adminToken = login.json.access_token;
  const username = `${RUN}-ada`;
  const password = `Ada-${crypto.randomBytes(9).toString('base64url')}-Lantern`;
  const created = await api('POST', '/api/v1/users', {
    body: { username, email: `${username}@example.org`, password, first_name: 'Ada', last_name: 'Tester', verified: true },
  });
  if (!check('a user to test with', created.status === 201, created.text)) return;

  const browser = await puppeteer.launch({
    timeout: 120000,
    executablePath: args.chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  note(`${await browser.version()}; run ${RUN}; app ${APP}`);
  try {
    const tab = await Tab.open(browser);

    // 1. The first passkey, from the console; recovery codes come with it.
    await tab.useAuthenticator('internal');
    await passwordLogin(tab, username, password);
    checkEq('the password logs in (no factor yet)', await tab.who(), username);
    await tab.goto('/account/mfa');
    checkEq('the factors page says the second factor is off', await tab.text('#mfa-state strong'), 'off');
    await tab.audit('account-mfa-empty');
    let resp = await registerPasskey(tab, 'laptop');
    checkEq('registering answers 201', resp.status(), 201);
    checkEq('the page says the passkey was added', await tab.text('#notice'), 'The passkey has been added.');
    const codes = await tab.page.$$eval('#recovery-code-list code', (cs) => cs.map((c) => c.textContent.trim()));
    checkEq('the first factor shows 10 recovery codes', codes.length, 10);
    check('recovery codes look like xxxxx-xxxxx', codes.every((c) => /^[a-z2-9]{5}-[a-z2-9]{5}$/.test(c)), codes.join(' '));
    await tab.audit('account-mfa-recovery-codes');
    let st = await status(username);
    check('the API lists the passkey by its name', st.enabled && st.passkeys.length === 1 && st.passkeys[0].name === 'laptop', JSON.stringify(st));
    check('no key material in the factor list', !JSON.stringify(st).match(/publicKey|credential_id|static_state|private/i), JSON.stringify(st));
    const laptop = await tab.credentials();
    checkEq('the authenticator holds one discoverable credential', laptop.length === 1 && laptop[0].isResidentCredential, true);
    const laptopCredential = laptop[0];

    // 2. A second passkey on a security key (the registration excludes the first).
    await tab.useAuthenticator('usb');
    resp = await registerPasskey(tab, 'blue key');
    checkEq('a second passkey registers', resp.status(), 201);
    check('no second set of recovery codes', (await tab.page.$('#recovery-code-list')) === null);
    const rows = await tab.page.$$eval('table#passkeys tbody tr td:first-child', (tds) => tds.map((t) => t.textContent.trim()));
    checkEq('the page lists both passkeys', rows.join(','), 'laptop,blue key');

    // 3. Username-less login with the security key.
    await logout(tab);
    await tab.goto('/login');
    check('the login page offers a passkey', await tab.visible('form#passkey-login'));
    await tab.audit('login-with-passkey');
    resp = await tab.submit('form#passkey-login');
    checkEq('a passkey alone logs in, without a username', await tab.who(), username);
    check('and lands on the account', new URL(tab.page.url()).pathname === '/account', tab.page.url());
    const sessions = await api('GET', `/api/v1/users/${username}/sessions`);
    const newest = (sessions.json?.items ?? sessions.json ?? []).slice().sort((a, b) => (a.created_at < b.created_at ? 1 : -1))[0];
    checkEq('the session is recorded as a passkey login', newest?.method, 'passkey');

    // 3b. The same through the JSON API: options, the authenticator's answer, tokens.
    let opts = await api('POST', '/api/v1/auth/passkey/options', { token: null });
    let answer = await assertion(tab, opts.json);
    let r = await api('POST', '/api/v1/auth/passkey', { token: null, body: { credential: answer } });
    checkEq('API: a passkey alone gives tokens', r.status, 200);
    const me = await api('GET', '/api/v1/users/me', { token: r.json?.access_token });
    checkEq('API: the token is the passkey owner\'s', me.json?.username, username);
    r = await api('POST', '/api/v1/auth/passkey', { token: null, body: { credential: answer } });
    checkEq('API: the same answer again is refused (single-use challenge)', r.json?.error?.code, 'invalid_passkey');

    // 3c. The OpenID Provider reports a passkey login as two factors.
    const client = await api('POST', '/api/v1/oauth/clients', {
      body: { name: `${RUN} app`, redirect_uris: ['http://localhost:9/cb'], first_party: true },
    });
    if (check('a first-party OpenID client', client.status === 201, client.text)) {
      const claims = await providerIdToken(tab, client.json);
      checkEq('OP: amr of a passkey login', JSON.stringify(claims.amr), JSON.stringify(['hwk', 'user']));
      checkEq('OP: acr of a passkey login', claims.acr, 'aal2');
    }
    await tab.goto('/account');

    // 3d. Clients that cannot take a second step refuse the password alone.
    r = await basic('/api/v1/users/me', username, password);
    check('Basic with the password is refused for a passkey user', r.status === 401 && r.text.includes('mfa_required'), r.text);
    const xnat = await fetch(`${APP}/data/services/auth`, {
      method: 'PUT',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username, password }),
    });
    check('XNAT\'s login with the password is refused too', xnat.status === 401, `${xnat.status} ${await xnat.text()}`);

    // 3e. The API's two-step login, with the passkey as the second step.
    r = await api('POST', '/api/v1/auth/login', { token: null, body: { username, password } });
    check('API: the password step asks for a factor, passkey among the methods',
      r.json?.mfa_required === true && (r.json?.methods ?? []).includes('passkey'), r.text);
    const mfaToken = r.json?.mfa_token;
    opts = await api('POST', '/api/v1/auth/mfa/passkey/options', { token: null, body: { mfa_token: mfaToken } });
    answer = await assertion(tab, opts.json);
    r = await api('POST', '/api/v1/auth/mfa', { token: null, body: { mfa_token: mfaToken, passkey: answer } });
    check('API: the passkey completes the two-step login', r.status === 200 && !!r.json?.access_token, r.text);

    // 4. A password login whose second step is the passkey.
    await logout(tab);
    await passwordLogin(tab, username, password);
    check('the password alone is not enough: the second-step page', (await tab.page.$('form#login-mfa')) !== null, tab.page.url());
    check('the second step offers the passkey', await tab.visible('form#login-mfa-passkey'));
    await tab.audit('login-second-step');
    await tab.submit('form#login-mfa-passkey');
    checkEq('the passkey completes the login', await tab.who(), username);
    if (client.status === 201) {
      const claims = await providerIdToken(tab, client.json);
      checkEq('OP: amr of password + passkey', JSON.stringify(claims.amr), JSON.stringify(['pwd', 'hwk']));
      checkEq('OP: acr of password + passkey', claims.acr, 'aal2');
      await tab.goto('/account');
    }

    // 5. Remove the security key's passkey: it no longer logs in.
    await tab.goto('/account/mfa');
    const blueId = await tab.page.$eval('table#passkeys tbody tr:nth-child(2)', (tr) => tr.dataset.passkeyId);
    tab.page.once('dialog', (d) => d.accept());
    await Promise.all([
      tab.page.waitForNavigation({ waitUntil: 'load' }),
      tab.page.click(`tr[data-passkey-id="${blueId}"] button`),
    ]);
    checkEq('the page says it was removed', await tab.text('p.flash'), 'The passkey has been removed.');
    st = await status(username);
    checkEq('one passkey is left', st.passkeys.map((p) => p.name).join(','), 'laptop');
    await logout(tab);
    await tab.goto('/login');
    await tab.submit('form#passkey-login');
    check('the removed passkey logs in no more', (await tab.who()) === null, await tab.who());
    check('the login page says why', ((await tab.text('#form-error')) ?? '').includes('passkey'), await tab.text('#form-error'));

    // 6. A cloned credential: the laptop's key on a second authenticator.
    await tab.useAuthenticator('internal', [laptopCredential]);
    await tab.goto('/login');
    await tab.submit('form#passkey-login');
    checkEq('the laptop passkey logs in', await tab.who(), username);
    await logout(tab);
    // The clone has the counter the original had when it was copied: behind.
    await tab.useAuthenticator('internal', [laptopCredential]);
    await tab.goto('/login');
    await tab.submit('form#passkey-login');
    check('a clone whose signature counter went backwards is refused', (await tab.who()) === null, await tab.who());
    const log = await api('GET', `/api/v1/users/${username}/log?action=mfa.passkey_refused`);
    const refusedEntries = (log.json?.items ?? []).filter((e) => e.action === 'mfa.passkey_refused');
    check('the refusal is in the change log, naming the counter', refusedEntries.some((e) => JSON.stringify(e).includes('counter')), log.text);

    // 7. An authenticator app from the console (QR code + key), confirmed with oathtool.
    await tab.useAuthenticator('internal', [(await tab.credentials())[0]]);
    await tab.goto('/login');
    await tab.submit('form#passkey-login');
    checkEq('logged in again for the app enrolment', await tab.who(), username);
    await tab.goto('/account/mfa');
    await tab.submit('form#totp-begin');
    check('the QR code is drawn', (await tab.page.$('#totp-qr svg')) !== null);
    const key = await tab.text('#totp-secret');
    check('the key is shown as base32', /^[A-Z2-7]{32}$/.test(key ?? ''), key);
    await tab.audit('account-mfa-totp-enrolment');
    await tab.page.type('form#totp-confirm input[name=code]', await totp(key));
    await tab.submit('form#totp-confirm');
    checkEq('the app is set up', await tab.text('#notice'), 'The authenticator app is set up.');
    st = await status(username);
    checkEq('the API says totp confirmed', st.totp, 'confirmed');
    await tab.audit('account-mfa-both');

    // 7b. The step-up: once the session's factor is older than
    // mfa.step_up_secs, changing factors first asks for one (here the passkey).
    if (args['step-up-secs']) {
      await new Promise((done) => setTimeout(done, (Number(args['step-up-secs']) + 2) * 1000));
      await tab.goto('/account/mfa');
      check('after mfa.step_up_secs the page asks to confirm first', (await tab.page.$('#step-up')) !== null);
      check('and offers no change until then', (await tab.page.$('form#new-passkey')) === null);
      await tab.audit('account-mfa-step-up');
      await tab.submit('form#step-up-passkey');
      checkEq('the passkey step-up is accepted', await tab.text('p.flash'), 'Confirmed: you can change your sign-in factors for the next few minutes.');
      check('the changes are offered again', (await tab.page.$('form#new-passkey')) !== null);
    }

    // 8. An administrator's reset removes every factor and ends the sessions.
    const reset = await api('DELETE', `/api/v1/users/${username}/mfa`);
    checkEq('the admin resets the factors', reset.status, 204);
    st = await status(username);
    check('no factor is left', !st.enabled && st.passkeys.length === 0 && st.totp === 'none', JSON.stringify(st));
    await tab.goto('/account/mfa');
    check('the reset ended the browser session', new URL(tab.page.url()).pathname === '/login', tab.page.url());
  } finally {
    await browser.close();
  }
}

const watchdog = setTimeout(() => {
  check(`the run finished within ${args.timeout} s`, false);
  finish();
}, Number(args.timeout) * 1000);

function finish() {
  clearTimeout(watchdog);
  console.log('# axe per page (page, violations, serious or critical):');
  for (const [page, all, serious] of axeTable) console.log(`#   ${page}: ${all}, ${serious}`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

main()
  .catch((err) => check('the driver ran to its end', false, err.stack ?? err))
  .finally(finish);
