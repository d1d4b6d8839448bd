// Lint configuration: typescript-eslint's type-aware rules on src, test and bench.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      'no-console': 'error',
    },
  },
  // The import rules of docs/architecture.md, as far as a per-file lint can say them (test/architecture.test.ts
  // checks all of them on the whole graph, cycles included).
  {
    files: ['src/datachannel/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: 'node:net', message: 'the data-channel layer knows no sockets' }],
          patterns: [
            {
              group: ['**/forward/*', '**/mux/*', '**/ssm/*', '**/socks/*', '**/emulator/*'],
              message: 'the data-channel layer knows no forwards, mux, SSM API, SOCKS or emulator',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/mux/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/datachannel/*', '**/forward/*', '**/ssm/*', '**/emulator/*'],
              message: 'smux knows no data channel, forwards, SSM API or emulator',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/emulator/**', 'src/harness/**', 'src/datachannel/**', 'src/mux/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/emulator/*'],
              message: 'product code never imports the emulator (src/harness/ may)',
            },
          ],
        },
      ],
    },
  },
);
