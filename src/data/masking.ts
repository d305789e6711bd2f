// An example -> token ids + loss mask (which tokens the model is trained to produce).
//
// Chat: the whole conversation is rendered with the chat template and tokenized once (no special tokens
// added: the template writes its own BOS). The tokens of assistant turn i are found by rendering and
// tokenizing two prefixes of the conversation:
//     P_i = render(messages[0..i), add_generation_prompt=true)    -- everything before the answer
//     F_i = render(messages[0..i], add_generation_prompt=false)   -- up to and including the answer
// and the turn is tokens [len(tok(P_i)), len(tok(F_i))) of the whole. Both token lists must be prefixes
// of the whole conversation's tokens; when one is not (a template that renders earlier turns differently
// once later turns exist, or a tokenizer that merges across the boundary), masking is not trustworthy and
// this throws instead of guessing. The span therefore holds the answer and everything the template writes
// after it up to the next message: the end-of-turn / EOS token is trained. Whitespace-only tokens after
// the last special token of the span (chatml's "\n" after <|im_end|>) are left out of the loss: they
// belong to the framing, not to the answer.
//
// Text: tokenized with the tokenizer config's BOS/EOS rule (`add_bos_token`, `add_eos_token`), every token
// in the loss; `appendEos` adds EOS when the config does not.
//
// mask[t] = 1 means token t is a label (Hugging Face `labels[t] = ids[t]`); the first token of an example
// is never predicted, so the loss covers the labels at t >= 1.
import { ErrorCode, InstillError } from '../errors.js';
import type { ChatMessage, ChatTemplate } from './chat_template.js';
import type { Example } from './formats.js';
import type { Tokenizer } from './tokenizer.js';

/** Which tokens are trained: every assistant turn (default), everything, or the last assistant turn. */
export type TrainOn = 'assistant' | 'all' | 'last';
export const TRAIN_ON = ['assistant', 'all', 'last'] as const;

export interface MaskedExample {
  ids: number[];
  /** (ids.length) 1 = in the loss. */
  mask: Uint8Array;
}

export interface MaskingOptions {
  tokenizer: Tokenizer;
  /** Required for chat examples. */
  template: ChatTemplate | null;
  trainOn?: TrainOn;
  /** Text examples: append EOS even when the tokenizer config does not add it. Default false. */
  appendEos?: boolean;
}

/** Token ids and loss mask of one example. Throws InstillError (E_DATA) when spans cannot be trusted. */
export function maskExample(example: Example, options: MaskingOptions): MaskedExample {
  const trainOn = options.trainOn ?? 'assistant';
  const tok = options.tokenizer;
  if (example.kind === 'text') {
    const ids = tok.encode(example.text, { addSpecialTokens: true });
    if (options.appendEos === true && tok.eosId !== null && ids[ids.length - 1] !== tok.eosId) ids.push(tok.eosId);
    return { ids, mask: new Uint8Array(ids.length).fill(1) };
  }
  const template = options.template;
  if (template === null) {
    throw new InstillError(ErrorCode.ARG, 'chat examples need a chat template: the model has none, so pass one (--template chatml|alpaca|llama3|zephyr|FILE)');
  }
  const messages = example.messages;
  const full = template.render(messages);
  const ids = tok.encode(full);
  const mask = new Uint8Array(ids.length);
  if (trainOn === 'all') {
    mask.fill(1);
    return { ids, mask };
  }
  let turns: number[] = [];
  for (let i = 0; i < messages.length; i++) if (messages[i].role === 'assistant') turns.push(i);
  if (trainOn === 'last') turns = turns.slice(-1);
  for (const i of turns) {
    const start = prefixLength(template, tok, messages.slice(0, i), true, ids, full, i);
    const end = i === messages.length - 1 ? ids.length : prefixLength(template, tok, messages.slice(0, i + 1), false, ids, full, i);
    if (end <= start) {
      throw new InstillError(
        ErrorCode.DATA,
        `chat template '${template.name}': assistant message ${i} renders to no tokens of its own (span ${start}..${end}); the template may drop assistant content`,
      );
    }
    const stop = trimFraming(ids, start, end, tok);
    mask.fill(1, start, stop);
  }
  return { ids, mask };
}

/** Token count of a render of `messages`, checked to be a prefix of the whole conversation's tokens. */
function prefixLength(
  template: ChatTemplate,
  tok: Tokenizer,
  messages: ChatMessage[],
  addGenerationPrompt: boolean,
  fullIds: number[],
  fullText: string,
  turn: number,
): number {
  const text = template.render(messages, { addGenerationPrompt });
  const what = addGenerationPrompt ? `the prompt before assistant message ${turn}` : `the conversation up to assistant message ${turn}`;
  if (!fullText.startsWith(text)) {
    throw new InstillError(
      ErrorCode.DATA,
      `chat template '${template.name}': the render of ${what} is not a prefix of the whole conversation's render, so the answer's tokens cannot be located ` +
        `(prefix ends with ${JSON.stringify(text.slice(-40))}); use a template that renders earlier turns the same way whatever follows, or --train-on all`,
    );
  }
  const ids = tok.encode(text);
  if (ids.length > fullIds.length || ids.some((id, k) => fullIds[k] !== id)) {
    let k = 0;
    while (k < ids.length && ids[k] === fullIds[k]) k++;
    throw new InstillError(
      ErrorCode.DATA,
      `chat template '${template.name}': the tokens of ${what} are not a prefix of the whole conversation's tokens ` +
        `(they differ at token ${k}: ${ids[k]} vs ${fullIds[k]}), so the loss mask cannot be trusted; the tokenizer merges across the boundary`,
    );
  }
  return ids.length;
}

/** End of the trained span: drops whitespace-only tokens after the span's last special token. */
function trimFraming(ids: number[], start: number, end: number, tok: Tokenizer): number {
  let lastSpecial = -1;
  for (let t = end - 1; t >= start; t--) {
    if (tok.specialIds.has(ids[t])) {
      lastSpecial = t;
      break;
    }
  }
  if (lastSpecial < 0 || lastSpecial === end - 1) return end;
  const tail = tok.decode(ids.slice(lastSpecial + 1, end));
  return tail.trim().length === 0 ? lastSpecial + 1 : end;
}
