// `instill data inspect --model DIR --data FILE [...]`: counts and highlighted examples of a dataset.
import { ErrorCode, InstillError } from '../errors.js';
import { DATASET_FORMATS, parseFormat } from '../data/formats.js';
import { TRAIN_ON, type TrainOn } from '../data/masking.js';
import { TRUNCATIONS, type Truncation } from '../data/truncation.js';
import { formatInspect, inspectData } from '../data/inspect.js';
import { parseCommandArgs } from './args.js';

const USAGE = `usage: instill data inspect --model DIR --data FILE [--data FILE ...] [options]

Shows what instill makes of instruction data: per-file counts (examples, tokens, target tokens,
truncated, dropped, bad records with file and line) and the first examples with the trained tokens
highlighted.

options:
  --model DIR            model folder with tokenizer.json (and tokenizer_config.json)
  --data FILE            .jsonl, .json (array or JSONL) or .parquet; repeat for several files
  --format F             ${DATASET_FORMATS.join(' | ')} (default: detected per file)
  --template T           chatml | alpaca | llama3 | zephyr | model | FILE.jinja (default: the model's own)
  --train-on W           ${TRAIN_ON.join(' | ')} (default: assistant = every assistant turn)
  --max-seq-len N        default: the model's context length, at most 4096
  --truncation S         ${TRUNCATIONS.join(' | ')} (default: right = keep the start)
  --append-eos           text records: add EOS after the text
  --strict               stop at the first bad record instead of skipping it
  --examples N           examples shown per file (default 3)
  --json                 machine-readable JSON on stdout
  --color / --no-color   highlight with terminal colors (default: when stdout is a terminal)`;

function oneOf<T extends string>(name: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new InstillError(ErrorCode.ARG, `Expected one of ${allowed.join(', ')} for --${name} but received '${value}'`);
}

function integer(name: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new InstillError(ErrorCode.ARG, `Expected integer >= ${min} for --${name} but received '${value}'`);
  return n;
}

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    console.log(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'inspect') {
    console.error(`instill data: unknown subcommand '${sub}'\n\n${USAGE}`);
    return 2;
  }
  const values = parseCommandArgs(
    rest,
    {
      model: { type: 'string' },
      data: { type: 'string', multiple: true },
      format: { type: 'string' },
      template: { type: 'string' },
      'train-on': { type: 'string' },
      'max-seq-len': { type: 'string' },
      truncation: { type: 'string' },
      'append-eos': { type: 'boolean' },
      strict: { type: 'boolean' },
      examples: { type: 'string' },
      json: { type: 'boolean' },
      color: { type: 'boolean' },
      'no-color': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    USAGE,
  );
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.model) throw new InstillError(ErrorCode.ARG, `--model DIR is required\n\n${USAGE}`);
  if (!values.data || values.data.length === 0) throw new InstillError(ErrorCode.ARG, `--data FILE is required\n\n${USAGE}`);

  const result = await inspectData({
    modelDir: values.model,
    files: values.data,
    format: values.format === undefined ? undefined : parseFormat(values.format),
    template: values.template,
    trainOn: oneOf<TrainOn>('train-on', values['train-on'], TRAIN_ON),
    maxSeqLen: integer('max-seq-len', values['max-seq-len'], 2),
    truncation: oneOf<Truncation>('truncation', values.truncation, TRUNCATIONS),
    strict: values.strict === true,
    appendEos: values['append-eos'] === true,
    examples: integer('examples', values.examples, 0),
  });

  if (values.json) {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } else {
    const color = values['no-color'] ? false : values.color ? true : process.stdout.isTTY === true && !process.env.NO_COLOR;
    process.stdout.write(formatInspect(result, { color }) + '\n');
  }
  return 0;
}
