// Apache httpd's mod_auth_openidc as a relying party of registrar, driven in
// headless Debian Chromium (puppeteer-core): /protected/ sends the browser
// to registrar's login page, the login comes back to the protected page
// showing the user's claims; logout through mod_auth_openidc's
// `redirect_uri?logout=` goes through registrar's end_session endpoint and
// ends both sessions; with --backchannel, a logout at registrar's own web
// console ends the Apache session too (OpenID Connect back-channel logout).
//
//   node apache.mjs --apache http://127.0.0.1:<apache port> --issuer <registrar url>
//     --username <u> --password <p> [--email <e>] [--expect-group <g>]
//     [--backchannel] [--chromium /usr/bin/chromium] [--shots <dir>]
//
// Prints `ok - ...` / `not ok - ...` lines and a final `N passed, M failed`;
// exits non-zero on any failure.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2);
    const value = argv[i + 1];
    if (value === undefined || value.startsWith('--')) {
      out[key] = true;
    } else {
      out[key] = value;
      i++;
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
for (const required of ['apache', 'issuer', 'username', 'password']) {
  if (typeof args[required] !== 'string') {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
const APACHE = args.apache.replace(/\/+$/, '');
const ISSUER = args.issuer.replace(/\/+$/, '');
const USERNAME = args.username;
const PASSWORD = args.password;
const CHROMIUM = typeof args.chromium === 'string' ? args.chromium : '/usr/bin/chromium';
const SHOTS = typeof args.shots === 'string' ? args.shots : undefined;
const PROTECTED = `${APACHE}/protected/`;
const LOGGED_OUT = `${APACHE}/loggedout.html`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

let passed = 0;
let failed = 0;
let page;
let shot = 0;

class Skip extends Error {}

/** What the browser complained about (CSP violations, failed requests): shown with a failure. */
const complaints = [];

async function check(name, fn) {
  const seen = complaints.length;
  try {
    const v = await fn();
    passed++;
    console.log(`ok - ${name}`);
    return v === undefined ? true : v;
  } catch (e) {
    failed++;
    const why = e instanceof Skip ? `# skipped: ${e.message}` : `: ${e && e.message ? e.message : e}`;
    console.log(`not ok - ${name}${e instanceof Skip ? ' ' : ''}${why}`);
    for (const c of complaints.slice(seen)) console.log(`#   browser: ${c}`);
    if (SHOTS && page && !(e instanceof Skip)) {
      try {
        mkdirSync(SHOTS, { recursive: true });
        const file = join(SHOTS, `FAILED-apache-${++shot}.png`);
        await page.screenshot({ path: file, fullPage: true });
        console.log(`#   screenshot: ${file} (at ${page.url()})`);
      } catch {
        /* no screenshot */
      }
    }
    return undefined;
  }
}

function need(v, what) {
  if (!v) throw new Skip(`needs ${what} (an earlier step failed)`);
  return v;
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function eq(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

function short(url) {
  return url.length > 220 ? url.slice(0, 220) + '…' : url;
}

/** The main frame's navigations (requests with their answers), for checks and diagnostics. */
const navigations = [];

function trace(from = 0) {
  return navigations
    .slice(from)
    .map((n) => `${n.method} ${short(n.url)} -> ${n.status ?? '?'}`)
    .join(' | ');
}

async function text(selector) {
  const el = await page.$(selector);
  if (!el) return undefined;
  return (await page.evaluate((e) => e.textContent, el)).trim();
}

async function goto(url) {
  const from = navigations.length;
  const resp = await page.goto(url, { waitUntil: 'load' });
  return { resp, from };
}

function at(url, origin, pathname) {
  const u = new URL(url);
  return u.origin === origin && u.pathname === pathname;
}

async function bodyText() {
  return page.evaluate(() => document.body ? document.body.innerText.replace(/\s+/g, ' ').trim().slice(0, 400) : '');
}

async function login() {
  assert(await page.$('form#login'), `no form#login at ${page.url()}: ${await bodyText()}`);
  await page.type('form#login #username', USERNAME);
  await page.type('form#login #password', PASSWORD);
  const from = navigations.length;
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form#login button[type=submit]')]);
  return from;
}

async function protectedPageShowsUser(from) {
  assert(page.url() === PROTECTED, `ended at ${page.url()}, not ${PROTECTED}: ${await bodyText()} [${trace(from)}]`);
  eq(await text('#remote-user'), USERNAME, 'REMOTE_USER (OIDCRemoteUserClaim preferred_username)');
  eq(await text('#username'), USERNAME, 'OIDC_CLAIM_preferred_username');
  eq(await text('#iss'), ISSUER, 'OIDC_CLAIM_iss');
  const sub = await text('#sub');
  assert(UUID.test(sub || ''), `OIDC_CLAIM_sub ${JSON.stringify(sub)} is not a UUID`);
  const email = await text('#email');
  if (typeof args.email === 'string') eq(email, args.email, 'OIDC_CLAIM_email');
  else assert(email && email.includes('@'), `OIDC_CLAIM_email ${JSON.stringify(email)}`);
  if (typeof args['expect-group'] === 'string') {
    const groups = (await text('#groups')) || '';
    assert(groups.split(',').includes(args['expect-group']), `OIDC_CLAIM_groups ${JSON.stringify(groups)} lacks ${args['expect-group']}`);
  }
}

async function main() {
  console.log(`# mod_auth_openidc at ${APACHE}, registrar at ${ISSUER}`);
  const browser = await puppeteer.launch({
    // A busy two-core CI machine: Chromium may take a while to start.
    timeout: 120000,
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  try {
    page = await browser.newPage();
    page.setDefaultTimeout(20000);
    page.setDefaultNavigationTimeout(20000);
    page.on('request', (req) => {
      if (req.isNavigationRequest() && req.frame() === page.mainFrame()) {
        navigations.push({ method: req.method(), url: req.url(), status: undefined, request: req });
      }
    });
    page.on('console', (m) => {
      if (m.type() === 'error') complaints.push(`console: ${m.text().trim().slice(0, 300)}`);
    });
    page.on('requestfailed', (r) => complaints.push(`request failed: ${short(r.url())} ${r.failure()?.errorText ?? ''}`));
    page.on('response', (resp) => {
      const n = navigations.findLast((x) => x.request === resp.request());
      if (n) n.status = resp.status();
    });

    // 1. Not logged in anywhere: Apache sends the browser to registrar.
    const first = await check('GET /protected/ → mod_auth_openidc → registrar authorize → registrar login page', async () => {
      const { from } = await goto(PROTECTED);
      assert(at(page.url(), ISSUER, '/login'), `ended at ${page.url()}: ${await bodyText()} [${trace(from)}]`);
      return { from };
    });
    await check('the authorization request: code flow with PKCE S256, the configured scopes, Apache\'s redirect_uri', () => {
      const { from } = need(first, 'the redirect to registrar');
      const auth = navigations.slice(from).find((n) => at(n.url, ISSUER, '/oauth2/authorize'));
      assert(auth, `no request to ${ISSUER}/oauth2/authorize [${trace(from)}]`);
      const q = new URL(auth.url).searchParams;
      eq(q.get('response_type'), 'code', 'response_type');
      eq(q.get('code_challenge_method'), 'S256', 'code_challenge_method');
      assert(q.get('code_challenge'), 'no code_challenge');
      eq(q.get('redirect_uri'), `${APACHE}/protected/redirect_uri`, 'redirect_uri');
      const scopes = (q.get('scope') || '').split(' ');
      for (const s of ['openid', 'profile', 'email', 'groups']) assert(scopes.includes(s), `scope ${q.get('scope')} lacks ${s}`);
      assert(q.get('state') && q.get('nonce'), 'no state or nonce');
      const login = navigations.slice(from).find((n) => at(n.url, ISSUER, '/login'));
      const rt = new URL(login.url).searchParams.get('return_to') || '';
      assert(rt.includes('/oauth2/authorize'), `return_to ${JSON.stringify(rt)} is not the authorize URL`);
    });

    // 2. Log in on registrar's page: back at /protected/ with the claims.
    const loggedIn = await check('log in on registrar\'s page → back at /protected/ showing the user and claims', async () => {
      need(first, 'the login page');
      const from = await login();
      await protectedPageShowsUser(from);
      const cb = navigations.slice(from).find((n) => at(n.url, APACHE, '/protected/redirect_uri'));
      assert(cb, `no callback to Apache's redirect_uri [${trace(from)}]`);
      const q = new URL(cb.url).searchParams;
      assert(q.get('code') && q.get('state'), `callback without code/state: ${short(cb.url)}`);
      eq(q.get('iss'), ISSUER, 'iss on the callback');
      return true;
    });
    await check('the Apache session holds: /protected/ again is served without a trip to registrar', async () => {
      need(loggedIn, 'a login');
      const { from } = await goto(PROTECTED);
      assert(navigations.slice(from).every((n) => !n.url.startsWith(ISSUER)), `went to registrar again [${trace(from)}]`);
      await protectedPageShowsUser(from);
    });
    await check('single sign-on: registrar\'s own /account is logged in as the user', async () => {
      need(loggedIn, 'a login');
      const { from } = await goto(`${ISSUER}/account`);
      assert(at(page.url(), ISSUER, '/account'), `ended at ${page.url()} [${trace(from)}]`);
      assert((await bodyText()).includes(USERNAME), `the account page does not name ${USERNAME}`);
    });

    // 3. Logout through mod_auth_openidc: registrar's end_session, both sessions end.
    const loggedOut = await check('logout at /protected/redirect_uri?logout=… → registrar end_session → Apache\'s logged-out page', async () => {
      need(loggedIn, 'a login');
      const { from } = await goto(`${APACHE}/protected/redirect_uri?logout=${encodeURIComponent(LOGGED_OUT)}`);
      const end = navigations.slice(from).find((n) => at(n.url, ISSUER, '/oauth2/logout'));
      assert(end, `mod_auth_openidc did not go to registrar's end_session endpoint [${trace(from)}]`);
      const q = new URL(end.url).searchParams;
      assert(q.get('id_token_hint'), 'end_session without id_token_hint');
      eq(q.get('post_logout_redirect_uri'), LOGGED_OUT, 'post_logout_redirect_uri');
      assert(page.url().startsWith(LOGGED_OUT), `ended at ${page.url()}: ${await bodyText()} [${trace(from)}]`);
      assert(await page.$('#logged-out'), 'not the logged-out page');
      return true;
    });
    await check('after the logout registrar\'s session is over: /account goes to /login', async () => {
      need(loggedOut, 'the logout');
      const { from } = await goto(`${ISSUER}/account`);
      assert(at(page.url(), ISSUER, '/login'), `ended at ${page.url()} [${trace(from)}]`);
    });
    const again = await check('after the logout /protected/ needs a login again (registrar\'s login page)', async () => {
      need(loggedOut, 'the logout');
      const { from } = await goto(PROTECTED);
      assert(at(page.url(), ISSUER, '/login'), `ended at ${page.url()}: ${await bodyText()} [${trace(from)}]`);
      return true;
    });

    // 4. Back-channel logout: a logout at registrar ends the Apache session.
    if (args.backchannel) {
      const second = await check('log in again (through registrar\'s login page) → /protected/', async () => {
        need(again, 'the login page');
        const from = await login();
        await protectedPageShowsUser(from);
        return true;
      });
      const rpLogout = await check('log out on registrar\'s web console (/account, form#logout)', async () => {
        need(second, 'the second login');
        await goto(`${ISSUER}/account`);
        assert(await page.$('form#logout button'), `no logout button at ${page.url()}`);
        const from = navigations.length;
        await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('form#logout button')]);
        const { from: f2 } = await goto(`${ISSUER}/account`);
        assert(at(page.url(), ISSUER, '/login'), `still logged in at registrar after the logout [${trace(from)} | ${trace(f2)}]`);
        return true;
      });
      await check('back-channel logout: the Apache session ended too (/protected/ → registrar login page)', async () => {
        need(rpLogout, 'the logout at registrar');
        // The logout token is delivered server to server; give it a moment.
        let last = '';
        for (let i = 0; i < 10; i++) {
          const { from } = await goto(PROTECTED);
          if (at(page.url(), ISSUER, '/login')) return;
          last = `${page.url()} [${trace(from)}]`;
          await new Promise((r) => setTimeout(r, 300));
        }
        throw new Error(`/protected/ is still served after the logout at registrar: ${last}`);
      });
    }
  } finally {
    await browser.close();
  }
}

try {
  await main();
} catch (e) {
  failed++;
  console.log(`not ok - the driver itself: ${e && e.stack ? e.stack : e}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
