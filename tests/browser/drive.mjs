// registrar's web console in a real browser: headless Debian Chromium driven
// by puppeteer-core, every page audited with axe-core.
//
//   node drive.mjs --url http://127.0.0.1:PORT --admin admin --admin-password PW
//                  --maildir DIR --oidc-issuer http://127.0.0.1:PORT2 --oidc-name uni
//                  --shots DIR [--max-failed 3] [--public-url URL] [--report FILE]
//                  [--chromium /usr/bin/chromium] [--only flow,flow] [--timeout SECS]
//
// The flows follow the web console's page contract (URLs, form fields,
// element ids, texts, mails): each checks what a person sees in the browser
// and what it did, through the JSON API as the administrator. Every page is
// screenshotted to --shots and audited with axe-core. Names made by a run
// carry a run prefix, so runs can repeat against one server.
// Prints one line per check, `ok N - ...` or `not ok N - ... -- detail`,
// lines starting with `#` for context (the axe table at the end), and last
// `P passed, F failed`; exits 1 when anything failed. --only runs some flows
// (names in FLOWS at the end); --report writes what the run made (users,
// the API key, secrets typed) as JSON for tests/api/web_console.rs.
//
// Needs: `npm ci` here (no browser download: puppeteer-core never fetches
// one), Chromium at --chromium, `curl`, the SMTP sink writing to --maildir
// (tests/api/web_console.rs starts aiosmtpd), and the test OIDC provider
// (tests/oidc/provider.mjs) at --oidc-issuer.

import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import puppeteer from 'puppeteer-core';

import { links, Maildir } from './mail.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const AXE_SOURCE = fs.readFileSync(path.join(HERE, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    'public-url': { type: 'string' },
    admin: { type: 'string', default: 'admin' },
    'admin-password': { type: 'string' },
    maildir: { type: 'string' },
    'oidc-issuer': { type: 'string' },
    'oidc-name': { type: 'string' },
    shots: { type: 'string' },
    'max-failed': { type: 'string', default: '3' },
    report: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    only: { type: 'string' },
    timeout: { type: 'string', default: '540' },
  },
  strict: true,
});
for (const required of ['url', 'admin-password', 'maildir', 'oidc-issuer', 'oidc-name', 'shots']) {
  if (!args[required]) {
    console.error(`missing --${required}; see the header of drive.mjs`);
    process.exit(2);
  }
}

const APP = args.url.replace(/\/$/, '');
const APP_ORIGIN = new URL(APP).origin;
/** Links in mails start with the server's `public_url`. */
const PUBLIC = (args['public-url'] ?? APP).replace(/\/$/, '');
const ISSUER = args['oidc-issuer'].replace(/\/$/, '');
const ISSUER_ORIGIN = new URL(ISSUER).origin;
const MAX_FAILED = Number(args['max-failed']);
const SHOTS = args.shots;
fs.mkdirSync(SHOTS, { recursive: true });

/** Names made in this run carry this, so a run can repeat against one server. */
const RUN = `r${Date.now().toString(36).slice(-6)}`;
const STEP_TIMEOUT = 15000;

// ---------------------------------------------------------------------------
// Reporting

let passed = 0;
let failed = 0;
const axeRows = [];
/** What the run made that the Rust side checks afterwards (and secrets it scans logs for). */
const report = { run: RUN, secrets: [], users: {}, api_key_prefix: null, revoked_session: null };

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

const note = (text) => console.log(`# ${text}`);

