// The one way tests reach ../shared/fixtures.
//
// INSTILL_FIXTURES overrides the folder (default: ../shared/fixtures relative to
// the repository root). Under CI=true a missing fixture is a failure; elsewhere
// the test that needs it is skipped with a message saying why.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const fixturesDir: string = process.env.INSTILL_FIXTURES
  ? resolve(process.env.INSTILL_FIXTURES)
  : resolve(repoRoot, '..', 'shared', 'fixtures');

const inCI = process.env.CI === 'true' || process.env.CI === '1';

/** Absolute path of a fixture file or folder (relative to the fixtures folder). */
export function fixturePath(rel: string): string {
  return join(fixturesDir, rel);
}

/**
 * Whether a fixture is present. Returns false (and prints why) when it is missing
 * outside CI, so the caller can skip; throws under CI, where a missing fixture is a failure.
 */
export function haveFixture(rel: string): boolean {
  const p = fixturePath(rel);
  if (existsSync(p)) return true;
  const msg = `fixture ${rel} not found at ${p} (set INSTILL_FIXTURES to the shared fixtures folder)`;
  if (inCI) throw new Error(`${msg}; under CI a missing fixture is a failure`);
  console.warn(`skipping: ${msg}`);
  return false;
}
