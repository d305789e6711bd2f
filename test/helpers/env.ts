// Runs fn with one environment variable set (or, with undefined, unset), then puts it back as it was, also
// when fn throws or its promise rejects. For engine switches read on every call (INSTILL_CUDA_ATTENTION,
// INSTILL_CUDA_NEXT), so a test can compare paths in one process.
export function withEnv<T>(name: string, value: string | undefined, fn: () => T): T {
  const saved = process.env[name];
  const set = (v: string | undefined) => {
    if (v === undefined) delete process.env[name];
    else process.env[name] = v;
  };
  set(value);
  let pending = false;
  try {
    const r = fn();
    if (r instanceof Promise) {
      pending = true;
      return r.finally(() => set(saved)) as T;
    }
    return r;
  } finally {
    if (!pending) set(saved);
  }
}
