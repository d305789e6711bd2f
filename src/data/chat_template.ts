// Chat templates: a conversation (list of messages) -> the exact text the model sees.
//
// The model's own Jinja `chat_template` (tokenizer_config.json) is rendered with @huggingface/jinja, which
// applies the same settings as transformers (trim_blocks, lstrip_blocks, the trailing newline of the
// template dropped) and provides `raise_exception` and `strftime_now`. The variables passed are those
// transformers passes: `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `pad_token`,
// `unk_token`.
//
// When the model has no template (most base models), the user names one of the fallbacks below or gives
// a Jinja file. A named template whose markers (`<|im_end|>`, `<|eot_id|>`) are not tokens of the model's
// vocabulary still renders, but the markers are then learnt as plain text: `templateWarnings` says so.
import { readFileSync, existsSync } from 'node:fs';
import { Template } from '@huggingface/jinja';
import { ErrorCode, InstillError } from '../errors.js';
import type { Tokenizer } from './tokenizer.js';

/** One message of a conversation. */
export interface ChatMessage {
  role: string;
  content: string;
}

/** Built-in templates for models that have none. Each writes an end-of-turn marker after every answer. */
export const NAMED_CHAT_TEMPLATES: Readonly<Record<string, string>> = {
  chatml:
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
  llama3:
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
  alpaca:
    "{{ bos_token }}{% for message in messages %}" +
    "{% if loop.index0 > 0 and messages[loop.index0 - 1]['role'] == 'assistant' %}{{ '\\n\\n' }}{% endif %}" +
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}" +
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}" +
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token }}{% endif %}" +
    "{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}",
  zephyr:
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}",
};

/** Marker tokens each named template needs in the vocabulary to work as intended. */
const NAMED_MARKERS: Readonly<Record<string, string[]>> = {
  chatml: ['<|im_start|>', '<|im_end|>'],
  llama3: ['<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'],
  alpaca: [],
  zephyr: [],
};

export interface RenderOptions {
  addGenerationPrompt?: boolean;
}

/** A compiled chat template bound to a tokenizer's special tokens. */
export class ChatTemplate {
  /** 'model' (the model's own), a name of NAMED_CHAT_TEMPLATES, or the path of a user template. */
  readonly name: string;
  readonly source: string;
  private readonly compiled: Template;
  private readonly vars: Record<string, unknown>;

  constructor(name: string, source: string, tokenizer: Pick<Tokenizer, 'bosToken' | 'eosToken' | 'padToken' | 'unkToken'>) {
    this.name = name;
    this.source = source;
    try {
      this.compiled = new Template(source);
    } catch (err) {
      throw new InstillError(ErrorCode.DATA, `chat template '${name}' does not parse: ${(err as Error).message}`, { cause: err });
    }
    this.vars = {
      bos_token: tokenizer.bosToken ?? '',
      eos_token: tokenizer.eosToken ?? '',
      pad_token: tokenizer.padToken ?? '',
      unk_token: tokenizer.unkToken ?? '',
    };
  }

  /** The text of `messages`; with `addGenerationPrompt`, followed by the header that starts an answer. */
  render(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    try {
      return this.compiled.render({
        ...this.vars,
        messages,
        add_generation_prompt: options.addGenerationPrompt === true,
      });
    } catch (err) {
      throw new InstillError(ErrorCode.DATA, `chat template '${this.name}' failed to render: ${(err as Error).message}`, { cause: err });
    }
  }
}

/**
 * The template to use: `choice` (a name of NAMED_CHAT_TEMPLATES or a path to a Jinja file) when given,
 * else the model's own. Returns null when there is neither (callers that need one say what to pass).
 */
export function resolveChatTemplate(tokenizer: Tokenizer, choice?: string | null): ChatTemplate | null {
  if (choice) {
    const named = NAMED_CHAT_TEMPLATES[choice];
    if (named !== undefined) return new ChatTemplate(choice, named, tokenizer);
    if (choice === 'model') {
      if (tokenizer.chatTemplate === null) throw new InstillError(ErrorCode.ARG, `--template model: the model has no chat_template in tokenizer_config.json`);
      return new ChatTemplate('model', tokenizer.chatTemplate, tokenizer);
    }
    if (existsSync(choice)) return new ChatTemplate(choice, readFileSync(choice, 'utf8'), tokenizer);
    throw new InstillError(
      ErrorCode.ARG,
      `Expected a chat template name (${Object.keys(NAMED_CHAT_TEMPLATES).join(', ')}, model) or a path to a Jinja file but received '${choice}'`,
    );
  }
  if (tokenizer.chatTemplate !== null) return new ChatTemplate('model', tokenizer.chatTemplate, tokenizer);
  return null;
}

/** Problems worth telling the user before training: a fallback whose markers are not tokens of the model. */
export function templateWarnings(template: ChatTemplate, tokenizer: Tokenizer): string[] {
  const out: string[] = [];
  if (template.name !== 'model' && tokenizer.chatTemplate !== null) {
    out.push(`chat template '${template.name}' overrides the model's own chat_template; the model was tuned with its own`);
  }
  const markers = NAMED_MARKERS[template.name] ?? [];
  const missing = markers.filter((m) => tokenizer.tokenToId(m) === undefined);
  if (missing.length > 0) {
    out.push(
      `chat template '${template.name}' uses ${missing.join(', ')}, which ${missing.length === 1 ? 'is not a token' : 'are not tokens'} ` +
        `of this model's vocabulary: ${missing.length === 1 ? 'it is' : 'they are'} learnt as plain text`,
    );
  }
  return out;
}
