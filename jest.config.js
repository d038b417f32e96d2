/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { diagnostics: false }] },
  // Type errors are caught by `tsc` in the build step that runs before the tests.
  globalSetup: '<rootDir>/test/global-setup.js',
  testTimeout: 120000,
  slowTestThreshold: 30,
};
