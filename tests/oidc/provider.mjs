// Test-only OpenID Connect provider for registrar's integration tests.
//
//   node provider.mjs --port PORT --redirect-uri URI [--redirect-uri URI2 ...]
//                     [--client-secret SECRET]
//
// A real panva/oidc-provider 9.x instance with devInteractions (plain HTML
// login/consent forms), plus test-only endpoints:
//   POST /test/accounts  {"sub": ..., "email": ..., ...}  upsert an account
//   POST /test/mode      {"mode": "normal"|"tamper-signature"|"wrong-audience"|"wrong-nonce"|"expired"
//                                 |"wrong-issuer"|"error"}
//   GET  /test/mode      current mode
// --port 0 picks a free port; the issuer printed in "READY <issuer>" is the
// one to use. See README.md for the HTTP sequence a non-browser test drives.

import * as http from 'node:http';
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';
import {
  CompactSign, decodeProtectedHeader, exportJWK, generateKeyPair,
} from 'jose';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    'client-secret': { type: 'string', default: 'registrar-secret' },
  },
  strict: true,
});

if (args.port === undefined || !/^\d+$/.test(args.port)) {
  console.error('usage: node provider.mjs --port PORT --redirect-uri URI [--redirect-uri URI ...] [--client-secret S]');
  process.exit(2);
}
const redirectUris = args['redirect-uri'] ?? [];
if (redirectUris.length === 0) {
  console.error('at least one --redirect-uri is required');
  process.exit(2);
}

const MODES = new Set(['normal', 'tamper-signature', 'wrong-audience', 'wrong-issuer', 'wrong-nonce', 'expired', 'error']);
let mode = 'normal';

// sub -> claims object (always contains sub)
const accounts = new Map();

const ACCOUNT_FIELDS = ['email', 'email_verified', 'given_name', 'family_name', 'name', 'preferred_username'];

async function findAccount(_ctx, id) {
  const stored = accounts.get(id);
  return {
    accountId: id,
    // oidc-provider filters these by the granted scopes/claims.
    async claims(_use, _scope, _claims, _rejected) {
      return stored ? { ...stored } : { sub: id };
    },
  };
}

// RS256 signing key, generated per run; the provider signs with it and so
// can this script (for the re-signing tamper modes).
const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const kid = crypto.randomUUID();
const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };

async function resign(idToken, mutate) {
  const [, p] = idToken.split('.');
  const header = decodeProtectedHeader(idToken);
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  mutate(payload);
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader(header)
    .sign(privateKey);
}

function tamperSignature(idToken) {
  const [h, p, s] = idToken.split('.');
  // Flip a character well inside the signature (the last base64url char of a
  // 2048-bit signature carries padding bits, so changing it may be a no-op).
  const i = Math.floor(s.length / 2);
  const flipped = s[i] === 'A' ? 'B' : 'A';
  return `${h}.${p}.${s.slice(0, i)}${flipped}${s.slice(i + 1)}`;
}

let provider;
let providerCallback;

function sendJson(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}'));
      } catch (err) {
        reject(err);
      }
    });
    req.on('error', reject);
  });
}

async function handleTest(req, res) {
  const { pathname } = new URL(req.url, 'http://127.0.0.1');
  try {
    if (pathname === '/test/accounts' && req.method === 'POST') {
      const body = await readJson(req);
      if (typeof body.sub !== 'string' || body.sub === '') {
        return sendJson(res, 400, { error: 'sub (non-empty string) is required' });
      }
      const claims = { sub: body.sub };
      for (const f of ACCOUNT_FIELDS) {
        if (body[f] !== undefined && body[f] !== null) claims[f] = body[f];
      }
      accounts.set(body.sub, claims);
      return sendJson(res, 200, claims);
    }
    if (pathname === '/test/mode' && req.method === 'POST') {
      const body = await readJson(req);
      if (!MODES.has(body.mode)) {
        return sendJson(res, 400, { error: `mode must be one of ${[...MODES].join(', ')}` });
      }
      mode = body.mode;
      return sendJson(res, 200, { mode });
    }
    if (pathname === '/test/mode' && req.method === 'GET') {
      return sendJson(res, 200, { mode });
    }
    return sendJson(res, 404, { error: 'unknown test endpoint' });
  } catch (err) {
    return sendJson(res, 400, { error: `bad request: ${err.message}` });
  }
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/test/')) {
    handleTest(req, res);
  } else if (providerCallback) {
    providerCallback(req, res);
  } else {
    sendJson(res, 503, { error: 'starting' });
  }
});

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const clientBase = {
  client_secret: args['client-secret'],
  redirect_uris: redirectUris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
};

provider = new Provider(issuer, {
  clients: [
    { ...clientBase, client_id: 'registrar' },
    { ...clientBase, client_id: 'other', client_secret: 'other-secret' },
  ],
  jwks: { keys: [privateJwk] },
  findAccount,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
  },
  scopes: ['openid', 'email', 'profile'],
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
  },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  ttl: {
    AuthorizationCode: 60,
    IdToken: 3600,
    AccessToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
});

const tokenPath = new URL(provider.urlFor('token')).pathname; // '/token'

provider.use(async (ctx, next) => {
  const isToken = ctx.path === tokenPath && ctx.method === 'POST';
  if (isToken && mode === 'error') {
    ctx.status = 500;
    ctx.body = { error: 'server_error', error_description: 'forced by test mode "error"' };
    return;
  }
  await next();
  if (!isToken || mode === 'normal' || ctx.status !== 200) return;
  const body = ctx.body;
  if (!body || typeof body !== 'object' || typeof body.id_token !== 'string') return;
  switch (mode) {
    case 'tamper-signature':
      body.id_token = tamperSignature(body.id_token);
      break;
    case 'wrong-audience':
      body.id_token = await resign(body.id_token, (p) => { p.aud = 'someone-else'; });
      break;
    case 'wrong-issuer':
      body.id_token = await resign(body.id_token, (p) => { p.iss = 'http://evil.example'; });
      break;
    case 'wrong-nonce':
      body.id_token = await resign(body.id_token, (p) => { p.nonce = 'not-the-nonce-registrar-sent'; });
      break;
    case 'expired': {
      const now = Math.floor(Date.now() / 1000);
      body.id_token = await resign(body.id_token, (p) => { p.iat = now - 7200; p.exp = now - 3600; });
      break;
    }
    default:
      break;
  }
  ctx.body = body;
});

providerCallback = provider.callback();

process.on('SIGTERM', () => { server.close(); process.exit(0); });
process.on('SIGINT', () => { server.close(); process.exit(0); });

process.stdout.write(`READY ${issuer}\n`);