function checkEq(name, actual, expected) {
  return check(name, actual === expected, `expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

function checkIncludes(name, text, wanted) {
  return check(name, typeof text === 'string' && text.includes(wanted), `expected the text "${wanted}" in: ${text}`);
}

function secret(kind, value) {
  report.secrets.push({ kind, value });
  return value;
}

/** A password the policy takes (long, not guessable), recorded for the logs scan. */
function newPassword(label) {
  return secret('password', `${label}-Harbor-${crypto.randomBytes(9).toString('base64url')}-Quill`);
}

// ---------------------------------------------------------------------------
// The JSON API, as the administrator (or another bearer)

let adminToken = '';

async function api(method, urlPath, { token = adminToken, body } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(APP + urlPath, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    redirect: 'manual',
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, json, text };
}

async function apiLogin(username, password) {
  const r = await api('POST', '/api/v1/auth/login', { token: null, body: { username, password } });
  return { status: r.status, token: r.json?.access_token ?? null, code: r.json?.error?.code };
}

async function apiUser(username) {
  const r = await api('GET', `/api/v1/users/${encodeURIComponent(username)}`);
  if (r.status !== 200) throw new Error(`GET /api/v1/users/${username}: ${r.status} ${r.text}`);
  return r.json;
}

/** A user made through the API (the flow under test is elsewhere). */
async function createUser(name, extra = {}) {
  const username = `${RUN}-${name}`;
  const password = newPassword(name);
  const email = `${username}@example.org`;
  const r = await api('POST', '/api/v1/users', {
    body: { username, email, password, first_name: name[0].toUpperCase() + name.slice(1), last_name: 'Tester', verified: true, ...extra },
  });
  if (r.status !== 201) throw new Error(`creating ${username}: ${r.status} ${r.text}`);
  report.users[name] = username;
  return { username, password, email };
}

async function apiOk(method, urlPath, body, want = [200, 201, 204]) {
  const r = await api(method, urlPath, { body });
  if (!want.includes(r.status)) throw new Error(`${method} ${urlPath}: ${r.status} ${r.text}`);
  return r.json;
}

/** `curl` with an API key, as a script would use it. */
function curlWithKey(key, urlPath) {
  return new Promise((resolve, reject) => {
    execFile(
      'curl',
      ['-sS', '--max-time', '10', '-H', `Authorization: Bearer ${key}`, '-w', '\n%{http_code}', APP + urlPath],
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`curl: ${err.message} ${stderr}`));
        const cut = stdout.lastIndexOf('\n');
        let json = null;
        try {
          json = JSON.parse(stdout.slice(0, cut));
        } catch {
          // keep null
        }
        return resolve({ status: Number(stdout.slice(cut + 1)), json, text: stdout.slice(0, cut) });
      },
    );
  });
}

// ---------------------------------------------------------------------------
// Browser tabs: every request, console error and page error is watched

let browser;
/** The tab a failing flow was on, for its screenshot. */
let lastTab = null;

class Tab {
  /**
   * A new page in `context`. Requests to origins other than the app's (and
   * `allow`) are recorded and never sent; console errors and uncaught page
   * errors on the app's pages are recorded. `drain()` hands them over.
   */
  static async open(context, { allow = [], viewport = { width: 1280, height: 900 } } = {}) {
    const page = await context.newPage();
    const tab = new Tab(page, new Set([APP_ORIGIN, ...allow.map((u) => new URL(u).origin)]));
    await page.setViewport(viewport);
    page.setDefaultTimeout(STEP_TIMEOUT);
    page.setDefaultNavigationTimeout(STEP_TIMEOUT);
    await page.setRequestInterception(true);
    page.on('request', (req) => tab.#onRequest(req));
    page.on('response', (res) => {
      if (res.request().isNavigationRequest() && res.frame() === page.mainFrame()) tab.documents.add(res.url());
    });
    page.on('console', (msg) => tab.#onConsole(msg));
    page.on('pageerror', (err) => tab.problems.push(`page error on ${page.url()}: ${err.message}`));
    lastTab = tab;
    return tab;
  }

  constructor(page, allowed) {
    this.page = page;
    this.allowed = allowed;
    this.problems = [];
    /** Main-frame document URLs (their own error status is checked by the flows). */
    this.documents = new Set();
  }

  #onRequest(req) {
    const url = req.url();
    if (!/^https?:/.test(url) || this.allowed.has(new URL(url).origin)) {
      req.continue();
      return;
    }
    // Never sent. Blamed on the app when its page (or its navigation) asked for it;
    // the provider's pages load web fonts, which is not the app's doing.
    const from = /^https?:/.test(this.page.url()) ? new URL(this.page.url()).origin : APP_ORIGIN;
    if (from === APP_ORIGIN || req.isNavigationRequest()) {
      this.problems.push(`request to another origin from ${this.page.url()}: ${req.method()} ${url}`);
    }
    req.abort('blockedbyclient');
  }

  #onConsole(msg) {
    if (msg.type() !== 'error' && msg.type() !== 'assert') return;
    const where = msg.location()?.url || this.page.url();
    if (/^https?:/.test(where) && new URL(where).origin !== APP_ORIGIN) return; // the provider's pages
    const text = msg.text();
    const failed = text.startsWith('Failed to load resource: the server responded with a status of');
    // The page's own status is checked by the flows; the browser's favicon
    // request by its own check (Chromium asks once per run, on whatever page).
    if (failed && (this.documents.has(where) || /^https?:/.test(where) && new URL(where).pathname === '/favicon.ico')) {
      return;
    }
    this.problems.push(`console error on ${this.page.url()}: ${text} (at ${where})`);
  }

  drain() {
    const p = this.problems;
    this.problems = [];
    return p;
  }

  url() {
    return new URL(this.page.url());
  }

  async goto(target, options = {}) {
    lastTab = this;
    return this.page.goto(target.startsWith('http') ? target : APP + target, { waitUntil: 'load', ...options });
  }

  /** Normalised text of the first element matching `selector`, or null. */
  async text(selector) {
    return this.page.evaluate((sel) => {
      const e = document.querySelector(sel);
      return e ? (e.innerText ?? e.textContent).replace(/\s+/g, ' ').trim() : null;
    }, selector);
  }

  async mainText() {
    return (await this.text('main')) ?? (await this.text('body')) ?? '';
  }

  async visible(selector) {
    return this.page.evaluate((sel) => {
      const e = document.querySelector(sel);
      return !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
    }, selector);
  }

  async count(selector) {
    return this.page.evaluate((sel) => document.querySelectorAll(sel).length, selector);
  }

  /** Fills fields of the form `formSel` by name, as a person would (typing, clicking). */
  async fill(formSel, fields) {
    for (const [name, value] of Object.entries(fields)) {
      const sel = `${formSel} [name="${name}"]`;
      const el = await this.page.$(sel);
      if (!el) throw new Error(`${this.page.url()}: no field ${sel}`);
      const kind = await el.evaluate((e) => (e.tagName === 'SELECT' ? 'select' : e.type));
      if (kind === 'select') {
        const picked = await this.page.select(sel, value);
        if (!picked.includes(value)) throw new Error(`${this.page.url()}: ${sel} has no option ${value}`);
      } else if (kind === 'checkbox' || kind === 'radio') {
        if ((await el.evaluate((e) => e.checked)) !== Boolean(value)) await el.click();
      } else {
        await el.evaluate((e) => { e.value = ''; });
        await el.type(String(value));
      }
    }
  }

  /**
   * Clicks the submit button labelled `label` (the first one when null) in
   * `scopeSel` (a form, or any element holding forms, such as a table row)
   * and waits for the page it leads to; answers its response. A form with no
   * button at all (`label` null) is submitted as Enter in a field would.
   */
  async submit(scopeSel, label = null) {
    const handle = await this.page.evaluateHandle((sel, want) => {
      const scope = document.querySelector(sel);
      if (!scope) return `nothing matches ${sel}`;
      const candidates = scope.tagName === 'FORM' ? [...scope.elements] : [...scope.querySelectorAll('button, input')];
      const buttons = candidates.filter(
        (e) => (e.tagName === 'BUTTON' && e.type === 'submit') || (e.tagName === 'INPUT' && e.type === 'submit'),
      );
      if (want === null && buttons.length === 0 && scope.tagName === 'FORM') return scope;
      const labelOf = (b) => (b.tagName === 'BUTTON' ? b.textContent : b.value).replace(/\s+/g, ' ').trim();
      const b = want === null ? buttons[0] : buttons.find((x) => labelOf(x) === want);
      return b ?? `no button "${want}" in ${sel} (buttons: ${buttons.map((x) => `"${labelOf(x)}"`).join(', ') || 'none'})`;
    }, scopeSel, label);
    const el = handle.asElement();
    if (!el) throw new Error(`${this.page.url()}: ${await handle.jsonValue()}`);
    if (await el.evaluate((e) => e.tagName === 'FORM')) return this.#andWait(() => el.evaluate((f) => f.requestSubmit()));
    return this.#andWait(() => el.click());
  }

  /** Clicks the element `selector` (a link) and waits for the page it leads to. */
  async click(selector) {
    const el = await this.page.$(selector);
    if (!el) throw new Error(`${this.page.url()}: nothing matches ${selector}`);
    return this.#andWait(() => el.click());
  }

  async #andWait(action) {
    lastTab = this;
    const [resp] = await Promise.all([this.page.waitForNavigation({ waitUntil: 'load' }), action()]);
    return resp;
  }
}

async function newContext() {
  return browser.createBrowserContext();
}

async function logout(tab) {
  return tab.submit('form#logout', 'Log out');
}

/** Logs in through `form#login` (from /login, or the page the tab is on). */
async function loginForm(tab, username, password, { returnTo = null, navigate = true } = {}) {
  if (navigate) await tab.goto(returnTo === null ? '/login' : `/login?return_to=${encodeURIComponent(returnTo)}`);
  await tab.fill('form#login', { username, password });
  return tab.submit('form#login', 'Log in');
}

// ---------------------------------------------------------------------------
// The audit of one page: contract structure, screenshot, axe, browser problems

const MANAGER_LINKS = ['/admin/users', '/admin/groups', '/admin/projects'];
const USER_LINKS = ['/account', '/account/sessions', '/account/api-keys', '/account/identities', '/account/projects', '/account/log'];

async function runAxe(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    // Evaluated through DevTools: the page's CSP (no inline script) stays in force.
    await page.evaluate(AXE_SOURCE);
  }
  return page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] });
    const violations = result.violations.map((v) => ({
      id: v.id,
      impact: v.impact ?? 'minor',
      help: v.help,
      count: v.nodes.length,
      nodes: v.nodes.slice(0, 4).map((n) => `${n.target.join(' ')}${n.failureSummary ? ` (${n.failureSummary.split('\n').slice(1, 2).join('').trim()})` : ''}`),
    }));
    return { violations, passed: result.passes.length };
  });
}

