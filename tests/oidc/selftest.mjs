// Self-test of provider.mjs: drives the code flow exactly as a non-browser
// test would (plain HTTP, no redirects followed, cookies carried by hand) and
// checks every /test/mode. Run: node selftest.mjs   (after npm ci)
// It is also the reference for the sequence documented in README.md.

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';

const REDIRECT = 'http://127.0.0.1:9/callback';
const SECRET = 'registrar-secret';
let passed = 0;
let failed = 0;
function check(name, ok, extra = '') {
  if (ok) passed += 1; else failed += 1;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${extra ? ` -- ${extra}` : ''}`);
}

const child = spawn(process.execPath, [
  fileURLToPath(new URL('./provider.mjs', import.meta.url)),
  '--port', '0', '--redirect-uri', REDIRECT, '--redirect-uri', 'http://127.0.0.1:9/other',
], { stdio: ['ignore', 'pipe', 'inherit'] });
const issuer = await new Promise((resolve, reject) => {
  const rl = createInterface({ input: child.stdout });
  rl.on('line', (line) => { if (line.startsWith('READY ')) resolve(line.slice(6).trim()); });
  child.once('exit', (code) => reject(new Error(`provider exited early (${code})`)));
});
console.log(`provider at ${issuer}`);

// Minimal cookie store that keeps only name=value (the last Set-Cookie for a
// name wins; an empty value deletes). Sending every kept cookie on every
// request to the provider is enough; paths need not be honoured.
function storeCookies(jar, res) {
  for (const sc of res.headers.getSetCookie()) {
    const [pair] = sc.split(';');
    const i = pair.indexOf('=');
    const name = pair.slice(0, i);
    const value = pair.slice(i + 1);
    if (value === '') jar.delete(name); else jar.set(name, value);
  }
}
const cookieHeader = (jar) => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
const abs = (loc) => new URL(loc, issuer).href;

async function req(jar, method, url, body) {
  const res = await fetch(abs(url), {
    method,
    redirect: 'manual',
    headers: {
      cookie: cookieHeader(jar),
      ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
    },
    body: body ? new URLSearchParams(body).toString() : undefined,
  });
  storeCookies(jar, res);
  return res;
}

async function codeFlow(login, { clientId = 'registrar', jar = new Map() } = {}) {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const state = crypto.randomBytes(8).toString('base64url');
  const nonce = crypto.randomBytes(8).toString('base64url');
  const q = new URLSearchParams({
    client_id: clientId, response_type: 'code', scope: 'openid email profile', redirect_uri: REDIRECT,
    state, nonce, code_challenge: challenge, code_challenge_method: 'S256',
  });
  const trace = [];
  let res = await req(jar, 'GET', `/auth?${q}`);
  trace.push(`GET /auth -> ${res.status} ${res.headers.get('location')}`);
  for (let i = 0; i < 10; i += 1) {
    const loc = res.headers.get('location');
    if (res.status !== 303 || !loc) throw new Error(`unexpected ${res.status}: ${await res.text()}`);
    if (loc.startsWith(REDIRECT)) {
      const cb = new URL(loc).searchParams;
      return {
        code: cb.get('code'), state: cb.get('state'), iss: cb.get('iss'), sentState: state, verifier, nonce, jar, trace,
      };
    }
    res = await req(jar, 'GET', loc);
    trace.push(`GET ${new URL(abs(loc)).pathname} -> ${res.status} ${res.headers.get('location') ?? ''}`);
    if (res.status === 200) {
      const html = await res.text();
      const action = html.match(/<form[^>]*action="([^"]+)"/)[1];
      const prompt = html.match(/name="prompt" value="(\w+)"/)[1];
      const form = prompt === 'login' ? { prompt, login, password: 'any' } : { prompt };
      res = await req(jar, 'POST', action, form);
      trace.push(`POST ${new URL(abs(action)).pathname} ${JSON.stringify(form)} -> ${res.status} ${res.headers.get('location')}`);
    }
  }
  throw new Error('too many redirects');
}

async function token(code, verifier, { clientId = 'registrar', secret = SECRET } = {}) {
  const body = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT });
  if (verifier !== undefined) body.set('code_verifier', verifier);
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body,
  });
  return { status: res.status, json: await res.json().catch(() => null) };
}

const post = (path, obj) => fetch(`${issuer}${path}`, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(obj),
});

try {
  const disc = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  check('discovery issuer', disc.issuer === issuer);
  check('discovery token endpoint', disc.token_endpoint === `${issuer}/token`, disc.token_endpoint);
  const JWKS = createRemoteJWKSet(new URL(disc.jwks_uri));

  check('upsert account', (await post('/test/accounts', {
    sub: 'alice', email: 'alice@example.org', email_verified: true, given_name: 'Alice',
    family_name: 'Liddell', name: 'Alice Liddell', preferred_username: 'alice',
  })).status === 200);

  const f = await codeFlow('alice');
  console.log(`  ${f.trace.join('\n  ')}`);
  check('callback state', f.state === f.sentState);
  check('callback iss', f.iss === issuer, f.iss);
  let t = await token(f.code, f.verifier);
  check('token 200', t.status === 200, t.status === 200 ? Object.keys(t.json).join(',') : JSON.stringify(t.json));
  const { payload } = await jwtVerify(t.json.id_token, JWKS, { issuer, audience: 'registrar' });
  console.log(`  id_token: ${JSON.stringify(payload)}`);
  check('id_token claims', payload.sub === 'alice' && payload.email === 'alice@example.org'
    && payload.email_verified === true && payload.name === 'Alice Liddell'
    && payload.given_name === 'Alice' && payload.family_name === 'Liddell'
    && payload.preferred_username === 'alice' && payload.nonce === f.nonce);
  // SSO: same cookie jar (carries _session) -> no interaction at all.
  const sso = await codeFlow('ignored', { jar: f.jar });
  check('SSO with _session cookie skips login+consent', sso.trace.length === 1, sso.trace.join(' | '));

  t = await token(f.code, f.verifier);
  check('code replay refused (and revokes the grant)', t.status === 400 && t.json.error === 'invalid_grant');
  const again = await codeFlow('ignored', { jar: f.jar });
  check('after replay the grant is gone: consent asked again', again.trace.length === 4, again.trace.join(' | '));

  let g = await codeFlow('alice');
  t = await token(g.code, g.verifier, { secret: 'wrong' });
  check('wrong client secret -> 401 invalid_client', t.status === 401 && t.json.error === 'invalid_client');
  t = await token(g.code, undefined);
  check('missing code_verifier -> 400 invalid_grant', t.status === 400 && t.json.error === 'invalid_grant');
  t = await token(g.code, `${g.verifier.slice(0, -1)}${g.verifier.endsWith('A') ? 'B' : 'A'}`);
  check('wrong code_verifier -> 400 invalid_grant', t.status === 400 && t.json.error === 'invalid_grant');
  t = await token(g.code, g.verifier, { clientId: 'other', secret: 'other-secret' });
  check('code of registrar redeemed by other -> invalid_grant', t.status === 400 && t.json.error === 'invalid_grant');

  g = await codeFlow('stranger');
  t = await token(g.code, g.verifier);
  const strange = decodeJwt(t.json.id_token);
  check('unknown account -> only sub', strange.sub === 'stranger' && !('email' in strange), JSON.stringify(strange));

  const expectations = {
    'tamper-signature': /signature verification failed/,
    'wrong-audience': /"aud" claim/,
    'wrong-issuer': /"iss" claim/,
  };
  for (const [mode, re] of Object.entries(expectations)) {
    await post('/test/mode', { mode });
    g = await codeFlow('alice');
    t = await token(g.code, g.verifier);
    let err;
    try { await jwtVerify(t.json.id_token, JWKS, { issuer, audience: 'registrar' }); } catch (e) { err = e; }
    const p = decodeJwt(t.json.id_token);
    check(`mode ${mode}`, t.status === 200 && err && re.test(err.message), `${err?.message}; aud=${p.aud} iss=${p.iss}`);
  }
  await post('/test/mode', { mode: 'error' });
  g = await codeFlow('alice');
  t = await token(g.code, g.verifier);
  check('mode error -> 500', t.status === 500, JSON.stringify(t.json));
  await post('/test/mode', { mode: 'normal' });
  t = await token(g.code, g.verifier);
  check('mode normal again (code not consumed by error mode)', t.status === 200);
} catch (err) {
  check('unexpected exception', false, err.stack);
} finally {
  child.kill('SIGTERM');
  const code = await new Promise((resolve) => { child.once('exit', (c, s) => resolve(c ?? s)); });
  check('provider exits 0 on SIGTERM', code === 0, String(code));
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
