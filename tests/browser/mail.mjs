// Reading the SMTP sink's Maildir: aiosmtpd's Mailbox handler delivers each
// message as one file in `<maildir>/new` (written to `tmp/`, then renamed).
// A small RFC 5322/MIME parser: unfolded headers, RFC 2047 encoded words,
// quoted-printable and base64 bodies, and the text/plain part of multiparts.

import fs from 'node:fs';
import path from 'node:path';

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Bytes of a quoted-printable body (soft line breaks removed). */
export function decodeQuotedPrintable(text) {
  const joined = text.replace(/=\r?\n/g, '');
  const bytes = [];
  for (let i = 0; i < joined.length; i += 1) {
    const c = joined[i];
    if (c === '=' && /^[0-9A-Fa-f]{2}$/.test(joined.slice(i + 1, i + 3))) {
      bytes.push(parseInt(joined.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(c, 'latin1'));
    }
  }
  return Buffer.from(bytes);
}

function decodeBytes(bytes, charset) {
  try {
    return new TextDecoder(charset || 'utf-8').decode(bytes);
  } catch {
    return new TextDecoder('utf-8').decode(bytes);
  }
}

/** A header value with its RFC 2047 encoded words (`=?utf-8?q?...?=`) decoded. */
export function decodeWords(value) {
  return value
    .replace(/\?=\s+=\?/g, '?==?') // whitespace between encoded words is not text
    .replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=/g, (_, charset, enc, data) => {
      const bytes = enc.toUpperCase() === 'B'
        ? Buffer.from(data, 'base64')
        : decodeQuotedPrintable(data.replace(/_/g, ' '));
      return decodeBytes(bytes, charset);
    });
}

function splitHeadersAndBody(raw) {
  const m = /\r?\n\r?\n/.exec(raw);
  if (!m) return [raw, ''];
  return [raw.slice(0, m.index), raw.slice(m.index + m[0].length)];
}

function parseHeaders(block) {
  const headers = new Map();
  const unfolded = block.replace(/\r?\n[ \t]+/g, ' ');
  for (const line of unfolded.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    const value = decodeWords(line.slice(i + 1).trim());
    headers.set(name, [...(headers.get(name) ?? []), value]);
  }
  return headers;
}

/** `text/plain; charset="utf-8"` -> { type: 'text/plain', params: { charset: 'utf-8' } } */
function parseContentType(value) {
  const [type, ...rest] = (value || 'text/plain').split(';');
  const params = {};
  for (const p of rest) {
    const i = p.indexOf('=');
    if (i > 0) params[p.slice(0, i).trim().toLowerCase()] = p.slice(i + 1).trim().replace(/^"(.*)"$/, '$1');
  }
  return { type: type.trim().toLowerCase(), params };
}

function decodeBody(body, headers) {
  const ct = parseContentType(headers.get('content-type')?.[0]);
  if (ct.type.startsWith('multipart/') && ct.params.boundary) {
    const parts = body.split(`--${ct.params.boundary}`).slice(1);
    const decoded = parts
      .filter((p) => !p.startsWith('--'))
      .map((p) => {
        const [h, b] = splitHeadersAndBody(p.replace(/^\r?\n/, ''));
        const ph = parseHeaders(h);
        return { type: parseContentType(ph.get('content-type')?.[0]).type, text: decodeBody(b, ph) };
      });
    return (decoded.find((p) => p.type === 'text/plain') ?? decoded[0] ?? { text: '' }).text;
  }
  const cte = (headers.get('content-transfer-encoding')?.[0] ?? '7bit').toLowerCase();
  let bytes;
  if (cte === 'quoted-printable') bytes = decodeQuotedPrintable(body);
  else if (cte === 'base64') bytes = Buffer.from(body.replace(/\s+/g, ''), 'base64');
  else bytes = Buffer.from(body, 'latin1');
  return decodeBytes(bytes, ct.params.charset).replace(/\r\n/g, '\n');
}

/** One message: { subject, from, to: [addresses], headers, body (decoded text), file }. */
export function parseMessage(raw, file = '') {
  const [head, body] = splitHeadersAndBody(raw);
  // `raw` holds the file's bytes one char each: raw UTF-8 header text
  // (SMTPUTF8) is read back as UTF-8; a body is decoded by its charset.
  const headers = parseHeaders(Buffer.from(head, 'latin1').toString('utf8'));
  const addresses = (name) => (headers.get(name) ?? [])
    .flatMap((v) => v.split(','))
    .map((a) => (/<([^>]+)>/.exec(a)?.[1] ?? a).trim().toLowerCase())
    .filter(Boolean);
  // aiosmtpd records the envelope recipients as X-RcptTo (what was really sent).
  const to = [...new Set([...addresses('to'), ...addresses('x-rcptto')])];
  return {
    subject: headers.get('subject')?.[0] ?? '',
    from: headers.get('from')?.[0] ?? '',
    to,
    headers,
    body: decodeBody(body, headers),
    file,
  };
}

/** Every http(s) URL in a text, each with whether it stands on a line of its own. */
export function links(text) {
  const found = [];
  for (const line of text.split('\n')) {
    for (const m of line.matchAll(/https?:\/\/[^\s<>"]+/g)) {
      found.push({ url: m[0], ownLine: line.trim() === m[0] });
    }
  }
  return found;
}

export class Maildir {
  /** Messages already in the Maildir when the run starts are ignored. */
  constructor(dir) {
    this.dir = dir;
    this.newDir = path.join(dir, 'new');
    this.seen = new Set(this.#files());
    this.inbox = [];
  }

  #files() {
    try {
      return fs.readdirSync(this.newDir).filter((f) => !f.startsWith('.'));
    } catch {
      return [];
    }
  }

  /** Reads messages delivered since the last look into the inbox. */
  #collect() {
    for (const f of this.#files().sort()) {
      if (this.seen.has(f)) continue;
      this.seen.add(f);
      const raw = fs.readFileSync(path.join(this.newDir, f), 'latin1');
      this.inbox.push({ ...parseMessage(raw, f), taken: false });
    }
  }

  #matching(to) {
    const want = to.toLowerCase();
    return this.inbox.filter((m) => !m.taken && m.to.includes(want));
  }

  /**
   * Waits for the next message to `to` (and with `subject`, when given), takes
   * it out of the inbox and answers it; throws after `timeoutMs`.
   */
  async waitFor({ to, subject, timeoutMs = 20000 }) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.#collect();
      const m = this.#matching(to).find((x) => subject === undefined || x.subject === subject);
      if (m) {
        m.taken = true;
        return m;
      }
      if (Date.now() > deadline) {
        const got = this.inbox.map((x) => `${x.to.join(',')}: "${x.subject}"`).join('; ') || 'nothing';
        throw new Error(`no mail to ${to}${subject ? ` with subject "${subject}"` : ''} within ${timeoutMs} ms (received: ${got})`);
      }
      await sleep(200);
    }
  }

  /** The messages to `to` that arrive within `waitMs` (none expected, usually). */
  async arrivingFor(to, waitMs) {
    await sleep(waitMs);
    this.#collect();
    return this.#matching(to);
  }
}