/** What the contract says of every page, read from the DOM. */
function structureProblems(who) {
  const out = [];
  const h1s = document.querySelectorAll('main#main h1');
  if (h1s.length !== 1) out.push(`main#main has ${h1s.length} h1 (want 1)`);
  if (!document.documentElement.lang) out.push('no lang on <html>');
  // Attributes, not properties: a field named "action" or "method" shadows those.
  for (const f of document.forms) {
    if ((f.getAttribute('method') ?? '').toLowerCase() === 'post' && !f.querySelector('input[type=hidden][name=csrf]')) {
      out.push(`form ${f.getAttribute('id') ? `#${f.getAttribute('id')}` : f.getAttribute('action')} POSTs without a hidden csrf input`);
    }
  }
  for (const s of document.scripts) {
    if (!s.src) out.push('an inline <script>');
    else if (new URL(s.src).origin !== location.origin || !new URL(s.src).pathname.startsWith('/assets/')) out.push(`script from ${s.src}`);
  }
  for (const l of document.querySelectorAll('link[rel~=stylesheet]')) {
    if (new URL(l.href).origin !== location.origin || !new URL(l.href).pathname.startsWith('/assets/')) out.push(`stylesheet from ${l.href}`);
  }
  if (who) {
    const hrefs = new Set([...document.querySelectorAll('header a[href]')].map((a) => new URL(a.href).pathname));
    const want = who === 'admin'
      ? ['/account', '/account/sessions', '/account/api-keys', '/account/identities', '/account/projects', '/account/log',
        '/admin/users', '/admin/groups', '/admin/projects', '/admin/change-log']
      : ['/account', '/account/sessions', '/account/api-keys', '/account/identities', '/account/projects', '/account/log'];
    const missing = want.filter((h) => !hrefs.has(h));
    if (missing.length) out.push(`header lacks links to ${missing.join(', ')}`);
    if (who === 'user') {
      const extra = [...hrefs].filter((h) => h.startsWith('/admin'));
      if (extra.length) out.push(`a plain user's header links to ${extra.join(', ')}`);
    }
    const logout = document.querySelector('form#logout');
    if (!logout) out.push('no form#logout');
    else {
      const action = new URL(logout.getAttribute('action') ?? '', location.href).pathname;
      if ((logout.getAttribute('method') ?? '').toLowerCase() !== 'post' || action !== '/logout') out.push('form#logout is not POST /logout');
      if (![...logout.querySelectorAll('button')].some((b) => b.textContent.trim() === 'Log out')) out.push('form#logout has no "Log out" button');
    }
  }
  return out;
}

/**
 * Audits the page `tab` shows as `name`: status and Cache-Control of `resp`,
 * the contract's structure (`who`: 'admin' | 'user' | null for the header
 * nav), a full-page screenshot, axe (serious or critical fail), and the
 * browser problems since the last audit.
 */
async function audit(tab, name, { resp = null, status = 200, who = null } = {}) {
  const { page } = tab;
  // Mail links' tokens stay out of the output.
  const label = `${name} (${tab.url().pathname}${tab.url().search.replace(/token=[^&]+/, 'token=...')})`;
  if (resp) {
    const okStatus = Array.isArray(status) ? status.includes(resp.status()) : resp.status() === status;
    check(`${label}: status ${status}`, okStatus, `got ${resp.status()}`);
    const cc = resp.headers()['cache-control'] ?? '';
    check(`${label}: Cache-Control no-store`, /no-store/.test(cc), `Cache-Control: ${cc || '(none)'}`);
  }
  const problems = await page.evaluate(structureProblems, who);
  check(`${label}: page structure`, problems.length === 0, problems.join('; '));
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const { violations, passed: rulesPassed } = await runAxe(page);
  const counts = { critical: 0, serious: 0, moderate: 0, minor: 0 };
  for (const v of violations) counts[v.impact] = (counts[v.impact] ?? 0) + 1;
  axeRows.push({ name, counts, rulesPassed });
  for (const v of violations.filter((x) => x.impact === 'moderate' || x.impact === 'minor')) {
    note(`axe ${name}: ${v.impact} ${v.id} (${v.help}) on ${v.count}: ${v.nodes.join(' | ')}`);
  }
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(
    `${label}: axe ran (${rulesPassed} rules passed), no serious or critical violation`,
    bad.length === 0 && rulesPassed > 0,
    bad.map((v) => `${v.impact} ${v.id} (${v.help}) on ${v.count}: ${v.nodes.join(' | ')}`).join('; ') || 'axe passed no rule',
  );
  const seen = tab.drain();
  check(`${label}: no console error, page error or request to another origin`, seen.length === 0, seen.join('; '));
}

// ---------------------------------------------------------------------------
// Mail

let maildir;

/** The one link of `mail` starting with `prefix`, checked to stand on its own line. */
function mailLink(mail, prefix, what) {
  const found = links(mail.body).filter((l) => l.url.startsWith(prefix));
  check(`${what}: the mail has a link ${prefix}...`, found.length > 0, `body: ${mail.body}`);
  if (found.length === 0) throw new Error(`${what}: no link in the mail`);
  check(`${what}: the link stands on its own line`, found[0].ownLine, `body: ${mail.body}`);
  const token = new URL(found[0].url).searchParams.get('token');
  if (token) secret('email_token', token);
  return found[0].url;
}

// ---------------------------------------------------------------------------
// The flows

/** Public pages, redirects of a logged-out browser, return_to, the session cookie. */
async function publicPages() {
  const context = await newContext();
  try {
    const tab = await Tab.open(context);
    await tab.goto('/');
    checkEq('GET / in a browser, logged out, ends on /login', tab.url().pathname, '/login');
    const resp = await tab.goto('/account/sessions');
    checkEq('a protected page sends a logged-out browser to /login', tab.url().pathname, '/login');
    checkEq('... with return_to naming the page', tab.url().searchParams.get('return_to'), '/account/sessions');
    await audit(tab, 'login', { resp });
    const form = await tab.page.evaluate(() => {
      const f = document.querySelector('form#login');
      if (!f) return null;
      const v = (n) => f.querySelector(`[name="${n}"]`);
      return {
        method: f.method, action: new URL(f.action).pathname, username: !!v('username'), password: v('password')?.type,
        returnTo: v('return_to')?.type === 'hidden' ? v('return_to').value : null, csrf: v('csrf')?.type,
      };
    });
    check('form#login: POST /login with username, password, hidden return_to and csrf', form !== null
      && form.method === 'post' && form.action === '/login' && form.username && form.password === 'password'
      && form.returnTo === '/account/sessions' && form.csrf === 'hidden', JSON.stringify(form));
    const oidc = await tab.page.$$eval('a.oidc-login', (as) => as.map((a) => ({ text: a.textContent.trim(), href: a.href })));
    check('/login offers the OIDC provider as a.oidc-login "Log in with ..."', oidc.some((a) => a.href.includes(`/api/v1/auth/oidc/${args['oidc-name']}/login`) && a.text.startsWith('Log in with ')), JSON.stringify(oidc));
    const icon = await tab.page.$eval('link[rel~=icon]', (l) => l.href).catch(() => null);
    const favicon = icon ?? `${APP}/favicon.ico`;
    const iconStatus = (await fetch(favicon)).status;
    check(`the page icon ${new URL(favicon).pathname} loads (a 404 is a console error on every first visit)`, iconStatus < 400, `status ${iconStatus}`);
    const forgot = await tab.page.$$eval('a', (as) => as.filter((a) => a.textContent.trim() === 'Forgot your password?').map((a) => new URL(a.href).pathname));
    check('/login links "Forgot your password?" to /forgot-password (email is on)', forgot.includes('/forgot-password'), JSON.stringify(forgot));

    const wrong = await loginForm(tab, `${RUN}-nobody`, 'not the password of anybody at all', { navigate: false });
    checkEq('an unknown user: 401', wrong.status(), 401);
    checkEq('an unknown user: #form-error "Wrong username or password."', await tab.text('#form-error'), 'Wrong username or password.');
    check('#form-error has role=alert', (await tab.count('#form-error[role=alert]')) === 1);
    await audit(tab, 'login-wrong-password', { resp: wrong, status: 401 });

    // return_to survives the failed try: the login lands on the page asked for.
    const ok = await loginForm(tab, args.admin, args['admin-password'], { returnTo: '/account/sessions' });
    checkEq('logging in with return_to=/account/sessions lands there', tab.url().pathname, '/account/sessions');
    checkEq('... status 200', ok.status(), 200);
    const cookies = await tab.page.cookies();
    const session = cookies.find((c) => /registrar_session$/.test(c.name));
    check('the session cookie is HttpOnly and SameSite=Lax', session?.httpOnly === true && session?.sameSite === 'Lax', JSON.stringify(cookies.map(({ name, httpOnly, sameSite }) => ({ name, httpOnly, sameSite }))));
    await tab.goto('/');
    checkEq('GET / in a browser, logged in, ends on /account', tab.url().pathname, '/account');
    const out = await logout(tab);
    checkEq('Log out lands on /login', tab.url().pathname, '/login');
    checkIncludes('... with the flash "You have logged out."', await tab.text('p.flash[role=status]'), 'You have logged out.');
    await audit(tab, 'login-after-logout', { resp: out });
    await tab.goto('/account');
    checkEq('after logging out, /account asks for a login again', tab.url().pathname, '/login');

    for (const evil of ['https://evil.example/steal', '//evil.example/steal']) {
      await loginForm(tab, args.admin, args['admin-password'], { returnTo: evil });
      check(`return_to=${evil} falls back to /account`, tab.url().origin === APP_ORIGIN && tab.url().pathname === '/account', tab.page.url());
      await logout(tab);
    }
    tab.drain();

    const anon = await Tab.open(await newContext());
    try {
      const fp = await anon.goto('/forgot-password');
      check('/forgot-password has the email field and "Send reset link"', (await anon.count('form input[name=email]')) === 1
        && (await anon.page.$$eval('form button', (bs) => bs.some((b) => b.textContent.trim() === 'Send reset link'))));
      await audit(anon, 'forgot-password', { resp: fp });
      const bogus = await anon.goto('/reset-password?token=not-a-real-token');
      checkIncludes('/reset-password with a made-up token: "This link is invalid or has expired."', await anon.mainText(), 'This link is invalid or has expired.');
      await audit(anon, 'reset-password-invalid', { resp: bogus, status: 400 });
      const verify = await anon.goto('/verify-email?token=not-a-real-token');
      await audit(anon, 'verify-email-invalid', { resp: verify, status: [200, 400] });
    } finally {
      await anon.page.browserContext().close();
    }
  } finally {
    await context.close();
  }
}

/**
 * The issue's main flow: an administrator creates a user without a password,
 * the welcome mail's link sets one, the user makes an API key (curl uses it)
 * and revokes the session of a second browser.
 */
async function welcomeAndSelfService() {
  const adminCtx = await newContext();
  const userCtx = await newContext();
  const otherCtx = await newContext();
  try {
    const admin = await Tab.open(adminCtx);
    const resp = await loginForm(admin, args.admin, args['admin-password']);
    checkEq('the admin logs in through /login and lands on /account', admin.url().pathname, '/account');
    check('/account shows its h1', await admin.visible('main#main h1'));
    await audit(admin, 'account-admin', { resp, who: 'admin' });

    const username = `${RUN}-wendy`;
    const email = `${RUN}.wendy@example.org`;
    report.users.wendy = username;
    const form = await admin.goto('/admin/users/new');
    await audit(admin, 'admin-users-new', { resp: form, who: 'admin' });
    await admin.fill('form#new-user', { username, email, first_name: 'Wendy', last_name: 'Welcome' });
    const created = await admin.submit('form#new-user', 'Create user');
    checkEq('Create user (no password) leads to /admin/users/<username>', decodeURIComponent(admin.url().pathname), `/admin/users/${username}`);
    check('... and shows #verify (the email is not verified yet)', (await admin.count('#verify')) === 1);
    check('... with a success flash', await admin.visible('p.flash[role=status]'), await admin.mainText());
    await audit(admin, 'admin-user-detail-new', { resp: created, who: 'admin' });
    const made = await apiUser(username);
    check('the API shows the new user, email as typed, not verified', made.email === email && made.verified === false && made.enabled === true, JSON.stringify(made));

    const welcome = await maildir.waitFor({ to: email });
    checkEq('the welcome mail: subject', welcome.subject, 'Your registrar account');
    const link = mailLink(welcome, `${PUBLIC}/reset-password?token=`, 'the welcome mail');

    const user = await Tab.open(userCtx);
    const choose = await user.goto(link);
    checkIncludes('the welcome link shows "Choose your password"', await user.text('main#main h1'), 'Choose your password');
    check('... a form with the hidden token, password and password_confirm', (await user.count('input[type=hidden][name=token]')) === 1
      && (await user.count('input[type=password][name=password]')) === 1 && (await user.count('input[type=password][name=password_confirm]')) === 1);
    await audit(user, 'reset-password-welcome', { resp: choose });
    const password = newPassword('wendy');
    await user.fill('form:has(input[name=token])', { password, password_confirm: password });
    const set = await user.submit('form:has(input[name=token])', 'Set password');
    checkIncludes('setting the password: "Your password has been set."', await user.mainText(), 'Your password has been set.');
    await audit(user, 'reset-password-done', { resp: set });
    check('the welcome link verified the email', (await apiUser(username)).verified === true);

    await user.click('main a[href$="/login"]');
    const login = await loginForm(user, username, password, { navigate: false });
    checkEq('the new user logs in and lands on /account', user.url().pathname, '/account');
    check('/account shows its h1 and the username', (await user.visible('main#main h1')) && (await user.mainText()).includes(username), await user.mainText());
    checkEq('#email-status says verified', await user.text('#email-status'), 'verified');
    await audit(user, 'account-user', { resp: login, who: 'user' });

    // An API key: shown once, then only its row.
    const keys = await user.goto('/account/api-keys');
    await audit(user, 'account-api-keys', { resp: keys, who: 'user' });
    await user.fill('form#new-key', { name: 'laptop script' });
    const made2 = await user.submit('form#new-key', 'Create key');
    const key = await user.text('code#new-api-key');
    check('the new key is shown once in code#new-api-key', /^rk_[A-Za-z0-9]+_[A-Za-z0-9_-]+$/.test(key ?? ''), `got ${key}`);
    if (key) {
      secret('api_key', key);
      report.api_key_prefix = key.split('_')[1];
    }
    checkEq('... with a #copy-key "Copy" button', await user.text('#copy-key'), 'Copy');
    await userCtx.overridePermissions(APP_ORIGIN, ['clipboard-read', 'clipboard-write', 'clipboard-sanitized-write']);
    await user.page.bringToFront();
    await user.page.click('#copy-key');
    const copied = await user.page.evaluate(() => navigator.clipboard.readText().catch((e) => `clipboard: ${e.message}`));
    checkEq('Copy puts the key on the clipboard', copied, key);
    await audit(user, 'account-api-keys-created', { resp: made2, who: 'user' });
    await user.page.reload({ waitUntil: 'load' });
    check('after a reload the key is gone from the page', (await user.count('#new-api-key')) === 0 && !(key && (await user.page.content()).includes(key)), 'the key is still in the page');
    checkEq('... and #api-keys lists one key (the reload created none)', await user.count('#api-keys tr[data-key-id]'), 1);
    check('... named "laptop script"', ((await user.text('#api-keys tr[data-key-id]')) ?? '').includes('laptop script'));
    user.drain();
    const viaCurl = await curlWithKey(key, '/api/v1/users/me');
    check('curl with the key as a Bearer token: 200 and the username', viaCurl.status === 200 && viaCurl.json?.username === username, `${viaCurl.status} ${viaCurl.text}`);

    // A second browser, then its session revoked from the first.
    const other = await Tab.open(otherCtx);
    await loginForm(other, username, password);
    checkEq('a second browser (its own context) logs in as the same user', other.url().pathname, '/account');
    const sessionsPage = await user.goto('/account/sessions');
    const rows = await user.page.$$eval('#sessions tr[data-session-id]', (trs) => trs.map((tr) => ({
      id: tr.dataset.sessionId,
      current: /this session/i.test(tr.textContent),
      revoke: !!tr.querySelector('form button') && [...tr.querySelectorAll('form button')].some((b) => b.textContent.trim() === 'Revoke'),
    })));
    checkEq('/account/sessions lists both sessions', rows.length, 2);
    checkEq('... exactly one marked "this session"', rows.filter((r) => r.current).length, 1);
    check('... the other one with a "Revoke" button', rows.some((r) => !r.current && r.revoke), JSON.stringify(rows));
    check('... and form#revoke-others "Log out everywhere else"', (await user.text('form#revoke-others button')) === 'Log out everywhere else');
    await audit(user, 'account-sessions', { resp: sessionsPage, who: 'user' });
    const target = rows.find((r) => !r.current);
    if (!target) throw new Error('no other session to revoke');
    report.revoked_session = target.id;
    await user.submit(`#sessions tr[data-session-id="${target.id}"]`, 'Revoke');
    checkEq('Revoke leads back to /account/sessions', user.url().pathname, '/account/sessions');
    checkEq('... where the revoked session is gone', await user.count(`#sessions tr[data-session-id="${target.id}"]`), 0);
    const listed = await api('GET', `/api/v1/users/${username}/sessions`);
    const revoked = (listed.json?.items ?? []).find((s) => s.id === target.id);
    check('the API shows the session revoked', listed.status === 200 && (!revoked || revoked.revoked_at), JSON.stringify(listed.json));
    await other.goto('/account');
    checkEq("the second browser's next page is /login", other.url().pathname, '/login');
    checkEq('... with return_to=/account', other.url().searchParams.get('return_to'), '/account');
    user.drain();
    other.drain();
  } finally {
    await Promise.all([adminCtx.close(), userCtx.close(), otherCtx.close()]);
  }
}

/** Forgot password: mail, link, new password; the link once; unknown addresses alike. */
async function forgotPassword() {
  const u = await createUser('fern');
  const context = await newContext();
  try {
    const tab = await Tab.open(context);
    await tab.goto('/login');
    await tab.click('a[href$="/forgot-password"]');
    checkEq('"Forgot your password?" leads to /forgot-password', tab.url().pathname, '/forgot-password');
    await tab.fill('form:has(input[name=email])', { email: u.email });
    const sent = await tab.submit('form:has(input[name=email])', 'Send reset link');
    const known = await tab.mainText();
    checkIncludes('forgot-password: "If an account uses this address, we have sent it a link"', known, 'If an account uses this address, we have sent it a link');
    await audit(tab, 'forgot-password-sent', { resp: sent });

    const mail = await maildir.waitFor({ to: u.email });
    checkEq('the reset mail: subject', mail.subject, 'Reset your registrar password');
    const link = mailLink(mail, `${PUBLIC}/reset-password?token=`, 'the reset mail');
    const form = await tab.goto(link);
    await audit(tab, 'reset-password', { resp: form });
    const newPw = newPassword('fern-new');
    await tab.fill('form:has(input[name=token])', { password: newPw, password_confirm: newPw });
    await tab.submit('form:has(input[name=token])', 'Set password');
    checkIncludes('reset: "Your password has been set."', await tab.mainText(), 'Your password has been set.');
    await tab.click('main a[href$="/login"]');
    await loginForm(tab, u.username, newPw, { navigate: false });
    checkEq('the new password logs in', tab.url().pathname, '/account');
    await logout(tab);
    const old = await loginForm(tab, u.username, u.password, { navigate: false });
    checkEq('the old password fails: 401', old.status(), 401);
    checkEq('... "Wrong username or password."', await tab.text('#form-error'), 'Wrong username or password.');
    checkEq('the API agrees: the new password logs in', (await apiLogin(u.username, newPw)).status, 200);
    const again = await tab.goto(link);
    checkIncludes('the same link again: "This link is invalid or has expired."', await tab.mainText(), 'This link is invalid or has expired.');
    checkEq('... status 400', again.status(), 400);
    check('... and no password form', (await tab.count('input[name=password]')) === 0);
    tab.drain();

    const nobody = `${RUN}.nobody@example.org`;
    await tab.goto('/forgot-password');
    await tab.fill('form:has(input[name=email])', { email: nobody });
    const unknown = await tab.submit('form:has(input[name=email])', 'Send reset link');
    checkEq('an unknown address: status 200', unknown.status(), 200);
    checkEq('... the same text as for a known one', (await tab.mainText()).replaceAll(nobody, '<address>'), known.replaceAll(u.email, '<address>'));
    const stray = await maildir.arrivingFor(nobody, 3000);
    checkEq('... and no mail is sent', stray.length, 0);
    tab.drain();
  } finally {
    await context.close();
  }
}

/** Login through the test OpenID provider: a new account, on /account. */
async function oidcLogin() {
  const sub = `${RUN}-olive-sub`;
  const username = `${RUN}-olive`;
  const email = `${RUN}.olive@uni.example.org`;
  const r = await fetch(`${ISSUER}/test/accounts`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sub, email, email_verified: true, given_name: 'Olive', family_name: 'Oidc', name: 'Olive Oidc', preferred_username: username }),
  });
  if (r.status !== 200) throw new Error(`provider /test/accounts: ${r.status}`);
  report.users.olive = username;
  const context = await newContext();
  try {
    const tab = await Tab.open(context, { allow: [ISSUER] });
    await tab.goto('/login');
    const sel = `a.oidc-login[href*="/api/v1/auth/oidc/${args['oidc-name']}/login"]`;
    const href = await tab.page.$eval(sel, (a) => a.href).catch(() => null);
    check('the provider link asks to come back to /account', href !== null && new URL(href).searchParams.get('return_to') === '/account', href);
    await tab.click(sel);
    check('the link leads to the provider', tab.url().origin === ISSUER_ORIGIN, tab.page.url());
    // The provider's devInteractions pages: a login form, then consent.
    for (let i = 0; i < 4 && tab.url().origin === ISSUER_ORIGIN; i += 1) {
      if ((await tab.count('input[name=login]')) > 0) {
        await tab.fill('form', { login: sub, password: 'any password will do' });
      }
      await tab.submit('form', null);
    }
    checkEq('after the provider the browser is on /account', `${tab.url().origin}${tab.url().pathname}`, `${APP_ORIGIN}/account`);
    check('/account shows its h1 and the new username', (await tab.visible('main#main h1')) && (await tab.mainText()).includes(username), await tab.mainText());
    const user = await api('GET', `/api/v1/users/${username}`);
    check('the API shows the account the provider created, email verified', user.status === 200 && user.json?.email === email && user.json?.verified === true, `${user.status} ${user.text}`);
    const ids = await tab.goto('/account/identities');
    checkIncludes('/account/identities lists the provider', await tab.mainText(), args['oidc-name']);
    await audit(tab, 'account-identities-oidc', { resp: ids, who: 'user' });
  } finally {
    await context.close();
  }
}

