import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**', 'data/**', 'bench/**'],
    // Integration tests share one PostgreSQL and one Redis; each test file makes its own
    // database and queue names, so files may run in parallel, two at a time on this machine.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
