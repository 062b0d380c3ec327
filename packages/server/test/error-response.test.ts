import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ApiError } from '@roamdesk/api';
import { RateLimitedError } from '../src/errors.ts';
import { toErrorResponse } from '../src/http/error-response.ts';
import { EngineError } from './fakes.ts';

describe('toErrorResponse', () => {
  it('renders ApiErrors by the catalog, with Retry-After for rate limits', () => {
    const r = toErrorResponse(new RateLimitedError(7), 'req-1');
    assert.equal(r.status, 429);
    assert.equal(r.headers['retry-after'], '7');
    assert.deepEqual(r.body.error.data, { retryAfterSeconds: 7 });
    assert.equal(toErrorResponse(new ApiError('IMAGE_IN_USE'), 'x').status, 409);
  });

  it('passes engine codes through; data only for client errors', () => {
    const q = toErrorResponse(new EngineError('QCOW2_ERR_DIRTY_IMAGE', 'dirty', { bits: '1' }), 'r');
    assert.deepEqual([q.status, q.body], [422, { error: { code: 'QCOW2_ERR_DIRTY_IMAGE', message: 'dirty', data: { bits: '1' } } }]);
    const e = toErrorResponse(new EngineError('QEMU_ERR_IMG_FAILED', 'qemu-img failed', { stderr: '/srv/secret' }), 'r2');
    assert.equal(e.status, 500);
    assert.deepEqual(e.body.error.data, { requestId: 'r2' });
    assert.ok(e.unexpected);
  });

  it("says the server's disk is full (507 NO_SPACE, with what to do) for ENOSPC, EDQUOT or SQLITE_FULL, also as a cause, and no more", () => {
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, open '/srv/roamdesk/store/meta/x.json'"), { code: 'ENOSPC' });
    const full = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    for (const err of [enospc, full, Object.assign(new Error('quota'), { code: 'EDQUOT' }), new Error('publish failed', { cause: new Error('write', { cause: enospc }) })]) {
      const r = toErrorResponse(err, 'req-7');
      assert.equal(r.status, 507);
      assert.equal(r.body.error.code, 'NO_SPACE');
      assert.equal(r.body.error.message, "The server's disk is full.");
      assert.deepEqual(Object.keys(r.body.error.data ?? {}), ['requestId', 'hint']);
      assert.match(String(r.body.error.data?.['hint']), /administrator to free space/);
      assert.doesNotMatch(JSON.stringify(r.body), /srv/, 'no server path');
      assert.ok(r.unexpected, 'logged for the operator');
    }
    assert.equal(toErrorResponse(Object.assign(new Error('x'), { code: 'EIO' }), 'r').status, 500);
  });

  it('hides everything about unexpected errors', () => {
    for (const err of [new Error('/etc/shadow leaked'), new TypeError('x is undefined'), 'a string', null, { code: 'ENOENT', message: '/secret' }]) {
      const r = toErrorResponse(err, 'req-9');
      assert.equal(r.status, 500);
      assert.deepEqual(r.body, { error: { code: 'INTERNAL', message: 'Internal server error.', data: { requestId: 'req-9' } } });
    }
  });

  it('maps schema and fastify client errors', () => {
    const v = toErrorResponse({ validation: [{ instancePath: '/name', message: 'bad' }], validationContext: 'params', statusCode: 400 }, 'r');
    assert.deepEqual(v.body, { error: { code: 'VALIDATION_FAILED', message: 'invalid params', data: { in: 'params', issues: [{ path: '/name', message: 'bad' }] } } });
    assert.equal(toErrorResponse({ code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413, message: 'big' }, 'r').body.error.code, 'PAYLOAD_TOO_LARGE');
    assert.equal(toErrorResponse({ code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', statusCode: 415, message: 'm' }, 'r').status, 415);
    assert.equal(toErrorResponse({ code: 'FST_ERR_CTP_INVALID_JSON_BODY', statusCode: 400, message: 'bad json' }, 'r').body.error.code, 'VALIDATION_FAILED');
  });
});
