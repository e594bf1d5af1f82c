#!/usr/bin/env node
'use strict';
/*
 * fake_alibaba_kms.js - a fake Alibaba Cloud KMS (API 2016-01-20) for
 * keycache tests.  Loopback only: it listens on 127.0.0.1, on a random
 * free port, over HTTPS with a certificate made at test time.
 *
 *   node fake_alibaba_kms.js --cert server.pem --key server.key \
 *        --config fake.json
 *
 * fake.json: {"credentials": {"AKID": {"secret": "...", "token": null}},
 *             "keys": {"key-id": "alias-or-null", ...}}
 * It prints "PORT <n>" on stdout once listening and exits when stdin
 * closes (so it never outlives the test that started it).
 *
 * Operations: GenerateDataKey, Encrypt, Decrypt (no KeyId, as the real
 * API: the blob names its key) and DescribeKey (KeyId = key id, alias/NAME
 * or an ARN of cfg.region / cfg.uid; answers KeyMetadata.KeyId and Arn).
 *
 * Every KMS request is signature-checked by @alicloud/openapi-util via
 * alibaba_verify.js (V3 ACS3-HMAC-SHA256 and RPC v1 HMAC-SHA1), and
 * answered with KMS's JSON shapes; a bad signature gets HTTP 400
 * SignatureDoesNotMatch.  Keys are real AES-256-GCM keys, so data keys
 * are really wrapped and unwrapped, bound to the EncryptionContext.
 *
 * Control (unsigned, path /_fake/...):
 *   POST /_fake/fault  {"mode", "count", "op", "seconds", "retry_after"}
 *   POST /_fake/clear  drop faults, release stalled requests
 *   POST /_fake/reset  zero the counters
 *   GET  /_fake/stats  {"calls": {op: n}, "schemes": {..}, "auth": {..},
 *                       "arrived": n, "contexts": [...]}
 * Fault modes as in fake_aws_kms.py: 500, 503, throttle, reset, stall,
 * truncate, badjson, ctype, trickle, delay, notfound, denied.
 */
const crypto = require('crypto');
const fs = require('fs');
const https = require('https');
const { verifyRequest } = require('./alibaba_verify.js');

function arg(name) {
  const i = process.argv.indexOf(name);
  return i < 0 ? null : process.argv[i + 1];
}

const cfg = JSON.parse(fs.readFileSync(arg('--config'), 'utf8'));
const secretFor = {};
for (const [ak, c] of Object.entries(cfg.credentials)) secretFor[ak] = c.secret;
const keys = {};      // key id -> AES key
const aliases = {};   // alias/x -> key id
for (const [kid, alias] of Object.entries(cfg.keys)) {
  keys[kid] = crypto.randomBytes(32);
  if (alias) aliases['alias/' + alias] = kid;
}

const state = {
  calls: {}, schemes: {}, auth: {}, arrived: 0, contexts: [],
  faults: [], nonces: new Set(), stalled: [],
};

function bump(map, k) { map[k] = (map[k] || 0) + 1; }

function takeFault(op) {
  for (let i = 0; i < state.faults.length; i++) {
    const f = state.faults[i];
    if (f.op && f.op !== op) continue;
    if (f.count !== null && f.count !== undefined) {
      f.count -= 1;
      if (f.count <= 0) state.faults.splice(i, 1);
    }
    return f;
  }
  return null;
}

// --------------------------------------------------------------- crypto
function aad(ec) {
  const sorted = {};
  for (const k of Object.keys(ec || {}).sort()) sorted[k] = ec[k];
  return Buffer.from(JSON.stringify(sorted));
}

function wrap(kid, text, ec) {
  const iv = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', keys[kid], iv);
  c.setAAD(aad(ec));
  const ct = Buffer.concat([c.update(Buffer.from(text, 'utf8')), c.final()]);
  const kidb = Buffer.from(kid, 'utf8');
  return Buffer.concat([Buffer.from([kidb.length]), kidb, iv, ct,
    c.getAuthTag()]).toString('base64');
}

