// Instruction following, measured: greedy answers to held-out prompts compared with the reference.
//
// Each chat record's last assistant turn is the reference; the turns before it are rendered with the
// chat template and its generation prompt, tokenized without added specials (the template writes them),
// and continued greedily until an EOS id or maxNewTokens. Exact match = the decoded answer (special
// tokens dropped, surrounding whitespace trimmed) equals the trimmed reference.
// Answer match (reported beside it) = the answer starts with the reference and the reference ends at a
// word boundary there: for models that cannot learn to emit EOS (stories260K's tied embedding row of
// </s> was never trained, and LoRA cannot move it), it tells "answered, then kept talking" from "did not answer".
import { ErrorCode, InstillError } from '../errors.js';
import type { ChatMessage, ChatTemplate } from '../data/chat_template.js';
import { detectFormat, toExample, type DatasetFormat } from '../data/formats.js';
import { readRecords } from '../data/readers.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { Model } from '../model/model.js';

export interface PromptAnswer {
  prompt: ChatMessage[];
  answer: string;
}

export interface ExactMatchItem {
  prompt: string;
  expected: string;
  got: string;
  ok: boolean;
  /** The answer starts with the reference, followed by nothing or a non-word character. */
  answerOk: boolean;
}

export interface ExactMatchResult {
  /** Fraction in [0, 1]. */
  score: number;
  correct: number;
  total: number;
  /** Answer-match count and fraction. */
  answered: number;
  answerScore: number;
  items: ExactMatchItem[];
}

/** The first `limit` chat records of a dataset file as (prompt, reference answer) pairs. */
export async function readPromptAnswers(file: string, limit = Infinity, format?: DatasetFormat): Promise<PromptAnswer[]> {
  const out: PromptAnswer[] = [];
  for await (const rec of readRecords(file)) {
    if (out.length >= limit) break;
    if (rec.error !== undefined) continue;
    const f = format ?? detectFormat(rec.value);
    if (!f || f === 'text') continue;
    let ex;
    try {
      ex = toExample(rec.value, f);
    } catch {
      continue;
    }
    if (ex.kind !== 'chat') continue;
    const msgs = ex.messages;
    const last = msgs[msgs.length - 1];
    if (!last || last.role !== 'assistant' || msgs.length < 2) continue;
    out.push({ prompt: msgs.slice(0, -1), answer: last.content });
  }
  if (out.length === 0) throw new InstillError(ErrorCode.DATA, `${file} has no chat record ending with an assistant answer to evaluate on`);
  return out;
}

export async function exactMatch(
  model: Model,
  tokenizer: Tokenizer,
  template: ChatTemplate,
  pairs: readonly PromptAnswer[],
  options: { maxNewTokens?: number } = {},
): Promise<ExactMatchResult> {
  const maxNewTokens = options.maxNewTokens ?? 32;
  const stop = new Set<number>(model.generationConfig.eosTokenIds);
  if (tokenizer.eosId !== null) stop.add(tokenizer.eosId);
  const items: ExactMatchItem[] = [];
  for (const p of pairs) {
    const text = template.render(p.prompt, { addGenerationPrompt: true });
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    const r = await model.generate(ids, { maxNewTokens, stopTokenIds: [...stop] });
    const got = tokenizer.decode(r.ids, { skipSpecialTokens: true }).trim();
    const expected = p.answer.trim();
    const next = got.charAt(expected.length);
    const answerOk = got.startsWith(expected) && (next === '' || !/[\p{L}\p{N}_]/u.test(next));
    items.push({ prompt: p.prompt[p.prompt.length - 1].content, expected, got, ok: got === expected, answerOk });
  }
  const correct = items.filter((i) => i.ok).length;
  const answered = items.filter((i) => i.answerOk).length;
  const n = items.length;
  return { score: n ? correct / n : 0, correct, total: n, answered, answerScore: n ? answered / n : 0, items };
}
