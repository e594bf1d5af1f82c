'use strict';
/*
 * alibaba_verify.js - independent Alibaba Cloud signature checker for the
 * fake KMS (copied from ../shared/kms-verifiers/alibaba_sign.js, minus its
 * self test).  The canonicalisation and HMAC come from the npm package
 * @alicloud/openapi-util (pinned in package.json), not from keycache:
 *   - RPC v1 (HMAC-SHA1 Signature parameter): getRPCSignature()
 *   - V3 ACS3-HMAC-SHA256 Authorization header: getAuthorization()
 */
const crypto = require('crypto');
const OpenApiUtil = require('@alicloud/openapi-util').default;

function rpcSignature(params, method, secret) {
  return OpenApiUtil.getRPCSignature(params, method.toUpperCase(), secret);
}

/** V3: full Authorization header value for req {method, pathname, query, headers, body}. */
function v3Authorization(req, accessKeyId, secret, algorithm = 'ACS3-HMAC-SHA256') {
  const payloadHash = OpenApiUtil.hexEncode(
    OpenApiUtil.hash(Buffer.from(req.body || ''), algorithm));
  return OpenApiUtil.getAuthorization(
    { method: req.method, pathname: req.pathname, query: req.query || {}, headers: req.headers },
    algorithm, payloadHash, accessKeyId, secret);
}

// ---------------------------------------------------------------- parsing
function parseRawHttp(buf) {
  let sep = buf.indexOf('\r\n\r\n');
  let sepLen = 4;
  if (sep < 0) { sep = buf.indexOf('\n\n'); sepLen = 2; }
  if (sep < 0) { sep = buf.length; sepLen = 0; }
  const head = buf.slice(0, sep).toString('latin1').split(/\r?\n/);
  const body = buf.slice(sep + sepLen);
  const [method, target] = head[0].split(' ');
  const headers = {};
  for (const line of head.slice(1)) {
    if (!line) continue;
    const i = line.indexOf(':');
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { method, target, headers, body };
}

// form/query decoding: '+' means space, exactly as a real server would read it
function formToObject(s) {
  const out = {};
  for (const [k, v] of new URLSearchParams(s)) out[k] = v;
  return out;
}

function safeEqual(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

/**
 * Verify one received request. secretFor: {AccessKeyId: secret}.
 * Returns {ok, scheme, code, httpStatus, detail}; code mimics Alibaba errors.
 */
function verifyRequest({ method, target, headers, body }, secretFor, opts = {}) {
  const maxSkewMs = (opts.maxSkewSeconds ?? 900) * 1000;
  const now = opts.now ?? Date.now();
  const qpos = target.indexOf('?');
  const pathname = qpos < 0 ? target : target.slice(0, qpos);
  const rawQuery = qpos < 0 ? '' : target.slice(qpos + 1);
  const query = formToObject(rawQuery);
  const bodyBuf = Buffer.isBuffer(body) ? body : Buffer.from(body || '');
  const ctype = (headers['content-type'] || '').toLowerCase();
  const fail = (code, httpStatus, detail) => ({ ok: false, code, httpStatus, detail });

  const auth = headers['authorization'] || '';
  if (auth.startsWith('ACS3-')) {
    // ---- V3 header signature
    const m = /^(ACS3-[A-Z0-9-]+) Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]+)$/
      .exec(auth.trim());
    if (!m) return fail('IncompleteSignature', 400, 'bad Authorization');
    const [, algorithm, akid, signedList, got] = m;
    if (!(akid in secretFor)) return fail('InvalidAccessKeyId.NotFound', 404, akid);
    const signed = signedList.split(';');
    for (const h of ['host', 'x-acs-action', 'x-acs-version', 'x-acs-date',
      'x-acs-signature-nonce', 'x-acs-content-sha256']) {
      if (!signed.includes(h) || !(h in headers)) return fail('IncompleteSignature', 400, 'unsigned/missing ' + h);
    }
    const hdrs = {};
    for (const h of signed) {
      if (!(h in headers)) return fail('IncompleteSignature', 400, 'missing ' + h);
      hdrs[h] = headers[h];
    }
    const bodyHash = OpenApiUtil.hexEncode(OpenApiUtil.hash(bodyBuf, algorithm));
    if (headers['x-acs-content-sha256'] !== bodyHash) return fail('ContentSHA256Mismatch', 400, bodyHash);
    const skew = Math.abs(now - Date.parse(headers['x-acs-date']));
    if (!(skew <= maxSkewMs)) return fail('InvalidTimeStamp.Expired', 400, headers['x-acs-date']);
    const expected = OpenApiUtil.getAuthorization(
      { method, pathname, query, headers: hdrs }, algorithm, bodyHash, akid, secretFor[akid]);
    const exp = /Signature=([0-9a-f]+)$/.exec(expected)[1];
    if (!safeEqual(exp, got)) return fail('SignatureDoesNotMatch', 400, { expected: exp, got });
    return { ok: true, scheme: algorithm, accessKeyId: akid, action: headers['x-acs-action'],
      params: Object.assign({}, query, ctype.startsWith('application/x-www-form-urlencoded')
        ? formToObject(bodyBuf.toString('utf8')) : {}) };
  }

  // ---- RPC signature v1: parameters from the query string and a form body
  const params = Object.assign({}, query);
  if (ctype.startsWith('application/x-www-form-urlencoded') && bodyBuf.length) {
    Object.assign(params, formToObject(bodyBuf.toString('utf8')));
  }
  if (!('Signature' in params)) return fail('MissingSignature', 400, '');
  const got = params.Signature;
  delete params.Signature;
  const akid = params.AccessKeyId;
  if (!(akid in secretFor)) return fail('InvalidAccessKeyId.NotFound', 404, akid);
  if (params.SignatureMethod !== 'HMAC-SHA1') return fail('InvalidSignatureMethod', 400, params.SignatureMethod);
  if (params.SignatureVersion !== '1.0') return fail('UnsupportedSignatureVersion', 400, params.SignatureVersion);
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(params.Timestamp || '')) return fail('IllegalTimestamp', 400, params.Timestamp);
  if (!(Math.abs(now - Date.parse(params.Timestamp)) <= maxSkewMs)) return fail('InvalidTimeStamp.Expired', 400, params.Timestamp);
  if (!params.SignatureNonce) return fail('MissingSignatureNonce', 400, '');
  const exp = rpcSignature(params, method, secretFor[akid]);
  if (!safeEqual(exp, got)) return fail('SignatureDoesNotMatch', 400, { expected: exp, got });
  return { ok: true, scheme: 'RPC-HMAC-SHA1', accessKeyId: akid, action: params.Action, params };
}

module.exports = { rpcSignature, v3Authorization, verifyRequest, parseRawHttp };
