// The one error class instill throws, from TypeScript and from the native addon alike.
//
// The addon receives this constructor at load time (src/native.ts) and throws
// instances of it, so `err instanceof InstillError` and `err.code` work the same
// whether a check failed in TypeScript or in C++.

/** Error codes. Stable: callers may switch on them. */
export const ErrorCode = {
  /** An argument is missing, of the wrong type, or out of its allowed set. */
  ARG: 'E_ARG',
  /** Tensor shapes do not fit together. */
  SHAPE: 'E_SHAPE',
  /** A tensor has a dtype this operation does not take. */
  DTYPE: 'E_DTYPE',
  /** A value is out of range (a target id >= vocabulary size, a negative count). */
  RANGE: 'E_RANGE',
  /** Memory could not be allocated, or a size is absurd for this machine. */
  ALLOC: 'E_ALLOC',
  /** The device is not available or not built into this binary. */
  DEVICE: 'E_DEVICE',
  /** A file could not be read or has the wrong contents. */
  IO: 'E_IO',
  /** Data (a dataset record, a config) is malformed. */
  DATA: 'E_DATA',
  /** The operation is not supported (yet) for this input. */
  UNSUPPORTED: 'E_UNSUPPORTED',
  /** The native addon could not be loaded. */
  LOAD: 'E_LOAD',
  /** A bug in instill: please report it. */
  INTERNAL: 'E_INTERNAL',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export class InstillError extends Error {
  readonly code: ErrorCodeValue;

  constructor(code: ErrorCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InstillError';
    this.code = code;
  }
}

/** Describes a value for error messages: `0 of type number`, `an array`, `undefined`. */
export function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'Object'})`;
  if (typeof value === 'string') return `'${value.length > 40 ? value.slice(0, 40) + '…' : value}' of type string`;
  return `${String(value)} of type ${typeof value}`;
}
