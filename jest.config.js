/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { diagnostics: false }] },
  // Type errors are caught by `tsc` in the build step that runs before the tests.
  globalSetup: '<rootDir>/test/global-setup.js',
  // Generous: the first run on a fresh machine builds the agent images (npm installs) inside tests.
  testTimeout: 900000,
  slowTestThreshold: 30,
};
