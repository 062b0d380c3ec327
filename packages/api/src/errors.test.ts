import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Compile } from 'typebox/compile';
import { ApiError, ERROR_CATALOG, ErrorBody, statusForCode } from './errors.ts';

describe('error catalog', () => {
  it('maps every catalogued code to its status', () => {
    for (const [code, entry] of Object.entries(ERROR_CATALOG)) assert.equal(statusForCode(code), entry.status);
    assert.equal(statusForCode('NOT_FOUND'), 404);
    assert.equal(statusForCode('IMAGE_IN_USE'), 409);
    assert.equal(statusForCode('RATE_LIMITED'), 429);
  });

  it('maps engine codes by exact code, then by prefix', () => {
    assert.equal(statusForCode('QCOW2_ERR_BAD_MAGIC'), 422);
    assert.equal(statusForCode('STORE_ERR_ANYTHING'), 422);
    assert.equal(statusForCode('QEMU_ERR_IMG_LOCKED'), 409);
    assert.equal(statusForCode('QEMU_ERR_IMG_FAILED'), 500);
    assert.equal(statusForCode('QMP_ERR_TIMEOUT'), 502);
    assert.equal(statusForCode('XFER_ERR_NO_SPACE'), 507, "a full server disk is not the caller's fault");
    assert.equal(statusForCode('XFER_ERR_DISK'), 500);
    assert.equal(statusForCode('STORE_ERR_DISK'), 500, "the server's own disk failing is not the caller's fault");
    assert.equal(statusForCode('STORE_ERR_NO_SPACE'), 507);
    assert.equal(statusForCode('QEMU_ERR_IMG_NO_SPACE'), 507);
    assert.equal(statusForCode('NO_SPACE'), 507);
    assert.equal(statusForCode('DESKTOP_PAUSED'), 409);
    assert.equal(statusForCode('XFER_ERR_PIECE_HASH'), 422);
  });

  it('knows nothing of foreign codes', () => {
    for (const code of ['ENOENT', 'ERR_INVALID_ARG', 'toString', '__proto__', 'constructor', '', 'x'.repeat(100)]) {
      assert.equal(statusForCode(code), undefined, code);
    }
  });

  it('ApiError renders the one wire shape', () => {
    const check = Compile(ErrorBody);
    const plain = new ApiError('NOT_FOUND');
    assert.equal(plain.status, 404);
    assert.deepEqual(plain.toBody(), { error: { code: 'NOT_FOUND', message: ERROR_CATALOG.NOT_FOUND.message } });
    const withData = new ApiError('IMAGE_IN_USE', 'in use', { desktops: 2 });
    assert.deepEqual(withData.toBody(), { error: { code: 'IMAGE_IN_USE', message: 'in use', data: { desktops: 2 } } });
    assert.ok(check.Check(plain.toBody()) && check.Check(withData.toBody()));
    assert.ok(plain instanceof Error);
  });
});