/** Selects the users on /admin/users (filtered by `q`), picks `action` and previews. */
async function bulkPreview(tab, q, usernames, action) {
  await tab.goto('/admin/users');
  await tab.fill('form#user-filter', { q });
  await tab.submit('form#user-filter');
  checkEq(`filtering /admin/users by "${q}" puts q in the URL`, tab.url().searchParams.get('q'), q);
  for (const u of usernames) {
    check(`#users lists ${u} with a checkbox`, (await tab.count(`#users tr[data-username="${u}"] input[name=user][value="${u}"]`)) === 1);
    await tab.page.click(`#users tr[data-username="${u}"] input[name=user][value="${u}"]`);
  }
  await tab.fill('form#bulk', { action });
  return tab.submit('form#bulk', 'Preview');
}

/** Bulk disable with a preview that changes nothing, then Apply. */
async function bulkDisable() {
  const a = await createUser('bulka');
  const b = await createUser('bulkb');
  const context = await newContext();
  try {
    const tab = await Tab.open(context);
    await loginForm(tab, args.admin, args['admin-password']);
    const list = await tab.goto(`/admin/users?q=${RUN}-bulk`);
    await audit(tab, 'admin-users-filtered', { resp: list, who: 'admin' });
    const preview = await bulkPreview(tab, `${RUN}-bulk`, [a.username, b.username], 'disable');
    checkEq('Preview: h1 "Preview"', await tab.text('main#main h1'), 'Preview');
    for (const u of [a, b]) {
      const row = await tab.text(`#preview tr[data-username="${u.username}"]`);
      check(`the preview lists ${u.username} with "enabled: yes → no"`, row !== null && /enabled:?\s*yes\s*→\s*no/i.test(row), `row: ${row}`);
    }
    await audit(tab, 'admin-users-bulk-preview', { resp: preview, who: 'admin' });
    const still = await Promise.all([apiUser(a.username), apiUser(b.username)]);
    check('after the preview the API still shows both enabled', still.every((x) => x.enabled === true), JSON.stringify(still.map((x) => x.enabled)));
    const applied = await tab.submit('form#bulk-apply', 'Apply');
    for (const u of [a, b]) {
      const row = await tab.text(`#results tr[data-username="${u.username}"]`);
      check(`the results say ${u.username}: done`, row !== null && /\bdone\b/.test(row), `row: ${row}`);
    }
    await audit(tab, 'admin-users-bulk-results', { resp: applied, who: 'admin' });
    const after = await Promise.all([apiUser(a.username), apiUser(b.username)]);
    check('after Apply the API shows both disabled', after.every((x) => x.enabled === false), JSON.stringify(after.map((x) => x.enabled)));

    const anon = await Tab.open(await newContext());
    try {
      for (const u of [a, b]) {
        const r = await loginForm(anon, u.username, u.password);
        checkEq(`${u.username} (disabled, right password): 403`, r.status(), 403);
        checkIncludes(`${u.username}: "This account is disabled."`, await anon.text('#form-error'), 'This account is disabled.');
      }
      await audit(anon, 'login-disabled', { status: 403 });
    } finally {
      await anon.page.browserContext().close();
    }
  } finally {
    await context.close();
  }
}

