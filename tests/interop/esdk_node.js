#!/usr/bin/env node
// esdk_node.js - the official AWS Encryption SDK for JavaScript (Node),
// driven as a filter for keycache's interop test (test_interop_node.py).
//
// Usage:  node esdk_node.js encrypt|decrypt|order < requests.json > results.json
//         node esdk_node.js version
//
// stdin is one JSON request object, or a JSON array of them (one Node
// start-up for many cases).  stdout is one JSON result per request, in
// the same shape (object or array).  Binary values travel as base64.
//
// Every request carries the wrapping key, the same one keycache's local
// provider uses (a raw AES keyring over the same 256-bit key bytes,
// namespace and name):
//   key_b64      the 32-byte master key
//   namespace    key namespace (the EDK provider id)
//   name         key name (start of the EDK provider info)
//   others       optional list of {key_b64, namespace, name}: more raw AES
//                keyrings; with them a multi-keyring is used, so encrypt
//                writes one EDK per keyring
//   others_first optional, default false: the others come first (the
//                first keyring is the multi-keyring's generator)
//   utf8_sorting optional, default true: the keyring's utf8Sorting
//                option.  false selects the SDK's historical default,
//                which sorts the encryption context it authenticates
//                when wrapping with String.prototype.localeCompare
//                (aws-encryption-sdk-javascript issue 428).
// encrypt also takes:
//   plaintext_b64, context (object str -> str), suite (number, e.g.
//   0x0478 = 1144), frame_length (optional number)
// decrypt also takes:
//   ciphertext_b64
//
// A result is {ok: true, ...} or {ok: false, error: "message"}:
//   encrypt -> ciphertext_b64, suite, frame_length
//   decrypt -> plaintext_b64, context (the header's full context), suite,
//              frame_length
// order takes only a context and returns just locale_order_matches_utf8.
// Each result also has locale_order_matches_utf8: whether sorting the
// context keys (the request's for encrypt, the message's for decrypt) with
// localeCompare gives the same order as sorting their UTF-8 bytes, i.e.
// whether utf8_sorting false and true authenticate the same bytes.
//
// Exit status: 0 when every request was processed (whatever each result
// says), 2 for a usage or input error.  No network: the raw AES keyring
// never leaves this process.
'use strict'

const path = require('path')

let sdk
try {
  sdk = require(path.join(__dirname, 'node_modules', '@aws-crypto',
    'client-node'))
} catch (e) {
  process.stderr.write('esdk_node.js: cannot load @aws-crypto/client-node ' +
    'from ' + path.join(__dirname, 'node_modules') + ' (run ' +
    'tests/interop/install.sh): ' + e.message + '\n')
  process.exit(3)
}

const {
  buildClient,
  CommitmentPolicy,
  MultiKeyringNode,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier
} = sdk

const client = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)

function usage (msg) {
  process.stderr.write('esdk_node.js: ' + msg + '\n' +
    'usage: node esdk_node.js encrypt|decrypt|order|version < requests.json\n')
  process.exit(2)
}

function b64 (s, field) {
  if (typeof s !== 'string') throw new Error(field + ' must be a base64 string')
  return Buffer.from(s, 'base64')
}

function keyring (req) {
  if (req.others === undefined) return oneKeyring(req)
  if (!Array.isArray(req.others)) throw new Error('others must be an array')
  const rings = req.others.map((o) => oneKeyring(Object.assign({
    utf8_sorting: req.utf8_sorting
  }, o)))
  if (req.others_first) rings.push(oneKeyring(req))
  else rings.unshift(oneKeyring(req))
  return new MultiKeyringNode({ generator: rings[0], children: rings.slice(1) })
}

function oneKeyring (req) {
  const key = b64(req.key_b64, 'key_b64')
  if (key.length !== 32) throw new Error('key_b64 must decode to 32 bytes')
  if (typeof req.namespace !== 'string' || typeof req.name !== 'string') {
    throw new Error('namespace and name must be strings')
  }
  const input = {
    keyNamespace: req.namespace,
    keyName: req.name,
    unencryptedMasterKey: new Uint8Array(key),
    wrappingSuite:
      RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING
  }
  const utf8 = req.utf8_sorting === undefined ? true : req.utf8_sorting
  if (typeof utf8 !== 'boolean') throw new Error('utf8_sorting must be a boolean')
  // Leave the option unset (the SDK default) rather than passing false, so
  // the historical mode is exactly what an application gets by default.
  if (utf8) input.utf8Sorting = true
  return new RawAesKeyringNode(input)
}