function unwrap(blob, ec) {
  const b = Buffer.from(blob, 'base64');
  const kl = b[0];
  const kid = b.slice(1, 1 + kl).toString('utf8');
  if (!(kid in keys)) throw new Error('unknown key');
  const iv = b.slice(1 + kl, 13 + kl);
  const tag = b.slice(b.length - 16);
  const d = crypto.createDecipheriv('aes-256-gcm', keys[kid], iv);
  d.setAAD(aad(ec));
  d.setAuthTag(tag);
  const pt = Buffer.concat([d.update(b.slice(13 + kl, b.length - 16)), d.final()]);
  return { kid, text: pt.toString('utf8') };
}

// --------------------------------------------------------------- errors
class KmsError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const REGION = cfg.region || 'cn-hangzhou';
const UID = cfg.uid || '1234567890123456';

// A key id, alias/NAME, or a key or alias ARN
// (acs:kms:<region>:<uid>:key/<id> | alias/<name>) of this fake's region.
function resolveKey(id) {
  if (!id) return null;
  if (id.startsWith('acs:kms:')) {
    const p = id.split(':');
    if (p.length !== 5 || p[2] !== REGION || p[3] !== UID) return null;
    id = p[4];
    if (id.startsWith('key/')) id = id.slice(4);
    else if (!id.startsWith('alias/')) return null;
  }
  if (id.startsWith('alias/')) return aliases[id] || null;
  return id in keys ? id : null;
}

function parseEc(params) {
  if (params.EncryptionContext === undefined) return {};
  let ec;
  try { ec = JSON.parse(params.EncryptionContext); } catch (e) {
    throw new KmsError(400, 'InvalidParameter', 'EncryptionContext is not valid JSON');
  }
  if (typeof ec !== 'object' || ec === null || Array.isArray(ec) ||
      !Object.values(ec).every((v) => typeof v === 'string')) {
    throw new KmsError(400, 'InvalidParameter', 'EncryptionContext must map strings to strings');
  }
  return ec;
}

// ------------------------------------------------------------ operations
function opGenerate(p) {
  const kid = resolveKey(p.KeyId);
  if (!kid) throw new KmsError(404, 'Forbidden.KeyNotFound', `The specified Key ${p.KeyId} is not found.`);
  const ec = parseEc(p);
  let n = 32;
  if (p.NumberOfBytes !== undefined) n = Number(p.NumberOfBytes);
  else if (p.KeySpec === 'AES_128') n = 16;
  else if (p.KeySpec !== undefined && p.KeySpec !== 'AES_256') {
    throw new KmsError(400, 'InvalidParameter', 'bad KeySpec');
  }
  if (!(n >= 1 && n <= 1024)) throw new KmsError(400, 'InvalidParameter', 'bad NumberOfBytes');
  const pt = crypto.randomBytes(n).toString('base64');
  return { KeyId: kid, KeyVersionId: 'v1-' + kid, Plaintext: pt, CiphertextBlob: wrap(kid, pt, ec) };
}

function opEncrypt(p) {
  const kid = resolveKey(p.KeyId);
  if (!kid) throw new KmsError(404, 'Forbidden.KeyNotFound', `The specified Key ${p.KeyId} is not found.`);
  if (!p.Plaintext) throw new KmsError(400, 'MissingParameter', 'Plaintext is mandatory');
  return { KeyId: kid, KeyVersionId: 'v1-' + kid, CiphertextBlob: wrap(kid, p.Plaintext, parseEc(p)) };
}

function opDecrypt(p) {
  if (!p.CiphertextBlob) throw new KmsError(400, 'MissingParameter', 'CiphertextBlob is mandatory');
  const ec = parseEc(p);
  let r;
  try { r = unwrap(p.CiphertextBlob, ec); } catch (e) {
    throw new KmsError(400, 'Rejected.InvalidCiphertext', 'The ciphertext or encryption context is invalid.');
  }
  return { KeyId: r.kid, KeyVersionId: 'v1-' + r.kid, Plaintext: r.text };
}

