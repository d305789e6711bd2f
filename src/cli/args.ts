// Command-line options of the `instill` commands: one place that parses them
// strictly (unknown options and stray words are errors) and turns a parse error
// into an InstillError that carries the command's usage.
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { ErrorCode, InstillError } from '../errors.js';

export type OptionsConfig = NonNullable<ParseArgsConfig['options']>;

type Strict<O extends OptionsConfig> = { args: string[]; options: O; strict: true; allowPositionals: false };

/** The values of `argv` parsed against `options`; an E_ARG InstillError with `usage` on a bad option. */
export function parseCommandArgs<const O extends OptionsConfig>(
  argv: string[],
  options: O,
  usage: string,
): ReturnType<typeof parseArgs<Strict<O>>>['values'] {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new InstillError(ErrorCode.ARG, `${(err as Error).message}\n\n${usage}`);
  }
}
