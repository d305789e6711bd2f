// `instill generate --model DIR --prompt TEXT [--adapter DIR] [...]`: continue a prompt.
import { parseArgs } from 'node:util';
import { ErrorCode, InstillError } from '../errors.js';
import { loadModel } from '../model/model.js';

const USAGE = `usage: instill generate --model DIR|ORG/NAME --prompt TEXT [options]

Continues a prompt with a model folder (or a Hugging Face Hub id from the local cache,
downloaded when online), optionally with a PEFT LoRA adapter.

options:
  --model DIR            model folder (config.json, model.safetensors, tokenizer.json) or Hub id
  --prompt TEXT          the prompt (tokenized with the model's tokenizer, BOS as its config says)
  --adapter DIR          PEFT adapter folder (adapter_config.json + adapter_model.safetensors)
  --max-new-tokens N     default 100
  --temperature T        default 0 (greedy)
  --top-p P              default 1
  --seed N               default 0
  --device D             cpu | cuda (default cpu; cuda needs a CUDA build and a GPU)
  --dtype D              f32 | bf16 | f16 weights in memory (default bf16 with --device cuda, else f32)
  --json                 print { ids, text } as JSON`;

function number(name: string, value: string | undefined, check: (n: number) => boolean, want: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!check(n)) throw new InstillError(ErrorCode.ARG, `Expected ${want} for --${name} but received '${value}'`);
  return n;
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' },
        prompt: { type: 'string' },
        adapter: { type: 'string' },
        'max-new-tokens': { type: 'string' },
        temperature: { type: 'string' },
        'top-p': { type: 'string' },
        seed: { type: 'string' },
        device: { type: 'string' },
        dtype: { type: 'string' },
        json: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`instill generate: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (!values.model || values.prompt === undefined) {
    console.error(`instill generate: --model and --prompt are required\n\n${USAGE}`);
    return 2;
  }
  const device = values.device ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new InstillError(ErrorCode.ARG, `Expected cpu or cuda for --device but received '${device}'`);
  const dtype = values.dtype ?? (device === 'cuda' ? 'bf16' : 'f32');  // as instill train
  if (!['f32', 'bf16', 'f16'].includes(dtype)) throw new InstillError(ErrorCode.ARG, `Expected f32, bf16 or f16 for --dtype but received '${dtype}'`);
  const opts = {
    maxNewTokens: number('max-new-tokens', values['max-new-tokens'], (n) => Number.isInteger(n) && n >= 0, 'an integer >= 0'),
    temperature: number('temperature', values.temperature, (n) => Number.isFinite(n) && n >= 0, 'a number >= 0'),
    topP: number('top-p', values['top-p'], (n) => n > 0 && n <= 1, 'a number in (0, 1]'),
    seed: number('seed', values.seed, (n) => Number.isInteger(n), 'an integer'),
  };
  const model = await loadModel(values.model, { dtype: dtype as 'f32' | 'bf16' | 'f16', device });
  if (values.adapter) model.loadAdapter(values.adapter);
  const r = await model.generate(values.prompt, opts);
  if (values.json) console.log(JSON.stringify({ ids: r.ids, text: r.text }));
  else console.log(values.prompt + (r.text ?? ''));
  return 0;
}