function byteCompare (a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

function localeMatchesUtf8 (ctx) {
  const keys = Object.keys(ctx)
  const byLocale = keys.slice().sort((a, b) => a.localeCompare(b))
  const byBytes = keys.slice().sort(byteCompare)
  return byLocale.every((k, i) => k === byBytes[i])
}

function checkContext (ctx) {
  if (ctx === undefined) return {}
  if (ctx === null || typeof ctx !== 'object' || Array.isArray(ctx)) {
    throw new Error('context must be an object')
  }
  for (const [k, v] of Object.entries(ctx)) {
    if (typeof v !== 'string') throw new Error('context value of ' + k + ' must be a string')
  }
  return ctx
}

async function doEncrypt (req) {
  const ctx = checkContext(req.context)
  const op = { encryptionContext: ctx }
  if (req.suite !== undefined) op.suiteId = req.suite
  if (req.frame_length !== undefined) op.frameLength = req.frame_length
  const pt = b64(req.plaintext_b64, 'plaintext_b64')
  const { result, messageHeader } = await client.encrypt(keyring(req), pt, op)
  return {
    ok: true,
    ciphertext_b64: Buffer.from(result).toString('base64'),
    suite: messageHeader.suiteId,
    frame_length: messageHeader.frameLength,
    // The keyring authenticates the full context, public key included.
    locale_order_matches_utf8: localeMatchesUtf8(messageHeader.encryptionContext)
  }
}

async function doDecrypt (req) {
  const ct = b64(req.ciphertext_b64, 'ciphertext_b64')
  const { plaintext, messageHeader } = await client.decrypt(keyring(req), ct)
  const ctx = messageHeader.encryptionContext
  return {
    ok: true,
    plaintext_b64: Buffer.from(plaintext).toString('base64'),
    context: ctx,
    suite: messageHeader.suiteId,
    frame_length: messageHeader.frameLength,
    locale_order_matches_utf8: localeMatchesUtf8(ctx)
  }
}

async function one (cmd, req) {
  try {
    if (req === null || typeof req !== 'object' || Array.isArray(req)) {
      throw new Error('a request must be a JSON object')
    }
    if (cmd === 'order') {
      return { ok: true, locale_order_matches_utf8: localeMatchesUtf8(checkContext(req.context)) }
    }
    return await (cmd === 'encrypt' ? doEncrypt(req) : doDecrypt(req))
  } catch (e) {
    return { ok: false, error: String((e && e.message) || e) }
  }
}

function readStdin () {
  return new Promise((resolve, reject) => {
    const chunks = []
    process.stdin.on('data', (c) => chunks.push(c))
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    process.stdin.on('error', reject)
  })
}

async function main () {
  const cmd = process.argv[2]
  if (cmd === 'version') {
    const pkg = require(path.join(__dirname, 'node_modules', '@aws-crypto',
      'client-node', 'package.json'))
    process.stdout.write(JSON.stringify({ client_node: pkg.version, node: process.version }) + '\n')
    return
  }
  if (cmd !== 'encrypt' && cmd !== 'decrypt' && cmd !== 'order') usage('unknown command ' + JSON.stringify(cmd))
  let input
  try {
    input = JSON.parse(await readStdin())
  } catch (e) {
    usage('stdin is not JSON: ' + e.message)
  }
  let out
  if (Array.isArray(input)) {
    out = []
    // One at a time: results stay in order and memory stays bounded.
    for (const req of input) out.push(await one(cmd, req))
  } else {
    out = await one(cmd, input)
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

main().catch((e) => {
  process.stderr.write('esdk_node.js: ' + ((e && e.stack) || e) + '\n')
  process.exit(2)
})
