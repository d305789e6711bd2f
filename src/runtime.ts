// The engine's runtime: threads, CPU features and the instruction set in use.
import { ErrorCode, InstillError, describe } from './errors.js';
import { native, type OpProfileRow, type RuntimeInfo } from './native.js';

export type { OpProfileRow, RuntimeInfo };

/** runtime.deviceMemory's answer, in bytes. */
export interface DeviceMemory {
  inUse: number;
  peak: number;
  reserved: number;
}

function needGpu(device: unknown, fn: string): void {
  if (device !== 'cuda') {
    throw new InstillError(ErrorCode.ARG, `Expected 'cuda' for ${fn}'s device but received ${describe(device)}` +
      (device === 'cpu' ? ' (the CPU\'s counterpart is runtime.releaseHostMemory())' : ''));
  }
}

export const runtime = {
  /** Threads, the active ISA, every ISA this CPU runs, CPU features, devices. */
  info(): RuntimeInfo {
    return native().runtimeInfo();
  },

  /** Resizes the engine's thread pool (default: the CPUs this process may use, or INSTILL_THREADS). */
  setThreads(n: number): void {
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1024) {
      throw new InstillError(ErrorCode.ARG, `Expected integer between 1 and 1024 for threads but received ${describe(n)}`);
    }
    native().setThreads(n);
  },

  /** Chooses the kernels' instruction set: 'portable' | 'avx2' | 'avx512' | 'avx512bf16' (must be supported). */
  setIsa(name: string): void {
    if (typeof name !== 'string') {
      throw new InstillError(ErrorCode.ARG, `Expected an ISA name for setIsa but received ${describe(name)}`);
    }
    native().setIsa(name);
  },

  /**
   * Debug aid: fill every new tensor (outputs and kernel scratch) with NaN, so a
   * kernel that reads memory it did not write, or leaves output unwritten, shows it.
   */
  setPoison(on: boolean): void {
    if (typeof on !== 'boolean') {
      throw new InstillError(ErrorCode.ARG, `Expected a boolean for setPoison but received ${describe(on)}`);
    }
    native().setPoison(on);
  },

  /**
   * Frees the host blocks the engine keeps for reuse (see RuntimeInfo.hostCache), e.g. after a training
   * job in a long-running service. Returns the bytes released. Tensors in use are not affected.
   */
  releaseHostMemory(): number {
    return native().releaseHostMemory();
  },

  /**
   * A GPU's memory through instill's caching allocator, in bytes: what live tensors hold (`inUse`), its peak since
   * the last reset (`resetPeak: true` resets it to what is in use first), and what is held from the driver
   * (`reserved`: in use, plus freed blocks kept to be handed out again without a cudaMalloc).
   * E_DEVICE where the device is not available.
   */
  deviceMemory(device: 'cuda', opts: { resetPeak?: boolean } = {}): DeviceMemory {
    needGpu(device, 'deviceMemory');
    if (typeof opts !== 'object' || opts === null || (opts.resetPeak !== undefined && typeof opts.resetPeak !== 'boolean')) {
      throw new InstillError(ErrorCode.ARG, `Expected { resetPeak?: boolean } for deviceMemory's options but received ${describe(opts)}`);
    }
    return native().deviceMemoryStats(device, opts.resetPeak ?? false);
  },

  /**
   * Gives the GPU blocks the allocator keeps for reuse back to the driver (what torch.cuda.empty_cache() does):
   * for a service between training jobs, or to leave the memory to another process. Waits for the GPU's queued
   * work first. Live tensors keep theirs, and so does a block a running pass's side work may still read. Returns
   * the bytes given back. E_DEVICE where the device is not available.
   */
  releaseDeviceMemory(device: 'cuda'): number {
    needGpu(device, 'releaseDeviceMemory');
    return native().releaseDeviceMemory(device);
  },

  /**
   * The kernel pieces the INSTILL_CUDA_NEXT environment variable turns on now, by name (native/cuda/README.md
   * lists them: 'residual', 'wb_cache', 'flash_lean', 'lora_group', 'swiglu_pack', 'norm_pack', 'fewer_packs',
   * 'rope_qk', 'factor_pack', 'ce_bf16', 'side_grads', 'async_upload', 'attn_pack', 'dqkv_pack', 'flash_wgmma',
   * 'dq_wgmma', 'dkv_wgmma', promoted by GPU runs and on by default; 'ce_wide', 'pdl', 'delta_rows' and 'rope_rows',
   * waiting for one or no faster, off).
   * Throws E_ARG when the variable names an unknown one.
   */
  nextKernels(): string[] {
    return native().nextKernels();
  },

  /**
   * Times every op from now on (true) or stops (false); either way the profile starts empty. On the CPU an op
   * is timed on the host; on a GPU between two events queued around it, so nothing waits while it runs.
   */
  setOpProfile(on: boolean): void {
    if (typeof on !== 'boolean') {
      throw new InstillError(ErrorCode.ARG, `Expected a boolean for setOpProfile but received ${describe(on)}`);
    }
    native().setOpProfile(on);
  },

  /**
   * The time per op since the profile started or was last read, largest first (an op called inside another
   * counts in the outer one); waits for the GPU's queued work, then starts the profile over. Rows named
   * "op/part" time a part of an op (lora_linear's products, attention's kernels): each op's parts follow
   * it, largest first, and are already inside the op's own row, so leave them out of a sum.
   */
  opProfile(): OpProfileRow[] {
    const rows = native().takeOpProfile();  // largest first
    const ops = rows.filter((r) => !r.op.includes('/'));
    const parts = rows.filter((r) => r.op.includes('/'));
    const out: OpProfileRow[] = [];
    for (const o of ops) out.push(o, ...parts.filter((p) => p.op.startsWith(`${o.op}/`) && p.device === o.device));
    for (const p of parts) if (!out.includes(p)) out.push(p);  // an op's parts without the op: not expected
    return out;
  },
};
