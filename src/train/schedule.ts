// Learning-rate schedules: constant, linear, cosine, each after a linear warmup.
//
// `step` is the 0-based index of the optimizer step about to be taken, total = steps in the run.
//   warmup (step < W):  lr · (step + 1) / W            (the first step is never taken at lr 0)
//   after warmup, with progress p = (step − W) / (total − W) in [0, 1):
//     constant  lr
//     linear    lr · (m + (1 − m) · (1 − p))
//     cosine    lr · (m + (1 − m) · ½(1 + cos πp))
//   where m = minLrRatio (default 0). The schedule is a pure function of the step, so a resumed run
//   takes exactly the learning rates an uninterrupted one would.
import { ErrorCode, InstillError, describe } from '../errors.js';

export const SCHEDULES = ['constant', 'linear', 'cosine'] as const;
export type ScheduleName = (typeof SCHEDULES)[number];

export interface ScheduleOptions {
  name: ScheduleName;
  /** Peak learning rate. */
  lr: number;
  /** Optimizer steps in the whole run. */
  totalSteps: number;
  /** Warmup steps (default 0). */
  warmupSteps?: number;
  /** Final learning rate as a fraction of lr for linear/cosine (default 0). */
  minLrRatio?: number;
}

export type Schedule = (step: number) => number;

export function createSchedule(opts: ScheduleOptions): Schedule {
  const { name, lr, totalSteps } = opts;
  const warmup = opts.warmupSteps ?? 0;
  const m = opts.minLrRatio ?? 0;
  if (!(SCHEDULES as readonly string[]).includes(name)) throw new InstillError(ErrorCode.ARG, `Expected one of ${SCHEDULES.join(', ')} for schedule but received ${describe(name)}`);
  if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0) throw new InstillError(ErrorCode.ARG, `Expected a finite number >= 0 for lr but received ${describe(lr)}`);
  if (!Number.isInteger(totalSteps) || totalSteps < 1) throw new InstillError(ErrorCode.ARG, `Expected integer >= 1 for totalSteps but received ${describe(totalSteps)}`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new InstillError(ErrorCode.ARG, `Expected integer >= 0 for warmupSteps but received ${describe(warmup)}`);
  if (typeof m !== 'number' || !(m >= 0 && m <= 1)) throw new InstillError(ErrorCode.ARG, `Expected a number in [0, 1] for minLrRatio but received ${describe(m)}`);
  return (step: number): number => {
    if (!Number.isInteger(step) || step < 0) throw new InstillError(ErrorCode.ARG, `Expected integer >= 0 for step but received ${describe(step)}`);
    if (step < warmup) return (lr * (step + 1)) / warmup;
    if (name === 'constant') return lr;
    const span = totalSteps - warmup;
    const p = span > 0 ? Math.min(1, (step - warmup) / span) : 1;
    const f = name === 'linear' ? 1 - p : 0.5 * (1 + Math.cos(Math.PI * p));
    return lr * (m + (1 - m) * f);
  };
}

/** Warmup steps from a count or a ratio of the total (ratio wins when both are given and count is 0). */
export function warmupStepsOf(totalSteps: number, warmupSteps?: number, warmupRatio?: number): number {
  if (warmupSteps !== undefined && warmupSteps > 0) return warmupSteps;
  if (warmupRatio !== undefined) {
    if (typeof warmupRatio !== 'number' || !(warmupRatio >= 0 && warmupRatio < 1)) {
      throw new InstillError(ErrorCode.ARG, `Expected a number in [0, 1) for warmupRatio but received ${describe(warmupRatio)}`);
    }
    return Math.ceil(totalSteps * warmupRatio);
  }
  return 0;
}
