// A small generated instruction dataset for the stories260K fixture: "Say X twice." -> "X X" and
// "Repeat: X" -> "X" over common story words, in the messages format. Train and held-out sets use
// disjoint words, so following the instruction (not memorising answers) is what scores on held-out.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const WORDS = [
  'cat', 'dog', 'ball', 'tree', 'sun', 'bird', 'fish', 'car', 'box', 'cake', 'hat', 'boat', 'frog', 'bear', 'bug', 'cup',
  'milk', 'bed', 'park', 'home', 'toy', 'book', 'girl', 'boy', 'mom', 'dad', 'king', 'duck', 'pig', 'cow', 'star', 'moon',
  'rain', 'snow', 'door', 'shoe', 'sock', 'egg', 'bike', 'kite', 'rock', 'leaf', 'nest', 'bee', 'apple', 'flower', 'house', 'friend',
];

export interface QaRecord {
  messages: { role: 'user' | 'assistant'; content: string }[];
}

export function qa(word: string, kind: number): QaRecord {
  const [q, a] = kind === 0 ? [`Say ${word} twice.`, `${word} ${word}`] : [`Repeat: ${word}`, word];
  return { messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] };
}

/** Writes train.jsonl (40 words x 2 kinds x `copies`) and heldout.jsonl (the other 8 words x 2 kinds) into dir. */
export function writeQaDataset(dir: string, copies = 2): { train: string; heldout: string; heldoutRecords: QaRecord[] } {
  mkdirSync(dir, { recursive: true });
  const trainWords = WORDS.slice(0, 40);
  const heldWords = WORDS.slice(40);
  const train: QaRecord[] = [];
  for (let c = 0; c < copies; c++) for (const w of trainWords) for (const k of [0, 1]) train.push(qa(w, k));
  const held: QaRecord[] = [];
  for (const w of heldWords) for (const k of [0, 1]) held.push(qa(w, k));
  const t = join(dir, 'train.jsonl');
  const h = join(dir, 'heldout.jsonl');
  writeFileSync(t, train.map((r) => JSON.stringify(r)).join('\n') + '\n');
  writeFileSync(h, held.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return { train: t, heldout: h, heldoutRecords: held };
}
