'use strict';
/*
 * peer.js - the in-process SDK a team would use instead of keycache:
 * @aws-crypto/client-node with a raw AES keyring behind the caching
 * materials manager, suite 0x0478, encrypting fields one after another
 * on one core.  Local only: no KMS, no network.
 *
 *   node peer.js SECONDS PLAINTEXT_BYTES   ->  {"ops": N, ...}
 */
const crypto = require('crypto');
const {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  NodeCachingMaterialsManager,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  buildClient,
  getLocalCryptographicMaterialsCache,
} = require('@aws-crypto/client-node');

async function main() {
  const secs = Number(process.argv[2] || '2');
  const size = Number(process.argv[3] || '64');
  const { encrypt, decrypt } = buildClient(
    CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT);
  const keyring = new RawAesKeyringNode({
    keyName: 'bench',
    keyNamespace: 'keycache',
    unencryptedMasterKey: crypto.randomBytes(32),
    wrappingSuite:
      RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
  });
  const cmm = new NodeCachingMaterialsManager({
    backingMaterials: keyring,
    cache: getLocalCryptographicMaterialsCache(1000),
    maxAge: 3600 * 1000,
    maxMessagesEncrypted: 2 ** 32,
    maxBytesEncrypted: Number.MAX_SAFE_INTEGER,
  });
  const pt = crypto.randomBytes(size);
  const opts = {
    encryptionContext: { tenant: 't000000' },
    suiteId:
      AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY,
    plaintextLength: size,
  };
  /* Warm up, and check a round trip. */
  const first = await encrypt(cmm, pt, opts);
  const back = await decrypt(cmm, first.result);
  if (!back.plaintext.equals(pt)) {
    throw new Error('round trip failed');
  }
  let n = 0;
  const start = process.hrtime.bigint();
  const limit = BigInt(Math.round(secs * 1e9));
  let elapsed = 0n;
  do {
    for (let i = 0; i < 16; i++) {
      await encrypt(cmm, pt, opts);
    }
    n += 16;
    elapsed = process.hrtime.bigint() - start;
  } while (elapsed < limit);
  const s = Number(elapsed) / 1e9;
  process.stdout.write(JSON.stringify({
    ops: n / s, messages: n, seconds: s, plaintext_bytes: size,
    suite: '0x0478', node: process.version,
  }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`peer.js: ${e.stack || e}\n`);
  process.exit(1);
});