function opDescribeKey(p) {
  if (!p.KeyId) throw new KmsError(400, 'MissingParameter', 'KeyId is mandatory');
  const kid = resolveKey(p.KeyId);
  if (!kid) throw new KmsError(404, 'Forbidden.KeyNotFound', `The specified Key ${p.KeyId} is not found.`);
  return {
    KeyMetadata: {
      KeyId: kid, Arn: `acs:kms:${REGION}:${UID}:key/${kid}`,
      KeyState: 'Enabled', KeyUsage: 'ENCRYPT/DECRYPT', KeySpec: 'Aliyun_AES_256',
      Origin: 'Aliyun_KMS', ProtectionLevel: 'SOFTWARE', Creator: UID,
      CreationDate: '2024-01-01T00:00:00Z', PrimaryKeyVersion: 'v1-' + kid,
    },
  };
}

const OPS = { GenerateDataKey: opGenerate, Encrypt: opEncrypt, Decrypt: opDecrypt,
  DescribeKey: opDescribeKey };

// --------------------------------------------------------------- server
function sendJson(res, status, obj, requestId, extra = {}) {
  const body = Buffer.from(JSON.stringify(obj));
  res.writeHead(status, Object.assign({
    'Content-Type': 'application/json;charset=utf-8',
    'Content-Length': body.length,
    'x-acs-request-id': requestId,
  }, extra));
  res.end(body);
}

function sendError(res, status, code, message, requestId, extra) {
  sendJson(res, status, {
    RequestId: requestId, HostId: 'kms.fake.local', Code: code, Message: message,
    Recommend: 'https://api.aliyun.com/troubleshoot?q=' + code,
  }, requestId, extra);
}

// Drop the connection without an answer: a TCP reset where node can do
// it under TLS, else an abrupt close (no TLS close_notify).
function resetSocket(req) {
  const s = req.socket;
  try {
    if (s._parent && typeof s._parent.resetAndDestroy === 'function') {
      s._parent.resetAndDestroy();
      return;
    }
    s.resetAndDestroy();
  } catch (e) {
    s.destroy();
  }
}

function inject(f, req, res, requestId) {
  switch (f.mode) {
    case '500': sendError(res, 500, 'InternalFailure', 'injected 500', requestId); return true;
    case '503': sendError(res, 503, 'ServiceUnavailableTemporary', 'injected 503', requestId,
      f.retry_after !== undefined && f.retry_after !== null ? { 'Retry-After': String(f.retry_after) } : {});
      return true;
    case 'throttle': sendError(res, 400, 'Rejected.Throttling', 'QPS Limit Exceeded', requestId); return true;
    case 'notfound': sendError(res, 404, 'Forbidden.KeyNotFound', 'The specified Key is not found (injected).', requestId); return true;
    case 'denied': sendError(res, 403, 'Forbidden.NoPermission', 'This operation is forbidden by permission system (injected).', requestId); return true;
    case 'reset': resetSocket(req); return true;
    case 'stall': {
      const t = setTimeout(() => resetSocket(req), (f.seconds || 30) * 1000);
      state.stalled.push({ req, t });
      return true;
    }
    case 'truncate':
      res.writeHead(200, { 'Content-Type': 'application/json;charset=utf-8', 'Content-Length': 400, 'x-acs-request-id': requestId });
      res.write('{"KeyId": "key-');
      setTimeout(() => resetSocket(req), 20);
      return true;
    case 'badjson':
      res.writeHead(200, { 'Content-Type': 'application/json;charset=utf-8', 'x-acs-request-id': requestId });
      res.end('{"KeyId": "k", "Plain');
      return true;
    case 'ctype':
      res.writeHead(200, { 'Content-Type': 'text/html', 'x-acs-request-id': requestId });
      res.end('<html><body>gateway says hi</body></html>');
      return true;
    case 'delay': case 'trickle': return false;
    default: throw new Error('unknown fault ' + f.mode);
  }
}

function finish(f, res, out, requestId) {
  const body = Buffer.from(JSON.stringify(out));
  if (f && f.mode === 'trickle') {
    res.writeHead(200, { 'Content-Type': 'application/json;charset=utf-8', 'Content-Length': body.length, 'x-acs-request-id': requestId });
    let i = 0;
    const step = () => {
      if (res.destroyed) return;
      if (i >= body.length) { res.end(); return; }
      res.write(body.slice(i, i + 8));
      i += 8;
      setTimeout(step, (f.seconds || 0.05) * 1000);
    };
    step();
    return;
  }
  sendJson(res, 200, out, requestId);
}