/** A page on another origin that POSTs `fields` to `action` as soon as it loads. */
function startAttacker() {
  const pages = new Map();
  const server = http.createServer((req, res) => {
    const body = pages.get(new URL(req.url, 'http://x').pathname);
    res.writeHead(body ? 200 : 404, { 'content-type': 'text/html; charset=utf-8' });
    res.end(body ?? 'not found');
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const origin = `http://127.0.0.1:${server.address().port}`;
      resolve({
        origin,
        page(name, action, fields) {
          const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
          const inputs = fields.map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join('');
          // Submitted once loaded, so the page's own navigation has ended.
          pages.set(`/${name}`, `<!doctype html><title>prize</title><form id="f" method="post" action="${esc(action)}">${inputs}</form>`
            + '<script>addEventListener("load", () => setTimeout(() => document.getElementById("f").submit(), 50))</script>');
          return `${origin}/${name}`;
        },
        close: () => new Promise((done) => { server.close(done); }),
      });
    });
  });
}

/** Opens the attacker's page in `tab` and answers the response of the POST it makes to the app. */
async function forgedPost(tab, attackerUrl, action) {
  lastTab = tab;
  const posted = tab.page.waitForResponse((r) => r.url().startsWith(action) && r.request().method() === 'POST');
  await tab.page.goto(attackerUrl);
  const resp = await posted.catch((e) => {
    throw new Error(`the page at ${attackerUrl} did not POST to ${action} (the tab is on ${tab.page.url()}): ${e.message}`);
  });
  await tab.page.waitForFunction((o) => location.origin === o && document.readyState === 'complete', {}, APP_ORIGIN);
  return resp;
}

