// `instill train` in a child process: SIGINT at a random step finishes the step, saves, exits 130, and
// --resume reaches the adapter of an uninterrupted run bit for bit; kill -9 in the middle of a
// checkpoint write leaves the previous checkpoint loadable; the adapter files are PEFT's.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../src/model/model.js';
import { loadLatestCheckpoint } from '../../src/train/checkpoint.js';
import { haveFixture } from '../helpers/fixtures.js';
import { adapterBytes, root, train } from './helpers/child.js';
import { writeQaDataset } from './helpers/qa.js';
import { MODEL_DIR, tmp } from './helpers/setup.js';

describe.skipIf(!haveFixture('stories260K/model.safetensors'))('instill train (child process)', () => {
  let data: ReturnType<typeof writeQaDataset>;
  let common: string[];
  let straight: string;
  beforeAll(() => {
    execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });
    data = writeQaDataset(tmp('cli-qa'));
    common = ['--model', MODEL_DIR, '--data', data.train, '--eval-data', data.heldout, '--max-seq-len', '64', '--batch-size', '2', '--grad-accum', '2',
      '--epochs', '2', '--lr', '3e-3', '--warmup-steps', '3', '--lora-r', '4', '--lora-alpha', '8', '--target-modules', 'q_proj,v_proj,down_proj', '--seed', '3'];
  });

  it('runs to the end: PEFT adapter files with the right keys, shapes and config', async () => {
    straight = tmp('cli-straight');
    const r = await train([...common, '--output', straight, '--save-every', '10']);
    expect(r.code, r.stderr).toBe(0);
    const done = r.events.find((e) => e.event === 'done')!;
    expect(done.reason).toBe('completed');
    expect(done.evalLossLast as number).toBeLessThan((done.evalLossFirst as number) * 0.7);
    expect(done.peakGpuBytes).toBeNull();  // (on a GPU: the allocator's peak while it trained)
    // the start event says where and in what precision it trains (f32 activations on the CPU by default)
    expect(r.events.find((e) => e.event === 'start')).toMatchObject({ device: 'cpu', gpu: null, dtype: 'f32', activations: 'f32' });
    // an independent read of the safetensors header
    const buf = adapterBytes(straight);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
    const keys = Object.keys(header).filter((k) => k !== '__metadata__').sort();
    const expected: string[] = [];
    for (let l = 0; l < 5; l++) {
      for (const [blk, m] of [['self_attn', 'q_proj'], ['self_attn', 'v_proj'], ['mlp', 'down_proj']]) {
        for (const ab of ['A', 'B']) expected.push(`base_model.model.model.layers.${l}.${blk}.${m}.lora_${ab}.weight`);
      }
    }
    expect(keys).toEqual(expected.sort());
    // stories260K: hidden 64, q 8 heads x 8 = 64, v 4 kv heads x 8 = 32, intermediate 172
    expect(header['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight']).toMatchObject({ dtype: 'F32', shape: [4, 64] });
    expect(header['base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight'].shape).toEqual([64, 4]);
    expect(header['base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight'].shape).toEqual([32, 4]);
    expect(header['base_model.model.model.layers.4.mlp.down_proj.lora_A.weight'].shape).toEqual([4, 172]);
    expect(header['base_model.model.model.layers.4.mlp.down_proj.lora_B.weight'].shape).toEqual([64, 4]);
    const cfg = JSON.parse(readFileSync(join(straight, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 8, lora_dropout: 0, use_rslora: false, bias: 'none',
      fan_in_fan_out: false, inference_mode: true, base_model_name_or_path: MODEL_DIR,
    });
    expect([...cfg.target_modules].sort()).toEqual(['down_proj', 'q_proj', 'v_proj']);
    // trained: B is no longer zero; and the engine loads it back
    const m = await loadModel(MODEL_DIR);
    m.loadAdapter(straight);
    const w = m.adapterWeights();
    expect(w['base_model.model.model.layers.2.self_attn.q_proj.lora_B.weight'].some((x) => x !== 0)).toBe(true);
    expect(existsSync(join(straight, 'loss.svg')) && existsSync(join(straight, 'metrics.jsonl')) && existsSync(join(straight, 'summary.json'))).toBe(true);
  });

  it('SIGINT at a random step: finishes the step, saves, exits 130; --resume ends bit-identical to the uninterrupted run', async () => {
    const out = tmp('cli-sigint');
    const k = 3 + Math.floor(Math.random() * 20);
    const r1 = await train([...common, '--output', out, '--save-every', '10'], (e) => (e.event === 'step' && (e.step as number) >= k ? 'SIGINT' : undefined));
    expect(r1.code, r1.stderr).toBe(130);
    const done = r1.events.find((e) => e.event === 'done')!;
    expect(done.reason).toBe('aborted');
    const stopped = done.step as number;
    expect(stopped).toBeGreaterThanOrEqual(k);
    expect(existsSync(join(out, `checkpoint-${stopped}`, 'trainer_state.json'))).toBe(true);
    expect((await loadLatestCheckpoint(out))!.state.step).toBe(stopped);
    const r2 = await train([...common, '--output', out, '--save-every', '10', '--resume']);
    expect(r2.code, r2.stderr).toBe(0);
    expect((r2.events.find((e) => e.event === 'step')!.step as number)).toBe(stopped + 1);
    expect(adapterBytes(out).equals(adapterBytes(straight))).toBe(true);
  });

  it('kill -9 during a checkpoint write leaves the previous checkpoint loadable, and --resume goes on from it', async () => {
    const out = tmp('cli-kill');
    let pid = 0;
    const r = await train([...common, '--output', out, '--save-every', '3'], (e, p) => {
      pid = p;
      if (e.event !== 'checkpoint' || e.step !== 3) return;
      // the save of step 6 pauses after each file: kill once its temporary folder holds a file
      const tmpDir = join(out, `checkpoint-6.tmp-${p}`);
      const t0 = Date.now();
      const poll = () => {
        if (existsSync(tmpDir) && readdirSync(tmpDir).length > 0) process.kill(p, 'SIGKILL');
        else if (Date.now() - t0 < 20000) setTimeout(poll, 5);
      };
      poll();
    }, { INSTILL_TEST_CHECKPOINT_PAUSE_MS: '400' });
    expect(r.code).toBe(null); // killed
    expect(readdirSync(out)).toContain(`checkpoint-6.tmp-${pid}`);
    expect(readdirSync(out)).not.toContain('checkpoint-6');
    const latest = await loadLatestCheckpoint(out);
    expect(latest!.state.step).toBe(3);
    const m = await loadModel(MODEL_DIR);
    m.loadAdapter(latest!.dir);
    const r2 = await train([...common, '--output', out, '--save-every', '3', '--keep-last', '2', '--resume']);
    expect(r2.code, r2.stderr).toBe(0);
    expect((r2.events.find((e) => e.event === 'step')!.step as number)).toBe(4);
    expect(adapterBytes(out).equals(adapterBytes(straight))).toBe(true);
    expect(readdirSync(out).filter((f) => f.includes('.tmp-'))).toEqual([]); // the dead process's folder is swept
  });
});

describe('instill CLI hints', () => {
  it('an out-of-memory error of train or bench says which options cure it; other errors get no hint', async () => {
    const { hintFor } = await import('../../src/cli/main.js');
    const { ErrorCode, InstillError } = await import('../../src/errors.js');
    const oom = new InstillError(ErrorCode.ALLOC, 'cannot allocate 123 bytes on the GPU');
    const train = hintFor('train', oom)!;
    for (const opt of ['--batch-size', '--max-seq-len', '--grad-accum', '--gradient-checkpointing', '--dtype bf16']) expect(train).toContain(opt);
    const bench = hintFor('bench', oom)!;
    for (const opt of ['--batch', '--seq', '--layers', '--dtype bf16']) expect(bench).toContain(opt);
    expect(hintFor('train', new InstillError(ErrorCode.ARG, 'bad flag'))).toBeNull();
    expect(hintFor('generate', oom)).toBeNull();
  });
});
