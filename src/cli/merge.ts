// `instill merge --model DIR --adapter DIR --out DIR`: the base model with a LoRA adapter merged in,
// as a plain Hugging Face folder (same single-file or sharded layout as the base).
import { ErrorCode, InstillError } from '../errors.js';
import { mergeAdapter } from '../adapter/merge.js';
import { resolveModelDir } from '../model/hub.js';
import { parseCommandArgs } from './args.js';

const USAGE = `usage: instill merge --model DIR --adapter DIR --out DIR

Writes W + (alpha/r)·B·A into every adapted weight of the base model and saves the result in --out
(safetensors, the base's shards and dtype, its config and tokenizer files): a model that loads without PEFT.

options:
  --model DIR      base model folder or Hub id (the one the adapter was trained on)
  --adapter DIR    PEFT adapter folder (adapter_config.json + adapter_model.safetensors)
  --out DIR        new folder for the merged model (must not exist or be empty)
  --quiet          print only the output folder`;

export async function run(argv: string[]): Promise<number> {
  const values = parseCommandArgs(
    argv,
    { model: { type: 'string' }, adapter: { type: 'string' }, out: { type: 'string' }, quiet: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    USAGE,
  );
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  for (const k of ['model', 'adapter', 'out'] as const) if (!values[k]) throw new InstillError(ErrorCode.ARG, `--${k} DIR is required\n\n${USAGE}`);
  const base = await resolveModelDir(values.model!);
  const r = await mergeAdapter(base, values.adapter!, values.out!);
  if (values.quiet) console.log(r.out);
  else console.log(`merged ${r.merged.length} weights into ${r.out} (${r.files.join(', ')})`);
  return 0;
}
