// Dataset record formats -> one normalised example.
//
// | format              | record                                             | example                              |
// |---------------------|----------------------------------------------------|--------------------------------------|
// | `messages`          | `{messages: [{role, content}, ...]}` (OpenAI / HF) | chat, as given                       |
// | `sharegpt`          | `{conversations: [{from, value}, ...]}`            | chat; human->user, gpt->assistant    |
// | `alpaca`            | `{instruction, input?, output, system?}`           | chat: user = instruction, or         |
// |                     |                                                    | instruction + "\n\n" + input         |
// | `prompt_completion` | `{prompt, completion}` (strings, or message lists) | chat: user = prompt, assistant =     |
// |                     |                                                    | completion                           |
// | `text`              | `{text}`                                           | plain text, loss on every token      |
//
// Every chat format goes through the model's chat template, so the model sees the same framing in
// training as in use. A record that does not fit its format throws RecordError (the caller adds file and
// line). Rules: content must be a string; an assistant message must not be empty (or whitespace only);
// a conversation must not be empty. A conversation without any assistant message is valid here and is
// dropped later as "no targets".
import type { ChatMessage } from './chat_template.js';
import { ErrorCode, InstillError } from '../errors.js';

export const DATASET_FORMATS = ['messages', 'sharegpt', 'alpaca', 'prompt_completion', 'text'] as const;
export type DatasetFormat = (typeof DATASET_FORMATS)[number];

/** A record turned into what the masking step consumes. */
export type Example = { kind: 'chat'; messages: ChatMessage[] } | { kind: 'text'; text: string };

/** A record that does not fit its format. The message says what is wrong with the record. */
export class RecordError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RecordError';
  }
}

/** Joins an Alpaca `instruction` and a non-empty `input` into the user message. */
export const ALPACA_INPUT_SEPARATOR = '\n\n';

const SHAREGPT_ROLES: Readonly<Record<string, string>> = {
  human: 'user',
  user: 'user',
  gpt: 'assistant',
  assistant: 'assistant',
  chatgpt: 'assistant',
  bing: 'assistant',
  bard: 'assistant',
  model: 'assistant',
  system: 'system',
  tool: 'tool',
  function: 'tool',
  observation: 'tool',
};

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return `a ${typeof v}`;
}

/** The format of a record, from the fields it has; null when none fits. */
export function detectFormat(record: unknown): DatasetFormat | null {
  if (!isObject(record)) return null;
  if (Array.isArray(record.messages)) return 'messages';
  if (Array.isArray(record.conversations)) return 'sharegpt';
  if ('instruction' in record && 'output' in record) return 'alpaca';
  if ('prompt' in record && 'completion' in record) return 'prompt_completion';
  if (typeof record.text === 'string') return 'text';
  return null;
}

/** Parses a format name (CLI/options), with a message that lists the valid ones. */
export function parseFormat(name: string): DatasetFormat {
  if ((DATASET_FORMATS as readonly string[]).includes(name)) return name as DatasetFormat;
  throw new InstillError(ErrorCode.ARG, `Expected a dataset format (${DATASET_FORMATS.join(', ')}) but received '${name}'`);
}

/** The example of `record` read as `format`. Throws RecordError when the record does not fit. */
export function toExample(record: unknown, format: DatasetFormat): Example {
  if (!isObject(record)) throw new RecordError(`expected a JSON object, got ${typeName(record)}`);
  switch (format) {
    case 'messages':
      return { kind: 'chat', messages: checkConversation(readMessages(record, 'messages', 'role', 'content', null)) };
    case 'sharegpt':
      return { kind: 'chat', messages: checkConversation(readMessages(record, 'conversations', 'from', 'value', SHAREGPT_ROLES)) };
    case 'alpaca':
      return { kind: 'chat', messages: alpaca(record) };
    case 'prompt_completion':
      return { kind: 'chat', messages: promptCompletion(record) };
    case 'text': {
      const text = requireString(record, 'text');
      if (text.trim().length === 0) throw new RecordError(`field 'text' is empty`);
      return { kind: 'text', text };
    }
  }
}

