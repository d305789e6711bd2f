// Dataset files -> a stream of raw records, each with where it came from.
//
// JSONL (.jsonl, .ndjson, or a .json file whose first character is `{`): one record per line, blank lines
// skipped. JSON arrays (a .json file starting with `[`): elements are cut out of the byte stream by a
// small scanner (string/escape aware, bracket depth) and parsed one at a time. Parquet (.parquet): read
// one row group at a time with hyparquet (snappy, gzip, zstd, brotli, lz4 through hyparquet-compressors).
// In all three, at most one chunk (1 MiB) or one row group is in memory, never the whole file.
//
// A record that is not valid JSON is yielded with `error` set (never thrown): the caller decides between
// skip-and-report and --strict. Only a file that cannot be opened, or a Parquet file that is not one, throws.
import { createReadStream, existsSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { extname } from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { ErrorCode, InstillError } from '../errors.js';

export type FileKind = 'jsonl' | 'json' | 'parquet';

/** One record of a dataset file. */
export interface RawRecord {
  file: string;
  /** 1-based: the line the record starts on (JSONL, JSON), or the row number (Parquet). */
  line: number;
  /** The parsed record, when it parsed. */
  value?: unknown;
  /** Why the record could not be read, when it could not. */
  error?: string;
}

/** `file:37` for line-based files, `file row 37` for Parquet. */
export function formatLocation(file: string, line: number, kind: FileKind): string {
  return kind === 'parquet' ? `${file} row ${line}` : `${file}:${line}`;
}

/** The kind of a dataset file, from its extension (and first character for .json). */
export async function detectFileKind(file: string): Promise<FileKind> {
  if (!existsSync(file)) throw new InstillError(ErrorCode.IO, `dataset file ${file} not found`);
  if (!statSync(file).isFile()) throw new InstillError(ErrorCode.IO, `dataset path ${file} is not a file`);
  const ext = extname(file).toLowerCase();
  if (ext === '.parquet') return 'parquet';
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  if (ext === '.json') {
    const first = await firstNonSpaceChar(file);
    return first === '[' ? 'json' : 'jsonl';
  }
  throw new InstillError(ErrorCode.ARG, `dataset file ${file}: expected a .jsonl, .json or .parquet file`);
}

async function firstNonSpaceChar(file: string): Promise<string | null> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const m = /[^\s\uFEFF]/.exec(buf.subarray(0, bytesRead).toString('utf8'));
    return m ? m[0] : null;
  } finally {
    await fh.close();
  }
}

/** The records of `file`, in order. */
export async function* readRecords(file: string, kind?: FileKind): AsyncGenerator<RawRecord> {
  const k = kind ?? (await detectFileKind(file));
  if (k === 'jsonl') yield* readJsonl(file);
  else if (k === 'json') yield* readJsonArray(file);
  else yield* readParquet(file);
}

function parseRecord(file: string, line: number, text: string): RawRecord {
  try {
    return { file, line, value: JSON.parse(text) };
  } catch (err) {
    return { file, line, error: `invalid JSON: ${(err as Error).message}` };
  }
}

async function* readJsonl(file: string): AsyncGenerator<RawRecord> {
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 20 }), crlfDelay: Infinity });
  let line = 0;
  for await (const raw of rl) {
    line++;
    const text = line === 1 && raw.charCodeAt(0) === 0xfeff ? raw.slice(1) : raw;
    if (text.trim().length === 0) continue;
    yield parseRecord(file, line, text);
  }
}

/** Streams the elements of a top-level JSON array. */
async function* readJsonArray(file: string): AsyncGenerator<RawRecord> {
  const stream = createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 20 });
  type State = 'start' | 'between' | 'elem' | 'end';
  let state: State = 'start';
  let line = 1;
  let depth = 0;
  let inString = false;
  let escaped = false;
  let buf = '';
  let elemLine = 0;
  let stop = false;
  for await (const chunk of stream as AsyncIterable<string>) {
    let segStart = 0;
    const ready: RawRecord[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (state === 'elem') {
        if (c === 10) line++;
        if (inString) {
          if (escaped) escaped = false;
          else if (c === 92) escaped = true;
          else if (c === 34) inString = false;
          continue;
        }
        if (c === 34) inString = true;
        else if (c === 123 || c === 91) depth++;
        else if (c === 125 || c === 93) {
          if (depth > 0) depth--;
          else if (c === 93) {
            ready.push(parseRecord(file, elemLine, buf + chunk.slice(segStart, i)));
            buf = '';
            state = 'end';
          }
        } else if (c === 44 && depth === 0) {
          ready.push(parseRecord(file, elemLine, buf + chunk.slice(segStart, i)));
          buf = '';
          state = 'between';
        }
        continue;
      }
      if (c === 10) {
        line++;
        continue;
      }
      if (c === 32 || c === 9 || c === 13 || c === 0xfeff) continue;
      if (state === 'start') {
        if (c !== 91) throw new InstillError(ErrorCode.DATA, `${file}:${line}: expected a JSON array ('[')`);
        state = 'between';
      } else if (state === 'between') {
        if (c === 93) {
          state = 'end'; // `[]` or a trailing comma
          continue;
        }
        state = 'elem';
        elemLine = line;
        depth = 0;
        inString = false;
        escaped = false;
        segStart = i;
        i--; // scan this character as part of the element
      } else {
        ready.push({ file, line, error: `unexpected text after the end of the JSON array` });
        stop = true;
        break;
      }
    }
    if (state === 'elem') buf += chunk.slice(segStart);
    for (const r of ready) yield r;
    if (stop) {
      stream.destroy();
      return;
    }
  }
  if (state === 'elem') yield { file, line: elemLine, error: `unexpected end of file inside the element that starts here (unterminated string or bracket)` };
  else if (state !== 'end') yield { file, line, error: `unexpected end of file: the JSON array is not closed with ']'` };
}

async function* readParquet(file: string): AsyncGenerator<RawRecord> {
  let buffer;
  let metadata;
  try {
    buffer = await asyncBufferFromFile(file);
    metadata = await parquetMetadataAsync(buffer);
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `${file} is not a readable Parquet file: ${(err as Error).message}`, { cause: err });
  }
  let rowStart = 0;
  for (const rg of metadata.row_groups) {
    const n = Number(rg.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = (await parquetReadObjects({ file: buffer, metadata, compressors, rowStart, rowEnd: rowStart + n })) as Record<string, unknown>[];
    } catch (err) {
      throw new InstillError(ErrorCode.IO, `${file}: rows ${rowStart + 1}..${rowStart + n} could not be read: ${(err as Error).message}`, { cause: err });
    }
    for (let i = 0; i < rows.length; i++) yield { file, line: rowStart + i + 1, value: rows[i] };
    rowStart += n;
  }
}