/** A same-origin POST from the app's own page, without (or with a made-up) csrf field. */
async function fetchPost(tab, action, fields) {
  return tab.page.evaluate(async (url, entries) => {
    const r = await fetch(url, { method: 'POST', body: new URLSearchParams(entries), credentials: 'same-origin', redirect: 'manual' });
    // A redirect (the Post/Redirect/Get of an accepted form) is opaque here.
    return { status: r.type === 'opaqueredirect' ? 'a redirect (accepted)' : r.status, text: await r.text() };
  }, action, fields);
}

const CSRF_TEXT = 'This form has expired or did not come from registrar';

/** Forms posted from another origin, or without the csrf field: 403, nothing changed. */
async function csrf() {
  const carol = await createUser('carol');
  const victim = await createUser('victim');
  const attacker = await startAttacker();
  const userCtx = await newContext();
  const adminCtx = await newContext();
  try {
    const tab = await Tab.open(userCtx, { allow: [attacker.origin] });
    await loginForm(tab, carol.username, carol.password);
    const stolen = secret('password', `Attacker-Chosen-${crypto.randomBytes(6).toString('base64url')}-Password`);
    const action = `${APP}/account/password`;
    const fields = [['current_password', carol.password], ['new_password', stolen], ['confirm_password', stolen]];
    const resp = await forgedPost(tab, attacker.page('password', action, fields), action);
    checkEq('a cross-origin form POST to /account/password: 403', resp.status(), 403);
    checkIncludes(`... the page says "${CSRF_TEXT}"`, await tab.mainText(), CSRF_TEXT);
    await audit(tab, 'csrf-refused', { resp, status: 403 });
    await tab.goto('/account/password');
    for (const [how, extra] of [['without the csrf field', []], ['with a made-up csrf value', [['csrf', 'forged-token-value']]]]) {
      const r = await fetchPost(tab, '/account/password', [...fields, ...extra]);
      checkEq(`a same-origin fetch POST to /account/password ${how}: 403`, r.status, 403);
      checkIncludes('... with the expired-form text', r.text, CSRF_TEXT);
    }
    tab.drain();
    checkEq("carol's password is unchanged (API login with it: 200)", (await apiLogin(carol.username, carol.password)).status, 200);
    checkEq("... and the attacker's does not log in (401)", (await apiLogin(carol.username, stolen)).status, 401);

    const admin = await Tab.open(adminCtx, { allow: [attacker.origin] });
    await loginForm(admin, args.admin, args['admin-password']);
    await bulkPreview(admin, victim.username, [victim.username], 'disable');
    const apply = await admin.page.evaluate(() => {
      const f = document.querySelector('form#bulk-apply');
      // getAttribute: the form's "action" field shadows the property.
      return f && { action: new URL(f.getAttribute('action') ?? '', location.href).href, fields: [...new FormData(f)].filter(([k]) => k !== 'csrf') };
    });
    if (!apply) throw new Error(`no form#bulk-apply on ${admin.page.url()}`);
    const forged = await forgedPost(admin, attacker.page('bulk', apply.action, apply.fields), apply.action);
    checkEq('a cross-origin form POST of the bulk apply (disable): 403', forged.status(), 403);
    checkIncludes(`... the page says "${CSRF_TEXT}"`, await admin.mainText(), CSRF_TEXT);
    await admin.goto('/admin/users');
    const r = await fetchPost(admin, apply.action, apply.fields);
    checkEq('a same-origin fetch POST of the bulk apply without csrf: 403', r.status, 403);
    const bulkPreviewPost = await fetchPost(admin, '/admin/users/bulk', [['user', victim.username], ['action', 'disable']]);
    checkEq('a same-origin fetch POST to /admin/users/bulk without csrf: 403', bulkPreviewPost.status, 403);
    admin.drain();
    checkEq('the victim is still enabled (API)', (await apiUser(victim.username)).enabled, true);
  } finally {
    await Promise.all([userCtx.close(), adminCtx.close()]);
    await attacker.close();
  }
}

