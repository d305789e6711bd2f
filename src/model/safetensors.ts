// safetensors files: read (header validated, tensors one at a time) and write (adapters).
//
// Layout: 8-byte little-endian header length n, n bytes of JSON header
// ({ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { str: str } }),
// then the data region; offsets are relative to the start of the data region.
// Every header field is checked before a byte of data is read: a truncated or
// malformed file is an InstillError (E_IO when the file cannot be read, E_DATA when
// its contents are wrong), never a crash or a giant allocation.
//
// Reading is streamed: `readTensor` reads one tensor's bytes with a positioned read
// into a typed array and hands it to the engine, so loading a model holds at most
// the engine's copy plus one tensor in transit, never two copies of the model.
import { closeSync, fstatSync, openSync, readSync, renameSync, writeSync, unlinkSync } from 'node:fs';
import { ErrorCode, InstillError } from '../errors.js';
import { Tensor, type DType } from '../tensor.js';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Largest header we accept (the format's reference implementation uses 100 MB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Byte range inside the file (absolute). */
  begin: number;
  end: number;
}

function bad(path: string, msg: string): InstillError {
  return new InstillError(ErrorCode.DATA, `${path} is not a valid safetensors file: ${msg}`);
}

/** An open safetensors file. Close it when done (`close()`). */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  private fd: number | null;

  private constructor(path: string, fd: number, metadata: Record<string, string>, tensors: Map<string, TensorInfo>) {
    this.path = path;
    this.fd = fd;
    this.metadata = metadata;
    this.tensors = tensors;
  }

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      throw new InstillError(ErrorCode.IO, `cannot open ${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const { metadata, tensors } = parseHeader(path, fd);
      return new SafetensorsFile(path, fd, metadata, tensors);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new InstillError(ErrorCode.DATA, `tensor '${name}' not found in ${this.path}`);
    return t;
  }

  /** The raw bytes of one tensor, in a fresh 8-byte-aligned buffer. */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    if (this.fd === null) throw new InstillError(ErrorCode.IO, `${this.path} is closed`);
    const len = t.end - t.begin;
    const buf = new Uint8Array(new ArrayBuffer(Math.ceil(len / 8) * 8), 0, len);
    let done = 0;
    while (done < len) {
      let n: number;
      try {
        n = readSync(this.fd, buf, done, len - done, t.begin + done);
      } catch (err) {
        throw new InstillError(ErrorCode.IO, `reading '${name}' from ${this.path}: ${(err as Error).message}`, { cause: err });
      }
      if (n === 0) throw new InstillError(ErrorCode.IO, `${this.path} ended while reading '${name}'`);
      done += n;
    }
    return buf;
  }

  /**
   * One tensor as a JS array: Float32Array for F32/F16/BF16 (converted), Float64Array for F64,
   * Int32Array for I32, BigInt64Array for I64.
   */
  readArray(name: string): Float32Array | Float64Array | Int32Array | BigInt64Array {
    const t = this.info(name);
    const bytes = this.readBytes(name);
    const n = t.shape.reduce((a, b) => a * b, 1);
    switch (t.dtype) {
      case 'F32': return new Float32Array(bytes.buffer, 0, n);
      case 'F64': return new Float64Array(bytes.buffer, 0, n);
      case 'I32': return new Int32Array(bytes.buffer, 0, n);
      case 'I64': return new BigInt64Array(bytes.buffer, 0, n);
      case 'BF16': return bf16ToF32(new Uint16Array(bytes.buffer, 0, n));
      case 'F16': return f16ToF32(new Uint16Array(bytes.buffer, 0, n));
      default:
        throw new InstillError(ErrorCode.UNSUPPORTED, `tensor '${name}' has dtype ${t.dtype}, which instill does not read`);
    }
  }

  /** One floating-point tensor as an engine Tensor of `dtype` (default: the file's, F64 → f32). */
  readTensor(name: string, dtype?: 'f32' | 'bf16' | 'f16'): Tensor {
    const t = this.info(name);
    const shape = t.shape;
    const n = shape.reduce((a, b) => a * b, 1);
    const fileDType: DType | null = t.dtype === 'F32' ? 'f32' : t.dtype === 'BF16' ? 'bf16' : t.dtype === 'F16' ? 'f16' : null;
    if (t.dtype !== 'F32' && t.dtype !== 'BF16' && t.dtype !== 'F16' && t.dtype !== 'F64') {
      throw new InstillError(ErrorCode.DTYPE, `tensor '${name}' in ${this.path} has dtype ${t.dtype}; model weights must be F32, F16 or BF16`);
    }
    const want = dtype ?? fileDType ?? 'f32';
    const bytes = this.readBytes(name);
    if ((t.dtype === 'BF16' || t.dtype === 'F16') && want === fileDType) {
      return Tensor.from(new Uint16Array(bytes.buffer, 0, n), shape, { dtype: want });
    }
    const arr = this.readArrayFromBytes(t, bytes, n);
    return Tensor.from(arr, shape, { dtype: want });
  }

  private readArrayFromBytes(t: TensorInfo, bytes: Uint8Array, n: number): Float32Array | Float64Array {
    switch (t.dtype) {
      case 'F32': return new Float32Array(bytes.buffer, 0, n);
      case 'F64': return new Float64Array(bytes.buffer, 0, n);
      case 'BF16': return bf16ToF32(new Uint16Array(bytes.buffer, 0, n));
      default: return f16ToF32(new Uint16Array(bytes.buffer, 0, n));
    }
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }
}

function parseHeader(path: string, fd: number): { metadata: Record<string, string>; tensors: Map<string, TensorInfo> } {
  const size = fstatSync(fd).size;
  if (size < 8) throw bad(path, `the file has ${size} bytes, fewer than the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readSync(fd, lenBuf, 0, 8, 0);
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw bad(path, `header length ${headerLen} is larger than ${MAX_HEADER_BYTES} bytes`);
  const n = Number(headerLen);
  if (8 + n > size) throw bad(path, `header length ${n} runs past the end of the ${size}-byte file`);
  const hb = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    const r = readSync(fd, hb, got, n - got, 8 + got);
    if (r === 0) throw bad(path, 'file ended inside the header');
    got += r;
  }
  let header: unknown;
  try {
    header = JSON.parse(hb.toString('utf8'));
  } catch (err) {
    throw bad(path, `header is not JSON (${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw bad(path, 'header is not a JSON object');
  const dataStart = 8 + n;
  const dataLen = size - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  const ranges: Array<[number, number, string]> = [];
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad(path, '__metadata__ is not an object');
      for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
        if (typeof s !== 'string') throw bad(path, `__metadata__.${k} is not a string`);
        metadata[k] = s;
      }
      continue;
    }
    if (v === null || typeof v !== 'object') throw bad(path, `entry '${name}' is not an object`);
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_BYTES)) {
      throw bad(path, `tensor '${name}' has dtype ${JSON.stringify(e.dtype)}; known: ${Object.keys(DTYPE_BYTES).join(', ')}`);
    }
    const dtype = e.dtype as SafetensorsDType;
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(path, `tensor '${name}' has shape ${JSON.stringify(e.shape)}, not a list of non-negative integers`);
    }
    const shape = e.shape as number[];
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[1] < off[0]) {
      throw bad(path, `tensor '${name}' has data_offsets ${JSON.stringify(off)}, not [begin, end] with begin <= end`);
    }
    const numel = shape.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(numel * DTYPE_BYTES[dtype])) throw bad(path, `tensor '${name}' is absurdly large`);
    if (off[1] - off[0] !== numel * DTYPE_BYTES[dtype]) {
      throw bad(path, `tensor '${name}' (${dtype} ${JSON.stringify(shape)}) needs ${numel * DTYPE_BYTES[dtype]} bytes but data_offsets span ${off[1] - off[0]}`);
    }
    if (off[1] > dataLen) throw bad(path, `tensor '${name}' ends at byte ${off[1]} of a ${dataLen}-byte data region (truncated file?)`);
    tensors.set(name, { name, dtype, shape, begin: dataStart + off[0], end: dataStart + off[1] });
    ranges.push([off[0], off[1], name]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i][0] < ranges[i - 1][1]) throw bad(path, `tensors '${ranges[i - 1][2]}' and '${ranges[i][2]}' overlap`);
  }
  return { metadata, tensors };
}

export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return new Float32Array(out.buffer);
}

export function f16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) out[i] = s * m * 2 ** -24;
    else if (e === 31) out[i] = m ? NaN : s * Infinity;
    else out[i] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return out;
}

export type TensorToWrite =
  | { dtype: 'F32'; shape: number[]; data: Float32Array }
  /** Raw bits. */
  | { dtype: 'BF16' | 'F16'; shape: number[]; data: Uint16Array };

/**
 * Writes a safetensors file of F32 (or raw BF16/F16) tensors (sorted by name), to `path + '.tmp'` first and
 * then renamed into place, so a crash mid-write leaves any previous file whole.
 */
export function writeSafetensors(path: string, tensors: Record<string, TensorToWrite>, metadata: Record<string, string> = {}): void {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const bytes = t.dtype === 'F32' ? 4 : 2;
    const okType = t.dtype === 'F32' ? t.data instanceof Float32Array : t.data instanceof Uint16Array;
    if (!okType || t.data.length !== numel || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new InstillError(ErrorCode.SHAPE, `tensor '${name}': expected ${t.dtype} data of ${numel} elements for shape [${t.shape.join(', ')}]`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + numel * bytes] };
    offset += numel * bytes;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const hb = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(hb.length));
  const tmp = `${path}.tmp`;
  let fd: number;
  try {
    fd = openSync(tmp, 'w');
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `cannot write ${tmp}: ${(err as Error).message}`, { cause: err });
  }
  try {
    writeSync(fd, lenBuf);
    writeSync(fd, hb);
    for (const name of names) {
      const d = tensors[name].data;
      writeSync(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
    closeSync(fd);
    renameSync(tmp, path);
  } catch (err) {
    try { closeSync(fd); } catch { /* already closed */ }
    try { unlinkSync(tmp); } catch { /* nothing to remove */ }
    throw new InstillError(ErrorCode.IO, `writing ${path}: ${(err as Error).message}`, { cause: err });
  }
}
