// `roamdesk server --config FILE`: a settings file that cannot be used is refused with what is wrong, before
// anything is created (the server itself is started with a good file by test/e2e/keeper.test.ts).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/roamdesk.js', import.meta.url));

describe('roamdesk server --config', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roamdesk-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const cases: Array<[string, string | null, string, RegExp]> = [
    ['a missing file', null, 'CLI_USAGE', /cannot read the settings file .*missing\.json/],
    ['a file that is not JSON', '{"lease": ', 'CLI_USAGE', /is not JSON/],
    ['JSON that is not an object', '[1, 2]', 'CLI_USAGE', /must hold a JSON object/],
    ['an unknown setting', '{"lease": {"replicateEvery": 60}}', 'CONFIG_INVALID', /\/lease/],
    ['a policy out of range', '{"lease": {"replicateEverySeconds": -1}}', 'CONFIG_INVALID', /replicateEverySeconds/],
  ];
  for (const [what, content, code, message] of cases) {
    it(`refuses ${what}, naming it, and creates nothing`, async () => {
      const file = join(dir, content === null ? 'missing.json' : `${code}-${what.replaceAll(' ', '-')}.json`);
      if (content !== null) await writeFile(file, content);
      const data = join(dir, `data-${what.replaceAll(' ', '-')}`);
      const r = spawnSync(process.execPath, [BIN, 'server', '--config', file, '--data', data, '--listen', '127.0.0.1:0', '--json'], { encoding: 'utf8', timeout: 60_000 });
      assert.notEqual(r.status, 0, r.stdout);
      const error = (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;
      assert.equal(error.code, code, r.stdout);
      assert.match(error.message, message);
      await assert.rejects(access(data), 'no data directory was created');
    });
  }
});
