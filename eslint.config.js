// Lint rules for every package. Layering is enforced here, not by convention:
// imports flow qcow2, qmp -> qemu -> store -> transfer -> server, client -> cli (see docs/architecture.md).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Which @roamdesk packages each package may import. */
const layers = {
  qcow2: [],
  qmp: [],
  qemu: ['qcow2', 'qmp'],
  store: ['qcow2', 'qmp', 'qemu'],
  transfer: ['qcow2', 'store'],
  api: [],
  server: ['qcow2', 'qmp', 'qemu', 'store', 'transfer', 'api', 'web'],
  client: ['qcow2', 'qmp', 'qemu', 'store', 'transfer', 'api'],
  web: ['api'],
  cli: ['qcow2', 'qmp', 'qemu', 'store', 'transfer', 'api', 'server', 'client', 'web'],
};
const all = Object.keys(layers);

export default tseslint.config(
  // packages/web/public: browser ES modules served as-is (no build); they carry // @ts-check instead.
  { ignores: ['**/node_modules/**', '.cache/**', '**/dist/**', 'packages/*/bin/**', 'eslint.config.js', 'packages/web/public/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // node:test's describe/it return promises the runner tracks itself.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }],
      }],
      'no-console': 'off',
    },
  },
  ...Object.entries(layers).map(([pkg, allowed]) => ({
    files: [`packages/${pkg}/src/**/*.ts`],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          ...all.filter((p) => p !== pkg && !allowed.includes(p)).map((p) => ({
            group: [`@roamdesk/${p}`, `@roamdesk/${p}/*`],
            message: `packages/${pkg} may not import @roamdesk/${p} (layering, see eslint.config.js).`,
          })),
          { group: ['../../*/src/*', '@roamdesk/*/src/*'], message: 'Import other packages through their index only.' },
        ],
      }],
    },
  })),
  {
    // The device and the CLI take only types from @roamdesk/api: its schemas load TypeBox (hundreds of modules,
    // about a second of every command's start-up). Values come from @roamdesk/api/core.
    files: ['packages/{client,cli}/src/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', {
        paths: [{ name: '@roamdesk/api', allowTypeImports: true, message: 'Import values from @roamdesk/api/core (no TypeBox at start-up); only types from @roamdesk/api.' }],
      }],
    },
  },
  {
    // Library packages never log or exit: the CLI and the server decide what the user sees.
    files: ['packages/{qcow2,qmp,qemu,store,transfer,api}/src/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: {
      'no-console': 'error',
      'no-restricted-properties': ['error', { object: 'process', property: 'exit', message: 'Libraries never exit.' }],
    },
  },
);