/** Wrong passwords up to the limit, then the lockout message with its wait. */
async function lockout() {
  const u = await createUser('lockie');
  const context = await newContext();
  const adminCtx = await newContext();
  try {
    const tab = await Tab.open(context);
    for (let i = 1; i <= MAX_FAILED; i += 1) {
      const r = await loginForm(tab, u.username, `wrong password number ${i} for sure`);
      checkEq(`wrong password ${i} of ${MAX_FAILED}: 401`, r.status(), 401);
      checkEq(`... "Wrong username or password."`, await tab.text('#form-error'), 'Wrong username or password.');
    }
    const locked = await loginForm(tab, u.username, 'wrong password once more for sure');
    checkEq(`wrong password ${MAX_FAILED + 1}: 429`, locked.status(), 429);
    const message = await tab.text('#form-error');
    checkIncludes('... "Too many failed attempts"', message, 'Too many failed attempts');
    check('... "Try again in N seconds/minutes"', /Try again in \d+ (seconds?|minutes?)/.test(message ?? ''), `got: ${message}`);
    await audit(tab, 'login-locked', { resp: locked, status: 429 });
    const right = await loginForm(tab, u.username, u.password);
    checkEq('the right password while locked: still 429', right.status(), 429);
    checkEq('the API agrees: locked (429)', (await apiLogin(u.username, u.password)).status, 429);
    tab.drain();

    // An administrator unlocks the account from its page.
    const admin = await Tab.open(adminCtx);
    await loginForm(admin, args.admin, args['admin-password']);
    const detail = await admin.goto(`/admin/users/${u.username}`);
    check(`/admin/users/${u.username} (locked) shows #unlock`, (await admin.count('#unlock')) === 1);
    await audit(admin, 'admin-user-detail-locked', { resp: detail, who: 'admin' });
    await admin.click('#unlock');
    check('Unlock: a success flash', await admin.visible('p.flash[role=status]'), await admin.mainText());
    const back = await loginForm(tab, u.username, u.password);
    checkEq('after the unlock the right password logs in', `${tab.url().pathname} ${back.status()}`, '/account 200');
    admin.drain();
  } finally {
    await Promise.all([context.close(), adminCtx.close()]);
  }
}

/** A changed email, verified through the link mailed to it. */
async function verifyEmail() {
  const u = await createUser('vera');
  const context = await newContext();
  try {
    const tab = await Tab.open(context);
    await loginForm(tab, u.username, u.password);
    const newEmail = `${RUN}.vera.new@example.org`;
    await tab.fill('form#profile', { email: newEmail });
    const saved = await tab.submit('form#profile', 'Save');
    check('saving the profile: a success flash', await tab.visible('p.flash[role=status]'), await tab.mainText());
    checkEq('#email-status: not verified', await tab.text('#email-status'), 'not verified');
    await audit(tab, 'account-profile-saved', { resp: saved, who: 'user' });
    const mail = await maildir.waitFor({ to: newEmail });
    checkEq('the verification mail: subject', mail.subject, 'Verify your email address');
    const link = mailLink(mail, `${PUBLIC}/verify-email?token=`, 'the verification mail');
    const page = await tab.goto(link);
    await audit(tab, 'verify-email', { resp: page });
    await tab.submit('form:has(input[name=token])', 'Verify my email address');
    checkIncludes('"Your email address is verified."', await tab.mainText(), 'Your email address is verified.');
    const after = await apiUser(u.username);
    check('the API shows the new email, verified', after.email === newEmail && after.verified === true, JSON.stringify(after));
    tab.drain();
  } finally {
    await context.close();
  }
}

/** A project invitation: mailed, listed on /account/projects, accepted there. */
async function projectInvitation() {
  const u = await createUser('ivy');
  const project = `P${RUN}`;
  await apiOk('POST', '/api/v1/projects', { id: project, name: `Project ${RUN}` });
  const context = await newContext();
  try {
    const tab = await Tab.open(context);
    await loginForm(tab, u.username, u.password);
    await apiOk('POST', `/api/v1/projects/${project}/access-requests`, { username: u.username, level: 'member' });
    const invite = await maildir.waitFor({ to: u.email });
    checkEq('the invitation mail: subject', invite.subject, `Invitation to project ${project}`);
    const projectsLink = mailLink(invite, `${PUBLIC}/account/projects`, 'the invitation mail');
    const projects = await tab.goto(projectsLink);
    checkIncludes('/account/projects lists the invitation', await tab.text('#invitations'), project);
    await audit(tab, 'account-projects-invited', { resp: projects, who: 'user' });
    await tab.submit('#invitations', 'Accept');
    checkIncludes('after Accept, #my-projects lists the project', await tab.text('#my-projects'), project);
    const groups = await api('GET', `/api/v1/users/${u.username}/groups`);
    checkIncludes('the API shows the membership', groups.text, `${project}_member`);
    tab.drain();
  } finally {
    await context.close();
  }
}

/** Every page of the contract, as a plain user and as the administrator. */
async function everyPage() {
  const pat = await createUser('pat');
  const group = `${RUN}-team`;
  const project = `S${RUN}`;
  await apiOk('POST', '/api/v1/groups', { name: group, display_name: 'The team' });
  await apiOk('PUT', `/api/v1/users/${pat.username}/groups/${group}`);
  await apiOk('POST', '/api/v1/projects', { id: project, name: `Survey ${RUN}` });
  await apiOk('POST', `/api/v1/projects/${project}/access-requests`, { username: pat.username, level: 'collaborator' });
  const member = `M${RUN}`;
  await apiOk('POST', '/api/v1/projects', { id: member, name: `Member ${RUN}` });
  await apiOk('PUT', `/api/v1/projects/${member}/members/${pat.username}`, { level: 'member' });

  const userCtx = await newContext();
  const adminCtx = await newContext();
  try {
    const user = await Tab.open(userCtx);
    await loginForm(user, pat.username, pat.password);
    const userPages = [
      ['account', '/account', ['form#profile [name=first_name]', 'form#profile [name=last_name]', 'form#profile [name=email]', '#email-status']],
      ['account-password', '/account/password', ['form#password [name=current_password]', 'form#password [name=new_password]', 'form#password [name=confirm_password]', '#password-policy']],
      ['account-sessions-user', '/account/sessions', ['#sessions tr[data-session-id]', 'form#revoke-others']],
      ['account-api-keys-empty', '/account/api-keys', ['form#new-key [name=name]', 'form#new-key input[name=expires_at][type=date]']],
      ['account-identities', '/account/identities', ['a.oidc-link']],
      ['account-projects', '/account/projects', ['#my-projects tr', '#invitations tr']],
      ['account-log', '/account/log', ['#log']],
    ];
    for (const [name, url, selectors] of userPages) {
      const resp = await user.goto(url);
      const missing = [];
      for (const s of selectors) if ((await user.count(s)) === 0) missing.push(s);
      check(`${url} as a user: has ${selectors.join(', ')}`, missing.length === 0, `missing ${missing.join(', ')}`);
      await audit(user, `user-${name}`, { resp, who: 'user' });
    }
    const forbidden = await user.goto('/admin/users');
    await audit(user, 'user-forbidden-admin-users', { resp: forbidden, status: 403 });
    await user.goto('/account/password');
    const newPw = newPassword('pat-new');
    await user.fill('form#password', { current_password: pat.password, new_password: newPw, confirm_password: newPw });
    const changed = await user.submit('form#password', 'Change password');
    checkIncludes('Change password: "Your password has been changed."', await user.text('p.flash[role=status]'), 'Your password has been changed.');
    checkEq('... the API takes the new one', (await apiLogin(pat.username, newPw)).status, 200);
    await audit(user, 'user-account-password-changed', { resp: changed, who: 'user' });

    const admin = await Tab.open(adminCtx);
    await loginForm(admin, args.admin, args['admin-password']);
    const adminPages = [
      ['admin-users', '/admin/users', ['form#user-filter [name=q]', 'form#user-filter select[name=enabled]', 'form#user-filter select[name=role]', 'form#bulk #users tr[data-username]', 'form#bulk select[name=action] option[value=disable]', 'form#bulk select[name=action] option[value=enable]', 'form#bulk select[name=action] option[value=add_to_group]', 'form#bulk select[name=action] option[value=revoke_sessions]', 'form#bulk [name=group]']],
      ['admin-user-detail', `/admin/users/${pat.username}`, ['form#edit-user [name=first_name]', 'form#edit-user [name=email]', '#disable', '#revoke-sessions', 'form#reset-password [name=password]', '#send-reset', 'form#roles [name=role]', 'form#add-group [name=group]', 'a#delete-user']],
      ['admin-user-delete', `/admin/users/${pat.username}/delete`, ['form#confirm-delete']],
      ['admin-groups', '/admin/groups', ['form#new-group [name=name]', 'form#new-group [name=display_name]']],
      ['admin-group-detail', `/admin/groups/${group}`, []],
      ['admin-projects', '/admin/projects', []],
      ['admin-project-detail', `/admin/projects/${project}`, []],
      ['admin-change-log', '/admin/change-log', ['form#log-filter', '#change-log', '#change-log details']],
      ['admin-scim', '/admin/scim', ['form#new-scim [name=name]', '#scim-credentials']],
      ['admin-account-sessions', '/account/sessions', ['#sessions tr[data-session-id]']],
    ];
    for (const [name, url, selectors] of adminPages) {
      const resp = await admin.goto(url);
      const missing = [];
      for (const s of selectors) if ((await admin.count(s)) === 0) missing.push(s);
      if (selectors.length) check(`${url} as the admin: has ${selectors.join(', ')}`, missing.length === 0, `missing ${missing.join(', ')}`);
      if (name === 'admin-user-delete') {
        checkEq('the delete confirmation button says "Delete <username>"', await admin.text('form#confirm-delete button'), `Delete ${pat.username}`);
      }
      if (name === 'admin-project-detail') {
        const exports = await admin.page.$$eval('main a', (as) => as.map((a) => a.textContent.trim()));
        check('the project page links its CSV, XML and HTML exports', ['CSV', 'XML', 'HTML'].every((e) => exports.includes(e)), JSON.stringify(exports));
      }
      await audit(admin, name, { resp, who: 'admin' });
    }
    // A group made through the form.
    await admin.goto('/admin/groups');
    const made = `${RUN}-made`;
    const described = (await admin.count('form#new-group [name=display_name]')) === 1;
    await admin.fill('form#new-group', described ? { name: made, display_name: 'Made in the browser' } : { name: made });
    const madeResp = await admin.submit('form#new-group');
    check('creating a group through form#new-group: the API has it', (await api('GET', `/api/v1/groups/${made}`)).status === 200);
    await audit(admin, 'admin-group-created', { resp: madeResp, who: 'admin' });
    // The change-log filter.
    await admin.goto('/admin/change-log');
    await admin.fill('form#log-filter', { action: 'user.created' });
    const filtered = await admin.submit('form#log-filter');
    checkEq('filtering the change log puts action in the URL', admin.url().searchParams.get('action'), 'user.created');
    await audit(admin, 'admin-change-log-filtered', { resp: filtered, who: 'admin' });
  } finally {
    await Promise.all([userCtx.close(), adminCtx.close()]);
  }
}