function control(req, res, body) {
  const path = req.url.split('?')[0];
  if (path === '/_fake/stats') {
    sendJson(res, 200, { calls: state.calls, schemes: state.schemes, auth: state.auth,
      arrived: state.arrived, contexts: state.contexts }, 'ctl');
    return;
  }
  if (path === '/_fake/fault') {
    const f = JSON.parse(body.toString('utf8'));
    if (f.count === undefined) f.count = 1;
    state.faults.push(f);
  } else if (path === '/_fake/clear') {
    state.faults = [];
    for (const s of state.stalled) { clearTimeout(s.t); resetSocket(s.req); }
    state.stalled = [];
  } else if (path === '/_fake/reset') {
    state.calls = {}; state.schemes = {}; state.auth = {}; state.arrived = 0; state.contexts = [];
  } else {
    sendJson(res, 404, { error: 'no such control' }, 'ctl');
    return;
  }
  sendJson(res, 200, { ok: true }, 'ctl');
}

function handle(req, res, body) {
  if (req.url.startsWith('/_fake/')) { control(req, res, body); return; }
  const requestId = crypto.randomUUID().toUpperCase();
  state.arrived += 1;
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(',') : v;
  const v = verifyRequest({ method: req.method, target: req.url, headers, body }, secretFor);
  if (!v.ok) {
    bump(state.auth, v.code);
    const msg = v.code === 'SignatureDoesNotMatch'
      ? 'Specified signature is not matched with our calculation.' : 'authentication failed: ' + v.code;
    sendError(res, v.httpStatus, v.code, msg, requestId);
    return;
  }
  // The STS token, when the credentials have one, must come along.
  const want = cfg.credentials[v.accessKeyId].token;
  const got = v.scheme === 'RPC-HMAC-SHA1' ? v.params.SecurityToken : headers['x-acs-security-token'];
  if (want && got !== want) {
    bump(state.auth, 'InvalidSecurityToken.Mismatch');
    sendError(res, 400, 'InvalidSecurityToken.MismatchWithAccessKey', 'The security token does not match.', requestId);
    return;
  }
  // A nonce may be used once: retries must be signed afresh.
  const nonce = v.scheme === 'RPC-HMAC-SHA1' ? v.params.SignatureNonce : headers['x-acs-signature-nonce'];
  if (state.nonces.has(nonce)) {
    bump(state.auth, 'SignatureNonceUsed');
    sendError(res, 400, 'SignatureNonceUsed', 'Specified signature nonce was used already.', requestId);
    return;
  }
  state.nonces.add(nonce);
  const op = v.action;
  bump(state.calls, op);
  bump(state.schemes, v.scheme);
  const f = takeFault(op);
  if (f && inject(f, req, res, requestId)) return;
  const run = () => {
    try {
      if (req.method !== 'POST' || body.length !== 0) {
        throw new KmsError(400, 'InvalidParameter', 'expected POST with parameters in the query');
      }
      if (v.params.Version !== undefined && v.params.Version !== '2016-01-20') {
        throw new KmsError(400, 'InvalidVersion', 'bad Version');
      }
      if (v.scheme !== 'RPC-HMAC-SHA1' && headers['x-acs-version'] !== '2016-01-20') {
        throw new KmsError(400, 'InvalidVersion', 'bad x-acs-version');
      }
      const fn = OPS[op];
      if (!fn) throw new KmsError(400, 'InvalidAction.NotFound', 'Specified api is not found');
      state.contexts.push([op, v.params.EncryptionContext === undefined ? null : v.params.EncryptionContext]);
      const out = fn(v.params);
      out.RequestId = requestId;
      finish(f, res, out, requestId);
    } catch (e) {
      if (!(e instanceof KmsError)) throw e;
      sendError(res, e.status, e.code, e.message, requestId);
    }
  };
  if (f && f.mode === 'delay') setTimeout(run, (f.seconds || 0.5) * 1000);
  else run();
}

const server = https.createServer({
  cert: fs.readFileSync(arg('--cert')), key: fs.readFileSync(arg('--key')),
  minVersion: 'TLSv1.2',
}, (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => handle(req, res, Buffer.concat(chunks)));
});
server.keepAliveTimeout = 30000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