function requireString(record: Record<string, unknown>, field: string): string {
  const v = record[field];
  if (v === undefined) throw new RecordError(`missing field '${field}'`);
  if (typeof v !== 'string') throw new RecordError(`field '${field}' is ${typeName(v)}, expected a string`);
  return v;
}

function readMessages(
  record: Record<string, unknown>,
  field: string,
  roleKey: string,
  contentKey: string,
  roleMap: Readonly<Record<string, string>> | null,
): ChatMessage[] {
  const list = record[field];
  if (list === undefined) throw new RecordError(`missing field '${field}'`);
  if (!Array.isArray(list)) throw new RecordError(`field '${field}' is ${typeName(list)}, expected an array of messages`);
  return list.map((m: unknown, i: number) => {
    if (!isObject(m)) throw new RecordError(`${field}[${i}] is ${typeName(m)}, expected an object`);
    // ShareGPT files sometimes carry role/content instead of from/value: take whichever is there.
    const rk = m[roleKey] === undefined && roleMap !== null && m.role !== undefined ? 'role' : roleKey;
    const ck = m[contentKey] === undefined && roleMap !== null && m.content !== undefined ? 'content' : contentKey;
    const rawRole = m[rk];
    if (rawRole === undefined) throw new RecordError(`${field}[${i}] has no '${roleKey}'`);
    if (typeof rawRole !== 'string' || rawRole.length === 0) throw new RecordError(`${field}[${i}].${rk} is ${typeName(rawRole)}, expected a role name`);
    const role = roleMap === null ? rawRole : roleMap[rawRole.toLowerCase()];
    if (role === undefined) {
      throw new RecordError(`${field}[${i}].${rk} is '${rawRole}', expected one of ${Object.keys(roleMap ?? {}).join(', ')}`);
    }
    const content = m[ck];
    if (content === undefined) throw new RecordError(`${field}[${i}] has no '${contentKey}'`);
    if (typeof content !== 'string') throw new RecordError(`${field}[${i}].${ck} is ${typeName(content)}, expected a string`);
    if (role === 'assistant' && content.trim().length === 0) throw new RecordError(`${field}[${i}] is an empty assistant message`);
    return { role, content };
  });
}

function checkConversation(messages: ChatMessage[]): ChatMessage[] {
  if (messages.length === 0) throw new RecordError('the conversation has no messages');
  return messages;
}

function alpaca(record: Record<string, unknown>): ChatMessage[] {
  const instruction = requireString(record, 'instruction');
  const input = record.input;
  if (input !== undefined && input !== null && typeof input !== 'string') {
    throw new RecordError(`field 'input' is ${typeName(input)}, expected a string`);
  }
  const output = requireString(record, 'output');
  if (output.trim().length === 0) throw new RecordError(`field 'output' is empty`);
  const user = typeof input === 'string' && input.length > 0 ? instruction + ALPACA_INPUT_SEPARATOR + input : instruction;
  if (user.trim().length === 0) throw new RecordError(`fields 'instruction' and 'input' are empty`);
  const messages: ChatMessage[] = [];
  const system = record.system;
  if (system !== undefined && system !== null) {
    if (typeof system !== 'string') throw new RecordError(`field 'system' is ${typeName(system)}, expected a string`);
    if (system.length > 0) messages.push({ role: 'system', content: system });
  }
  messages.push({ role: 'user', content: user }, { role: 'assistant', content: output });
  return messages;
}

function promptCompletion(record: Record<string, unknown>): ChatMessage[] {
  // Conversational form (TRL): prompt and completion are message lists.
  if (Array.isArray(record.prompt) || Array.isArray(record.completion)) {
    const prompt = readMessages(record, 'prompt', 'role', 'content', null);
    const completion = readMessages(record, 'completion', 'role', 'content', null);
    if (!completion.some((m) => m.role === 'assistant')) throw new RecordError(`field 'completion' has no assistant message`);
    return checkConversation([...prompt, ...completion]);
  }
  const prompt = requireString(record, 'prompt');
  const completion = requireString(record, 'completion');
  if (completion.trim().length === 0) throw new RecordError(`field 'completion' is empty`);
  return [
    { role: 'user', content: prompt },
    { role: 'assistant', content: completion },
  ];
}
