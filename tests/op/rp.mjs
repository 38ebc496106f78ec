// A real OpenID Connect relying party (panva's openid-client 6) against
// registrar as an OpenID Provider: discovery, JWKS, the authorization code
// flow with PKCE through registrar's own login page (plain HTTP with a
// cookie jar, as a browser would go), ID token and access token checks,
// userinfo, refresh with rotation, introspection, revocation, RP-initiated
// logout; then the same with a public client (no secret, PKCE), and
// client_credentials for the confidential client.
//
//   node rp.mjs --issuer <url> --client-id <id> --client-secret <s>
//     --public-client-id <id> --username <u> --password <p>
//     --redirect-uri <uri> [--post-logout-uri <uri>] [--email <e>]
//     [--expect-group <g>] [--expect-project <p>] [--expect-role <r>]
//     [--report <file>]
//
// Prints `ok - ...` / `not ok - ...` lines and a final `N passed, M failed`;
// exits non-zero on any failure. `--report` writes the tokens and codes the
// run was issued ({"secrets": [{kind, value}]}) for the suite's secrets audit.

import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as client from 'openid-client';
import * as jose from 'jose';

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2);
    const value = argv[i + 1];
    if (value === undefined || value.startsWith('--')) throw new Error(`${a} needs a value`);
    out[key] = value;
    i++;
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
for (const required of ['issuer', 'client-id', 'client-secret', 'public-client-id', 'username', 'password', 'redirect-uri']) {
  if (!args[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
const ISSUER = args.issuer;
const CLIENT_ID = args['client-id'];
const CLIENT_SECRET = args['client-secret'];
const PUBLIC_CLIENT_ID = args['public-client-id'];
const USERNAME = args.username;
const PASSWORD = args.password;
const REDIRECT_URI = args['redirect-uri'];
const POST_LOGOUT_URI = args['post-logout-uri'] || new URL('/logged-out', REDIRECT_URI).href;
const SCOPE = 'openid profile email groups projects roles offline_access';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// ---------------------------------------------------------------- reporting

let passed = 0;
let failed = 0;
const secrets = [];

function keep(kind, value) {
  if (typeof value === 'string' && value.length >= 12) secrets.push({ kind, value });
}

/** Describes an error from openid-client / oauth4webapi / fetch in one line. */
function describe(e) {
  if (!e) return String(e);
  const parts = [];
  if (e.name && e.name !== 'Error') parts.push(e.name);
  parts.push(e.message);
  if (e.code) parts.push(`code=${e.code}`);
  if (e.status) parts.push(`status=${e.status}`);
  if (e.error) parts.push(`error=${e.error}`);
  if (e.error_description) parts.push(`error_description=${JSON.stringify(e.error_description)}`);
  const cause = e.cause;
  if (cause !== undefined) {
    let c;
    if (cause instanceof Error) c = describe(cause);
    else {
      try {
        c = JSON.stringify(cause, (k, v) => (typeof v === 'string' && v.length > 300 ? v.slice(0, 300) + '…' : v));
      } catch {
        c = String(cause);
      }
    }
    parts.push(`cause: ${c && c.length > 1500 ? c.slice(0, 1500) + '…' : c}`);
  }
  return parts.join('; ');
}

class Skip extends Error {}

/** Runs one check; prints `ok`/`not ok`. Answers fn's value, or undefined on failure. */
async function check(name, fn) {
  try {
    const v = await fn();
    passed++;
    console.log(`ok - ${name}`);
    return v === undefined ? true : v;
  } catch (e) {
    failed++;
    if (e instanceof Skip) console.log(`not ok - ${name} # skipped: ${e.message}`);
    else console.log(`not ok - ${name}: ${describe(e)}`);
    return undefined;
  }
}

function need(value, what) {
  if (value === undefined || value === null || value === false) throw new Skip(`needs ${what} (an earlier step failed)`);
  return value;
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function eq(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

// ---------------------------------------------------------------- a browser

function decodeEntities(s) {
  return s
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#([0-9]+);/g, (_, d) => String.fromCodePoint(parseInt(d, 10)))
    .replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

function attr(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*("([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i'));
  if (!m) return undefined;
  return decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
}

/** The form with this id (or the first form): action, method, and its named fields. */
function parseForm(html, id) {
  const forms = [...html.matchAll(/<form\b[^>]*>[\s\S]*?<\/form>/gi)].map((m) => m[0]);
  const form = id ? forms.find((f) => attr(f.match(/<form\b[^>]*>/i)[0], 'id') === id) : forms[0];
  if (!form) return undefined;
  const open = form.match(/<form\b[^>]*>/i)[0];
  const fields = {};
  for (const m of form.matchAll(/<input\b[^>]*>/gi)) {
    const name = attr(m[0], 'name');
    if (name) fields[name] = attr(m[0], 'value') ?? '';
  }
  const buttons = [];
  for (const m of form.matchAll(/<button\b[^>]*>/gi)) {
    const name = attr(m[0], 'name');
    if (name) buttons.push({ name, value: attr(m[0], 'value') ?? '' });
  }
  return { action: attr(open, 'action'), method: (attr(open, 'method') || 'get').toUpperCase(), fields, buttons };
}

function snippet(text) {
  const t = (text || '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim();
  return t.length > 400 ? t.slice(0, 400) + '…' : t;
}

function short(url) {
  return url.length > 200 ? url.slice(0, 200) + '…' : url;
}

const isRedirect = (s) => s >= 300 && s < 400;

/** A cookie jar and plain HTTP with manual redirects, behaving like a browser's navigations. */
class Browser {
  constructor() {
    this.jar = new Map(); // `${host}\t${name}` → value (cookies ignore ports, as browsers do)
    this.trace = [];
  }

  cookieHeader(url) {
    const host = new URL(url).hostname;
    const pairs = [];
    for (const [k, v] of this.jar) {
      const [h, name] = k.split('\t');
      if (h === host) pairs.push(`${name}=${v}`);
    }
    return pairs.join('; ');
  }

  absorb(url, res) {
    const host = new URL(url).hostname;
    for (const sc of res.headers.getSetCookie()) {
      const [pair, ...attrs] = sc.split(';');
      const at = pair.indexOf('=');
      if (at < 0) continue;
      const name = pair.slice(0, at).trim();
      const value = pair.slice(at + 1).trim();
      const expired = attrs.some((a) => {
        const [k, v] = a.split('=').map((x) => x && x.trim());
        if (/^max-age$/i.test(k)) return Number(v) <= 0;
        if (/^expires$/i.test(k)) return Date.parse(v) < Date.now();
        return false;
      });
      if (expired || value === '') this.jar.delete(`${host}\t${name}`);
      else this.jar.set(`${host}\t${name}`, value);
    }
  }

  has(url, name) {
    return this.jar.has(`${new URL(url).hostname}\t${name}`);
  }

  /** One request. `site` is what Sec-Fetch-Site says (a browser sends it on every request). */
  async request(method, url, { form, site = 'same-origin' } = {}) {
    const headers = {
      'user-agent': 'registrar-op-tests/rp.mjs (openid-client)',
      accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
      'sec-fetch-site': site,
      'sec-fetch-mode': 'navigate',
      'sec-fetch-dest': 'document',
    };
    const cookie = this.cookieHeader(url);
    if (cookie) headers.cookie = cookie;
    let body;
    if (form) {
      body = new URLSearchParams(form).toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers.origin = new URL(url).origin;
    }
    const res = await fetch(url, { method, headers, body, redirect: 'manual' });
    this.absorb(url, res);
    const text = await res.text();
    const loc = res.headers.get('location');
    const location = loc ? new URL(loc, url).href : null;
    this.trace.push(`${method} ${short(url)} -> ${res.status}${location ? ' ' + short(location) : ''}`);
    return { status: res.status, location, text, headers: res.headers, url };
  }

  traceTail(n = 8) {
    return this.trace.slice(-n).join(' | ');
  }
}

function isUnder(url, base) {
  if (!url) return false;
  const u = new URL(url);
  const b = new URL(base);
  return u.origin === b.origin && u.pathname === b.pathname;
}

/**
 * Follows an authorization URL as a browser: through registrar's login page
 * (and a consent page, if one comes) until the redirect to `redirectUri`.
 * Answers { callback, sawLogin, sawConsent, loginUrl }.
 */
async function authorize(browser, authUrl, redirectUri, { site = 'cross-site' } = {}) {
  let url = authUrl;
  let sawLogin = false;
  let sawConsent = false;
  let loginUrl;
  for (let hop = 0; hop < 20; hop++) {
    const r = await browser.request('GET', url, { site: hop === 0 ? site : 'same-origin' });
    if (isRedirect(r.status)) {
      assert(r.location, `GET ${short(url)} answered ${r.status} without a Location`);
      if (isUnder(r.location, redirectUri)) return { callback: r.location, sawLogin, sawConsent, loginUrl };
      url = r.location;
      continue;
    }
    const login = r.status === 200 ? parseForm(r.text, 'login') : undefined;
    const consent = r.status === 200 ? parseForm(r.text, 'consent') : undefined;
    if (login) {
      sawLogin = true;
      loginUrl = url;
      assert('csrf' in login.fields, `the login form at ${short(url)} has no csrf field`);
      const action = new URL(login.action || '/login', url).href;
      const fields = { ...login.fields, username: USERNAME, password: PASSWORD };
      const p = await browser.request('POST', action, { form: fields });
      if (!isRedirect(p.status)) {
        throw new Error(`POST ${short(action)} (login) answered ${p.status}, not a redirect: ${snippet(p.text)}`);
      }
      if (isUnder(p.location, redirectUri)) return { callback: p.location, sawLogin, sawConsent, loginUrl };
      url = p.location;
      continue;
    }
    if (consent) {
      sawConsent = true;
      const action = new URL(consent.action || '/oauth2/consent', url).href;
      const fields = { ...consent.fields, decision: 'allow' };
      const p = await browser.request('POST', action, { form: fields });
      if (!isRedirect(p.status)) {
        throw new Error(`POST ${short(action)} (consent) answered ${p.status}, not a redirect: ${snippet(p.text)}`);
      }
      if (isUnder(p.location, redirectUri)) return { callback: p.location, sawLogin, sawConsent, loginUrl };
      url = p.location;
      continue;
    }
    throw new Error(
      `GET ${short(url)} answered ${r.status}, neither a redirect nor a login/consent form: ${snippet(r.text)} [trace: ${browser.traceTail()}]`,
    );
  }
  throw new Error(`no redirect to ${redirectUri} after 20 hops [trace: ${browser.traceTail()}]`);
}

/** Follows an end-session URL; answers the final redirect target (or the page it ended on). */
async function endSession(browser, url, postLogoutUri) {
  let next = url;
  for (let hop = 0; hop < 10; hop++) {
    const r = await browser.request('GET', next, { site: hop === 0 ? 'cross-site' : 'same-origin' });
    if (isRedirect(r.status)) {
      if (isUnder(r.location, postLogoutUri)) return { landed: r.location, confirmed: false };
      next = r.location;
      continue;
    }
    if (r.status === 200) {
      // A confirmation page: submit its form, as the user would.
      const form = parseForm(r.text, 'confirm-logout');
      if (form && form.method === 'POST') {
        const action = new URL(form.action || next, next).href;
        const p = await browser.request('POST', action, { form: form.fields });
        if (isRedirect(p.status) && isUnder(p.location, postLogoutUri)) return { landed: p.location, confirmed: true };
        return { landed: null, page: `${p.status} ${snippet(p.text)}`, confirmed: true };
      }
      return { landed: null, page: `200 ${snippet(r.text)}`, confirmed: false };
    }
    return { landed: null, page: `${r.status} ${snippet(r.text)}`, confirmed: false };
  }
  throw new Error(`end_session kept redirecting [trace: ${browser.traceTail()}]`);
}

// ---------------------------------------------------------------- token checks

function b64urlSha256Half(value, alg) {
  const bits = { RS256: 'sha256', ES256: 'sha256', PS256: 'sha256', RS384: 'sha384', ES384: 'sha384', RS512: 'sha512', ES512: 'sha512' }[alg];
  assert(bits, `no hash for alg ${alg}`);
  const digest = createHash(bits).update(value, 'ascii').digest();
  return digest.subarray(0, digest.length / 2).toString('base64url');
}

function idTokenChecks(idToken, claims, { clientId, nonce, startedAt, jwks }) {
  const header = jose.decodeProtectedHeader(idToken);
  assert(['RS256', 'ES256'].includes(header.alg), `ID token alg ${header.alg} (want RS256 or ES256)`);
  assert(header.kid, 'ID token header has no kid');
  assert(jwks.keys.some((k) => k.kid === header.kid), `ID token kid ${header.kid} is not in the JWKS`);
  eq(claims.iss, ISSUER, 'iss');
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  assert(aud.includes(clientId), `aud ${JSON.stringify(claims.aud)} lacks ${clientId}`);
  eq(claims.azp, clientId, 'azp');
  assert(UUID.test(claims.sub), `sub ${JSON.stringify(claims.sub)} is not a UUID`);
  if (nonce !== undefined) eq(claims.nonce, nonce, 'nonce');
  assert(typeof claims.auth_time === 'number', `auth_time ${JSON.stringify(claims.auth_time)} is not a number`);
  const now = Date.now() / 1000;
  assert(claims.auth_time >= startedAt - 120 && claims.auth_time <= now + 60, `auth_time ${claims.auth_time} is not about now (${Math.round(now)})`);
  assert(typeof claims.sid === 'string' && claims.sid.length > 0, `sid ${JSON.stringify(claims.sid)}`);
  assert(typeof claims.iat === 'number' && typeof claims.exp === 'number' && claims.exp > now, 'iat/exp');
  return header;
}

function atHashCheck(idToken, claims, accessToken) {
  const { alg } = jose.decodeProtectedHeader(idToken);
  assert(typeof claims.at_hash === 'string', `the ID token has no at_hash (claims: ${Object.keys(claims).join(',')})`);
  eq(claims.at_hash, b64urlSha256Half(accessToken, alg), 'at_hash');
}

async function accessTokenChecks(accessToken, jwks, { clientId, sub, alg = 'RS256' }) {
  const header = jose.decodeProtectedHeader(accessToken);
  eq(header.alg, alg, 'access token alg');
  const { payload } = await jose.jwtVerify(accessToken, jose.createLocalJWKSet(jwks), { issuer: ISSUER, audience: clientId });
  if (sub !== undefined) eq(payload.sub, sub, 'access token sub');
  assert(typeof payload.exp === 'number', 'access token exp');
  return payload;
}

function profileChecks(claims, where) {
  eq(claims.preferred_username, USERNAME, `${where} preferred_username`);
  if (args.email) eq(claims.email, args.email, `${where} email`);
  else assert(typeof claims.email === 'string' && claims.email.includes('@'), `${where} email ${JSON.stringify(claims.email)}`);
}

// ---------------------------------------------------------------- the flows

const insecure = { execute: [client.allowInsecureRequests] };
const startedAt = Math.floor(Date.now() / 1000);

async function discover(clientId, metadata, auth) {
  return client.discovery(new URL(ISSUER), clientId, metadata, auth, insecure);
}

async function main() {
  console.log(`# registrar OP at ${ISSUER}`);

  // --- discovery and keys
  const conf = await check('discovery: openid-client reads /.well-known/openid-configuration (issuer matches)', () =>
    discover(CLIENT_ID, { client_secret: CLIENT_SECRET }, client.ClientSecretBasic(CLIENT_SECRET)),
  );
  const meta = conf ? conf.serverMetadata() : undefined;
  await check('discovery document has the contract\'s endpoints and values', () => {
    need(meta, 'discovery');
    for (const k of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'revocation_endpoint', 'introspection_endpoint', 'end_session_endpoint']) {
      assert(typeof meta[k] === 'string' && meta[k].startsWith(ISSUER + '/'), `${k} = ${JSON.stringify(meta[k])} (want an URL under the issuer)`);
    }
    const has = (k, vals) => {
      assert(Array.isArray(meta[k]), `${k} missing`);
      for (const v of vals) assert(meta[k].includes(v), `${k} ${JSON.stringify(meta[k])} lacks ${v}`);
    };
    has('response_types_supported', ['code']);
    has('grant_types_supported', ['authorization_code', 'refresh_token', 'client_credentials']);
    has('code_challenge_methods_supported', ['S256']);
    has('token_endpoint_auth_methods_supported', ['client_secret_basic', 'client_secret_post', 'none']);
    has('id_token_signing_alg_values_supported', ['RS256', 'ES256']);
    has('subject_types_supported', ['public']);
    has('scopes_supported', ['openid', 'profile', 'email', 'groups', 'projects', 'roles', 'offline_access']);
    assert(Array.isArray(meta.claims_supported), 'claims_supported missing');
  });

  const jwks = await check('JWKS: RSA and EC P-256 public keys, each with a kid, no private parts', async () => {
    need(meta, 'discovery');
    const res = await fetch(meta.jwks_uri);
    eq(res.status, 200, `GET ${meta.jwks_uri} status`);
    const set = await res.json();
    assert(Array.isArray(set.keys) && set.keys.length >= 2, `keys: ${JSON.stringify(set).slice(0, 300)}`);
    assert(set.keys.some((k) => k.kty === 'RSA'), 'no RSA key');
    assert(set.keys.some((k) => k.kty === 'EC' && k.crv === 'P-256'), 'no EC P-256 key');
    for (const k of set.keys) {
      assert(k.kid, `a key without kid: ${JSON.stringify(k)}`);
      for (const p of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) assert(!(p in k), `key ${k.kid} has private member ${p}`);
      await jose.importJWK(k, k.alg || (k.kty === 'RSA' ? 'RS256' : 'ES256'));
    }
    return set;
  });

  // --- confidential client: authorization code + PKCE through the login page
  const browser = new Browser();
  const verifier = client.randomPKCECodeVerifier();
  const challenge = await client.calculatePKCECodeChallenge(verifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  let loginUrl;
  const callback = await check('authorization code flow: authorize → registrar login page → redirect_uri?code&state&iss', async () => {
    need(conf, 'discovery');
    const authUrl = client.buildAuthorizationUrl(conf, {
      redirect_uri: REDIRECT_URI,
      scope: SCOPE,
      state,
      nonce,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    });
    const got = await authorize(browser, authUrl.href, REDIRECT_URI);
    assert(got.sawLogin, `no login page on the way (trace: ${browser.traceTail()})`);
    assert(!got.sawConsent, 'a first-party client was shown a consent page');
    loginUrl = got.loginUrl;
    const u = new URL(got.callback);
    assert(u.searchParams.get('code'), `no code in ${short(got.callback)}`);
    eq(u.searchParams.get('state'), state, 'state');
    eq(u.searchParams.get('iss'), ISSUER, 'iss');
    keep('authorization_code', u.searchParams.get('code'));
    return u;
  });
  await check('the unauthenticated authorize request went to /login?return_to=<the authorize URL>', () => {
    need(loginUrl, 'the login page');
    const u = new URL(loginUrl);
    eq(u.origin + u.pathname, ISSUER + '/login', 'login page');
    const rt = u.searchParams.get('return_to') || '';
    assert(rt.includes('/oauth2/authorize'), `return_to ${JSON.stringify(rt)} is not the authorize URL`);
  });

  const tokens = await check('token endpoint (client_secret_basic): code + code_verifier → tokens; openid-client validates the ID token', async () => {
    need(callback, 'an authorization code');
    const t = await client.authorizationCodeGrant(conf, callback, {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    keep('access_token', t.access_token);
    keep('refresh_token', t.refresh_token);
    keep('id_token', t.id_token);
    eq(t.token_type, 'bearer', 'token_type (lower-cased by the library)');
    assert(typeof t.expires_in === 'number' && t.expires_in > 0, `expires_in ${t.expires_in}`);
    assert(typeof t.refresh_token === 'string', 'no refresh_token although offline_access was granted');
    assert(typeof t.scope === 'string' && t.scope.split(' ').includes('openid'), `scope ${JSON.stringify(t.scope)}`);
    return t;
  });
  const claims = tokens ? tokens.claims() : undefined;
  await check('ID token: iss, aud, sub (UUID), nonce, auth_time, sid, signed with a JWKS key', () => {
    need(claims, 'an ID token');
    idTokenChecks(tokens.id_token, claims, { clientId: CLIENT_ID, nonce, startedAt, jwks: need(jwks, 'the JWKS') });
  });
  await check('ID token: at_hash matches the access token', () => atHashCheck(need(tokens, 'tokens').id_token, need(claims, 'claims'), tokens.access_token));
  await check('ID token: preferred_username and email (scopes profile, email)', () => profileChecks(need(claims, 'an ID token'), 'ID token'));
  await check('access token: a JWT (RS256) verifiable from the JWKS, aud = client_id, sub = the user', () =>
    accessTokenChecks(need(tokens, 'tokens').access_token, need(jwks, 'the JWKS'), { clientId: CLIENT_ID, sub: need(claims, 'claims').sub }),
  );

  const userinfo = await check('userinfo (fetchUserInfo with the access token; sub matches the ID token)', async () => {
    const u = await client.fetchUserInfo(conf, need(tokens, 'tokens').access_token, need(claims, 'claims').sub);
    return u;
  });
  await check('userinfo: preferred_username, email, groups [..], projects {..}, roles [..]', () => {
    const u = need(userinfo, 'userinfo');
    profileChecks(u, 'userinfo');
    assert(Array.isArray(u.groups), `groups ${JSON.stringify(u.groups)}`);
    assert(u.projects && typeof u.projects === 'object' && !Array.isArray(u.projects), `projects ${JSON.stringify(u.projects)}`);
    assert(Array.isArray(u.roles), `roles ${JSON.stringify(u.roles)}`);
    if (args['expect-group']) assert(u.groups.includes(args['expect-group']), `groups ${JSON.stringify(u.groups)} lack ${args['expect-group']}`);
    if (args['expect-project']) assert(args['expect-project'] in u.projects, `projects ${JSON.stringify(u.projects)} lack ${args['expect-project']}`);
    if (args['expect-role']) assert(u.roles.includes(args['expect-role']), `roles ${JSON.stringify(u.roles)} lack ${args['expect-role']}`);
  });

  // SSO: with registrar's session, a second authorization needs no login.
  await check('a second authorization with the registrar session skips the login page (SSO)', async () => {
    need(callback, 'a first login');
    const v = client.randomPKCECodeVerifier();
    const s = client.randomState();
    const n = client.randomNonce();
    const authUrl = client.buildAuthorizationUrl(conf, {
      redirect_uri: REDIRECT_URI, scope: 'openid profile', state: s, nonce: n,
      code_challenge: await client.calculatePKCECodeChallenge(v), code_challenge_method: 'S256',
    });
    const got = await authorize(browser, authUrl.href, REDIRECT_URI);
    assert(!got.sawLogin, 'the login page was shown again');
    const t = await client.authorizationCodeGrant(conf, new URL(got.callback), { pkceCodeVerifier: v, expectedState: s, expectedNonce: n, idTokenExpected: true });
    keep('authorization_code', new URL(got.callback).searchParams.get('code'));
    keep('access_token', t.access_token);
    keep('refresh_token', t.refresh_token);
    keep('id_token', t.id_token);
    eq(t.claims().sub, need(claims, 'the first ID token').sub, 'sub of the second login');
  });

  const refreshed = await check('refresh_token grant: new access token and a new (rotated) refresh token', async () => {
    const t = await client.refreshTokenGrant(conf, need(tokens, 'tokens').refresh_token);
    keep('access_token', t.access_token);
    keep('refresh_token', t.refresh_token);
    keep('id_token', t.id_token);
    assert(typeof t.access_token === 'string', 'no access_token');
    assert(typeof t.refresh_token === 'string', 'no refresh_token in the refresh answer');
    assert(t.refresh_token !== tokens.refresh_token, 'the refresh token was not rotated');
    if (t.id_token) {
      // OpenID Connect Core 12.2: same iss, sub, aud, azp; auth_time of the original authentication.
      const c = t.claims();
      eq(c.iss, claims.iss, 'iss of the refreshed ID token');
      eq(c.sub, claims.sub, 'sub of the refreshed ID token');
      eq(JSON.stringify(c.aud), JSON.stringify(claims.aud), 'aud of the refreshed ID token');
      eq(c.auth_time, claims.auth_time, 'auth_time of the refreshed ID token');
    }
    return t;
  });
  await check('refreshed access token: JWT verifiable from the JWKS, same sub', () =>
    accessTokenChecks(need(refreshed, 'a refresh').access_token, need(jwks, 'the JWKS'), { clientId: CLIENT_ID, sub: need(claims, 'claims').sub }),
  );

  await check('introspection of the access token: active, sub, client_id, scope, exp', async () => {
    const r = await client.tokenIntrospection(conf, need(refreshed, 'a refresh').access_token);
    eq(r.active, true, 'active');
    eq(r.sub, claims.sub, 'sub');
    eq(r.client_id, CLIENT_ID, 'client_id');
    assert(typeof r.scope === 'string' && r.scope.split(' ').includes('openid'), `scope ${JSON.stringify(r.scope)}`);
    assert(typeof r.exp === 'number', `exp ${JSON.stringify(r.exp)}`);
  });
  await check('introspection of the refresh token: active', async () => {
    const r = await client.tokenIntrospection(conf, need(refreshed, 'a refresh').refresh_token, { token_type_hint: 'refresh_token' });
    eq(r.active, true, 'active');
  });
  await check('revocation of the refresh token (200)', () =>
    client.tokenRevocation(conf, need(refreshed, 'a refresh').refresh_token, { token_type_hint: 'refresh_token' }),
  );
  await check('introspection of the revoked refresh token: active false', async () => {
    const r = await client.tokenIntrospection(conf, need(refreshed, 'a refresh').refresh_token);
    eq(r.active, false, 'active');
  });

  await check('RP-initiated logout: end_session with id_token_hint → post_logout_redirect_uri?state', async () => {
    const logoutState = client.randomState();
    const url = client.buildEndSessionUrl(conf, {
      id_token_hint: need(tokens, 'tokens').id_token,
      post_logout_redirect_uri: POST_LOGOUT_URI,
      state: logoutState,
    });
    const r = await endSession(browser, url.href, POST_LOGOUT_URI);
    assert(r.landed, `did not land on ${POST_LOGOUT_URI}: ${r.page} [trace: ${browser.traceTail(4)}]`);
    assert(!r.confirmed, 'a confirmation page although the id_token_hint is valid');
    eq(new URL(r.landed).searchParams.get('state'), logoutState, 'state on the post-logout redirect');
  });
  await check('after logout the registrar session is over: GET /account redirects to /login', async () => {
    const r = await browser.request('GET', ISSUER + '/account', { site: 'none' });
    assert(isRedirect(r.status), `GET /account answered ${r.status}: ${snippet(r.text)}`);
    eq(new URL(r.location).pathname, '/login', 'GET /account went to');
  });

  // --- public client: no secret, PKCE, token_endpoint_auth_method none
  const pub = await check('public client: discovery with token_endpoint_auth_method none', () =>
    discover(PUBLIC_CLIENT_ID, { token_endpoint_auth_method: 'none', id_token_signed_response_alg: 'ES256' }, client.None()),
  );
  const pbrowser = new Browser();
  const pv = client.randomPKCECodeVerifier();
  const ps = client.randomState();
  const pn = client.randomNonce();
  const pcb = await check('public client: authorize with PKCE through the login page', async () => {
    const authUrl = client.buildAuthorizationUrl(need(pub, 'discovery'), {
      redirect_uri: REDIRECT_URI, scope: SCOPE, state: ps, nonce: pn,
      code_challenge: await client.calculatePKCECodeChallenge(pv), code_challenge_method: 'S256',
    });
    const got = await authorize(pbrowser, authUrl.href, REDIRECT_URI);
    assert(got.sawLogin, 'no login page on the way');
    assert(!got.sawConsent, 'a first-party client was shown a consent page');
    keep('authorization_code', new URL(got.callback).searchParams.get('code'));
    return new URL(got.callback);
  });
  const ptokens = await check('public client: code + code_verifier, no client secret → tokens (ID token validated)', async () => {
    const t = await client.authorizationCodeGrant(pub, need(pcb, 'a code'), { pkceCodeVerifier: pv, expectedState: ps, expectedNonce: pn, idTokenExpected: true });
    keep('access_token', t.access_token);
    keep('refresh_token', t.refresh_token);
    keep('id_token', t.id_token);
    return t;
  });
  const pclaims = ptokens ? ptokens.claims() : undefined;
  await check('public client (registered with signing_alg ES256): ID token claims (aud = the public client, same sub as before), ES256', () => {
    need(pclaims, 'an ID token');
    eq(jose.decodeProtectedHeader(ptokens.id_token).alg, 'ES256', 'ID token alg');
    idTokenChecks(ptokens.id_token, pclaims, { clientId: PUBLIC_CLIENT_ID, nonce: pn, startedAt, jwks: need(jwks, 'the JWKS') });
    profileChecks(pclaims, 'ID token');
    if (claims) eq(pclaims.sub, claims.sub, 'sub (the same user through either client)');
  });
  await check('public client: access token aud = the public client, ES256, verifiable from the JWKS', () =>
    accessTokenChecks(need(ptokens, 'tokens').access_token, need(jwks, 'the JWKS'), { clientId: PUBLIC_CLIENT_ID, sub: need(pclaims, 'claims').sub, alg: 'ES256' }),
  );
  await check('public client: userinfo', async () => {
    const u = await client.fetchUserInfo(pub, need(ptokens, 'tokens').access_token, need(pclaims, 'claims').sub);
    profileChecks(u, 'userinfo');
  });
  const prefreshed = await check('public client: refresh_token grant rotates the refresh token', async () => {
    const t = await client.refreshTokenGrant(pub, need(ptokens?.refresh_token, 'a refresh token'));
    keep('access_token', t.access_token);
    keep('refresh_token', t.refresh_token);
    keep('id_token', t.id_token);
    assert(typeof t.refresh_token === 'string' && t.refresh_token !== ptokens.refresh_token, 'no new refresh token');
    return t;
  });
  await check('public client: revocation of its refresh token', () =>
    client.tokenRevocation(pub, need(prefreshed, 'a refresh').refresh_token, { token_type_hint: 'refresh_token' }),
  );
  await check('public client: the revoked refresh token no longer refreshes (invalid_grant)', async () => {
    need(prefreshed, 'a refresh');
    try {
      await client.refreshTokenGrant(pub, prefreshed.refresh_token);
    } catch (e) {
      eq(e.error, 'invalid_grant', 'error');
      return;
    }
    throw new Error('the revoked refresh token still refreshed');
  });
  await check('public client: RP-initiated logout (id_token_hint + client_id) ends the session', async () => {
    const url = client.buildEndSessionUrl(need(pub, 'discovery'), {
      id_token_hint: need(ptokens, 'tokens').id_token,
      post_logout_redirect_uri: POST_LOGOUT_URI,
      client_id: PUBLIC_CLIENT_ID,
    });
    const r = await endSession(pbrowser, url.href, POST_LOGOUT_URI);
    assert(r.landed, `did not land on ${POST_LOGOUT_URI}: ${r.page} [trace: ${pbrowser.traceTail(4)}]`);
    assert(!r.confirmed, 'a confirmation page although the id_token_hint is valid');
    const a = await pbrowser.request('GET', ISSUER + '/account', { site: 'none' });
    assert(isRedirect(a.status) && new URL(a.location).pathname === '/login', `GET /account answered ${a.status} ${a.location || ''}`);
  });

  // --- client_credentials (confidential client, client_secret_post this time)
  const ccConf = await check('client_credentials: discovery with client_secret_post', () =>
    discover(CLIENT_ID, { client_secret: CLIENT_SECRET }, client.ClientSecretPost(CLIENT_SECRET)),
  );
  const cc = await check('client_credentials grant (client_secret_post) → access token, no refresh or ID token', async () => {
    const t = await client.clientCredentialsGrant(need(ccConf, 'discovery'));
    keep('access_token', t.access_token);
    eq(t.token_type, 'bearer', 'token_type');
    assert(t.refresh_token === undefined, 'a refresh token for client_credentials');
    assert(t.id_token === undefined, 'an ID token for client_credentials');
    return t;
  });
  await check('client_credentials access token: JWT from the JWKS, aud = client_id', () =>
    accessTokenChecks(need(cc, 'a token').access_token, need(jwks, 'the JWKS'), { clientId: CLIENT_ID }),
  );
  await check('client_credentials access token: introspection active, client_id', async () => {
    const r = await client.tokenIntrospection(ccConf, need(cc, 'a token').access_token);
    eq(r.active, true, 'active');
    eq(r.client_id, CLIENT_ID, 'client_id');
  });
}

try {
  await main();
} catch (e) {
  failed++;
  console.log(`not ok - the driver itself: ${describe(e)}`);
}
if (args.report) writeFileSync(args.report, JSON.stringify({ secrets }, null, 1));
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
