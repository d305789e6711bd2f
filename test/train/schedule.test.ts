import { describe, expect, it } from 'vitest';
import { createSchedule, warmupStepsOf } from '../../src/train/schedule.js';
import { InstillError } from '../../src/errors.js';

describe('learning-rate schedules', () => {
  it('constant with warmup', () => {
    const s = createSchedule({ name: 'constant', lr: 1, totalSteps: 10, warmupSteps: 4 });
    expect([0, 1, 2, 3, 4, 9].map(s)).toEqual([0.25, 0.5, 0.75, 1, 1, 1]);
  });
  it('linear decays to 0 over the steps after warmup', () => {
    const s = createSchedule({ name: 'linear', lr: 2, totalSteps: 6, warmupSteps: 2 });
    expect([0, 1, 2, 3, 4, 5].map(s)).toEqual([1, 2, 2, 1.5, 1, 0.5]);
  });
  it('cosine, with and without a floor', () => {
    const s = createSchedule({ name: 'cosine', lr: 1, totalSteps: 5, warmupSteps: 1 });
    // p = 0, 1/4, 2/4, 3/4
    expect(s(0)).toBe(1);
    expect(s(1)).toBe(1);
    expect(s(2)).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI / 4)), 15);
    expect(s(3)).toBeCloseTo(0.5, 15);
    expect(s(4)).toBeCloseTo(0.5 * (1 + Math.cos((3 * Math.PI) / 4)), 15);
    const f = createSchedule({ name: 'cosine', lr: 1, totalSteps: 3, minLrRatio: 0.1 });
    expect(f(0)).toBe(1);
    expect(f(1)).toBeCloseTo(0.1 + 0.9 * 0.75, 15);
    expect(f(2)).toBeCloseTo(0.1 + 0.9 * 0.25, 15);
  });
  it('warmup from a ratio; bad arguments are InstillErrors that name the option', () => {
    expect(warmupStepsOf(100, undefined, 0.05)).toBe(5);
    expect(warmupStepsOf(100, 3, 0.05)).toBe(3);
    expect(() => createSchedule({ name: 'step' as 'linear', lr: 1, totalSteps: 3 })).toThrow(/constant, linear, cosine for schedule/);
    expect(() => createSchedule({ name: 'linear', lr: 1, totalSteps: 0 })).toThrow(InstillError);
    expect(() => createSchedule({ name: 'linear', lr: -1, totalSteps: 3 })).toThrow(/lr/);
  });
});
