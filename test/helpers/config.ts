import { ConfigError, loadConfig } from '../../src/config/config';

/** Runs loadConfig and returns the ConfigError it throws; fails the test when it does not throw one. */
export function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}