/** At phone width (375 px) nothing scrolls sideways. */
async function phoneWidth() {
  const viewport = { width: 375, height: 740, isMobile: true, hasTouch: true };
  const anonCtx = await newContext();
  const adminCtx = await newContext();
  try {
    const anon = await Tab.open(anonCtx, { viewport });
    const resp = await anon.goto('/login');
    const w1 = await anon.page.evaluate(() => document.documentElement.scrollWidth);
    check('/login at 375 px: no horizontal scroll', w1 <= 375, `scrollWidth ${w1}`);
    await audit(anon, 'phone-login', { resp });
    const admin = await Tab.open(adminCtx, { viewport });
    await loginForm(admin, args.admin, args['admin-password']);
    const list = await admin.goto('/admin/users');
    const w2 = await admin.page.evaluate(() => document.documentElement.scrollWidth);
    check('/admin/users at 375 px: no horizontal scroll', w2 <= 375, `scrollWidth ${w2}`);
    await audit(admin, 'phone-admin-users', { resp: list, who: 'admin' });
  } finally {
    await Promise.all([anonCtx.close(), adminCtx.close()]);
  }
}

/** The API viewer loads with everything from this server. */
async function apiDocs() {
  const context = await newContext();
  try {
    const tab = await Tab.open(context);
    const resp = await tab.goto('/api/v1/docs', { waitUntil: 'networkidle0' });
    checkEq('/api/v1/docs: 200', resp.status(), 200);
    const shown = await tab.page.waitForSelector('#swagger-ui .info, #swagger-ui .opblock', { timeout: STEP_TIMEOUT }).then(() => true, () => false);
    check('/api/v1/docs renders the API', shown);
    await tab.page.screenshot({ path: path.join(SHOTS, 'api-docs.png'), fullPage: false });
    const seen = tab.drain();
    check('/api/v1/docs: no request to another origin, no console or page error', seen.length === 0, seen.join('; '));
  } finally {
    await context.close();
  }
}

const FLOWS = [
  ['public', publicPages],
  ['welcome', welcomeAndSelfService],
  ['forgot', forgotPassword],
  ['oidc', oidcLogin],
  ['bulk', bulkDisable],
  ['csrf', csrf],
  ['lockout', lockout],
  ['verify-email', verifyEmail],
  ['invitation', projectInvitation],
  ['pages', everyPage],
  ['phone', phoneWidth],
  ['docs', apiDocs],
];

// ---------------------------------------------------------------------------

function printAxeTable() {
  note('axe violations by impact, per page (serious or critical fail the run)');
  const width = Math.max(4, ...axeRows.map((r) => r.name.length));
  note(`${'page'.padEnd(width)}  critical  serious  moderate  minor  (rules passed)`);
  for (const { name, counts, rulesPassed } of axeRows) {
    note(`${name.padEnd(width)}  ${String(counts.critical).padStart(8)}  ${String(counts.serious).padStart(7)}  ${String(counts.moderate).padStart(8)}  ${String(counts.minor).padStart(5)}  ${String(rulesPassed).padStart(14)}`);
  }
}

function finish() {
  printAxeTable();
  if (args.report) fs.writeFileSync(args.report, JSON.stringify(report, null, 2));
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

async function main() {
  const watchdog = setTimeout(() => {
    check(`the run finished within ${args.timeout} s`, false);
    finish();
  }, Number(args.timeout) * 1000);
  maildir = new Maildir(args.maildir);
  const login = await apiLogin(args.admin, args['admin-password']);
  if (!check('the admin logs in through the API', login.status === 200, `status ${login.status}`)) finish();
  adminToken = login.token;
  browser = await puppeteer.launch({
    // A busy two-core CI machine: Chromium may take a while to start.
    timeout: 120000,
    executablePath: args.chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  note(`${await browser.version()}; run ${RUN}; app ${APP}`);
  const only = args.only ? new Set(args.only.split(',')) : null;
  for (const [name, flow] of FLOWS) {
    if (only && !only.has(name)) continue;
    note(`flow: ${name}`);
    try {
      await flow();
    } catch (err) {
      check(`flow ${name} ran to its end`, false, err.stack ?? err);
      if (lastTab && !lastTab.page.isClosed()) {
        await lastTab.page.screenshot({ path: path.join(SHOTS, `FAILED-${name}.png`), fullPage: true }).catch(() => {});
        note(`flow ${name} stopped on ${lastTab.page.url()}; screenshot FAILED-${name}.png`);
      }
    }
  }
  await browser.close();
  clearTimeout(watchdog);
  finish();
}

main().catch((err) => {
  check('the driver ran', false, err.stack ?? err);
  finish();
});
