#!/usr/bin/env node
// Thin launcher: the CLI is compiled from src/cli/main.ts into dist/ by `npm install` (prepare).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'src', 'cli', 'main.js');
if (!existsSync(entry)) {
  console.error(`instill: ${entry} is missing. Run \`npm install\` (or \`npm run build\`) in ${root} first.`);
  process.exit(1);
}
const { main } = await import(pathToFileURL(entry).href);
process.exitCode = await main(process.argv.slice(2));
