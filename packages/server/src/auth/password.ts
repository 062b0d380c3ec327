// argon2id password hashes (@node-rs/argon2: prebuilt, no compile step). The PHC string stores its own
// parameters, so raising the costs later still verifies old hashes.

import { type Algorithm, hash, verify } from '@node-rs/argon2';
import type { PasswordHasher } from '../ports.ts';

// Algorithm.Argon2id. Algorithm is a `const enum` in an ambient declaration, which verbatimModuleSyntax
// (isolated transpilation) cannot inline, so the value is spelled out and checked against the type.
const ARGON2ID: Algorithm.Argon2id = 2;

export interface Argon2Costs {
  memoryKiB: number;
  iterations: number;
  parallelism: number;
}

export function argon2Hasher(costs: Argon2Costs): PasswordHasher {
  return {
    hash: (password) =>
      hash(password, {
        algorithm: ARGON2ID,
        memoryCost: costs.memoryKiB,
        timeCost: costs.iterations,
        parallelism: costs.parallelism,
      }),
    verify: async (phc, password) => {
      try {
        return await verify(phc, password);
      } catch {
        // A malformed stored hash must not turn a login into a 500: it simply does not verify.
        return false;
      }
    },
  };
}
