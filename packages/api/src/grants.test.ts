import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Value } from 'typebox/value';
import { isGrantBody, parseGrant, signGrant, verifyGrant } from './grants.ts';
import { GrantBody } from './schemas/leases.ts';

const body: GrantBody = {
  desktop: 'desk',
  desktopId: '00000000-0000-4000-8000-000000000001',
  deviceId: '00000000-0000-4000-8000-000000000002',
  generation: 3,
  issuedAt: '2025-01-01T00:00:00.000Z',
  expiresAt: '2025-01-08T00:00:00.000Z',
  maxOfflineSeconds: 604800,
};

function keys() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, pem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

describe('offline grants', () => {
  it('a signed grant verifies with the public key and gives its body back', () => {
    const k = keys();
    const grant = signGrant(body, k.privateKey);
    assert.match(grant, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    assert.deepEqual(verifyGrant(grant, k.pem), { ok: true, body });
    // The private key as PEM signs the same way.
    const pemSigned = signGrant(body, k.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());
    assert.equal(verifyGrant(pemSigned, k.pem).ok, true);
  });

  it('fails when tampered with, or with another key', () => {
    const k = keys();
    const grant = signGrant(body, k.privateKey);
    const [payload = '', signature = ''] = grant.split('.');
    // A longer offline time, re-encoded: the signature no longer matches.
    const forged = Buffer.from(JSON.stringify({ ...body, expiresAt: '2030-01-01T00:00:00.000Z' })).toString('base64url');
    assert.deepEqual(verifyGrant(`${forged}.${signature}`, k.pem), { ok: false, reason: 'bad signature' });
    // One flipped signature character.
    const flipped = signature.slice(0, 5) + (signature[5] === 'A' ? 'B' : 'A') + signature.slice(6);
    assert.equal(verifyGrant(`${payload}.${flipped}`, k.pem).ok, false);
    assert.equal(verifyGrant(grant, keys().pem).ok, false);
  });

  it('refuses what is not a grant, and keys that are not Ed25519 public keys', () => {
    const k = keys();
    for (const bad of ['', 'a', 'a.b.c', 'a.', '.b', 'x'.repeat(5000) + '.y', 'eyJ9.abc', `${Buffer.from('[]').toString('base64url')}.abc`]) {
      assert.equal(verifyGrant(bad, k.pem).ok, false, bad.slice(0, 20));
    }
    const wrongShape = Buffer.from(JSON.stringify({ ...body, generation: 0 })).toString('base64url');
    assert.deepEqual(parseGrant(`${wrongShape}.abc`), { ok: false, reason: 'grant body has the wrong shape' });
    const grant = signGrant(body, k.privateKey);
    assert.equal(verifyGrant(grant, 'not a pem').ok, false);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    assert.deepEqual(verifyGrant(grant, rsa), { ok: false, reason: 'the grant key is not an Ed25519 key' });
  });

  it('parseGrant reads the body without verifying it (display only)', () => {
    const grant = signGrant(body, keys().privateKey);
    assert.deepEqual(parseGrant(grant), { ok: true, body });
  });

  it('isGrantBody (no schema library, for the device) answers exactly as the GrantBody schema', () => {
    const near = fc.oneof(
      fc.constantFrom('desk', 'a', 'x'.repeat(63), 'x'.repeat(64), '', 'A', '../x', 'a..b', body.desktopId.toUpperCase(), body.desktopId, 'not-a-uuid'),
      fc.integer({ min: -2, max: 3 }), fc.constantFrom(0.5, Number.MAX_SAFE_INTEGER + 2, Number.NaN, 1e3),
      fc.constantFrom(null, true, [], {}, '2025-01-01T00:00:00.000Z', '', 7),
    );
    // One or two fields changed at a time, so each rule is tried with every other field valid.
    const keys = [...Object.keys(body), 'extra'];
    const change = fc.tuple(fc.constantFrom(...keys), near);
    const variant = fc.tuple(change, fc.option(change)).map(([[k, v], second]) => ({ ...body, [k]: v, ...(second === null ? {} : { [second[0]]: second[1] }) }));
    fc.assert(fc.property(fc.oneof(variant, fc.anything()), (v) => {
      assert.equal(isGrantBody(v), Value.Check(GrantBody, v), JSON.stringify(v));
    }), { numRuns: 3000 });
    // Missing fields, one at a time.
    for (const k of Object.keys(body)) {
      const partial: Record<string, unknown> = { ...body };
      delete partial[k];
      assert.equal(isGrantBody(partial), false, k);
    }
  });
});
