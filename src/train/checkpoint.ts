// Checkpoint folders: written whole or not at all, found again after any crash.
//
//   <out>/checkpoint-<step>/
//     adapter_model.safetensors, adapter_config.json   PEFT layout (peft.PeftModel.from_pretrained loads it)
//       or, full fine-tuning: config.json, model.safetensors (+ tokenizer files): the whole model in HF layout
//     optimizer.safetensors                            AdamW moments: `m.<name>`, `v.<name>` (f32)
//     trainer_state.json                               step, data cursor, seeds, schedule, config (written last)
//
// A save writes everything into `checkpoint-<step>.tmp-<pid>`, fsyncs every file and the folder, then
// renames the folder to `checkpoint-<step>` and fsyncs the parent. A crash (even kill -9) before the
// rename leaves only a `.tmp-` folder, which loading ignores; after it, the checkpoint is whole. Loading
// takes the highest step whose folder is complete and whose trainer_state.json parses. `keepLast` then
// removes the oldest complete checkpoints, and `.tmp-` folders of processes that are gone.
//
// Test hook: INSTILL_TEST_CHECKPOINT_PAUSE_MS=n sleeps n ms after each file written into the temporary
// folder (so a test can kill the process mid-save).
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, InstillError } from '../errors.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../model/safetensors.js';
import type { DataCursor } from '../data/loader.js';
import type { AdamwState } from '../model/model.js';

export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const ADAPTER_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const MODEL_FILE = 'model.safetensors';
export const MODEL_CONFIG_FILE = 'config.json';

const CHECKPOINT_RE = /^checkpoint-(\d+)$/;
const TMP_RE = /^checkpoint-(\d+)\.tmp-(\d+)$/;

export interface TrainerState {
  format: 'instill-trainer-state';
  version: 1;
  /** Optimizer steps completed. */
  step: number;
  totalSteps: number;
  /** The next micro-batch to read. */
  cursor: DataCursor;
  /** Micro-batches consumed so far. */
  microBatches: number;
  /** Target tokens trained on so far. */
  targetTokens: number;
  /**
   * Randomness: every random choice of a run is a pure function of these seeds and the step or epoch
   * (data order: seed + epoch; LoRA init: loraSeed; LoRA dropout masks: seed + the global micro-batch index,
   * see trainer.ts dropoutSeedOf). No generator state advances during training, so the seeds are the whole RNG state.
   */
  rng: { seed: number; dataSeed: number; loraSeed: number };
  /** The options that decide the trajectory; a resume with different ones is refused. */
  config: Record<string, unknown>;
  lastTrainLoss: number | null;
  lastEvalLoss: number | null;
  elapsedSeconds: number;
  savedAt: string;
}

export interface CheckpointContents {
  state: TrainerState;
  /** Writes the adapter (or model) files into the folder (called with the temporary folder). */
  writeWeights: (dir: string) => void | Promise<void>;
  optimizer: AdamwState;
}

export interface LoadedCheckpoint {
  dir: string;
  state: TrainerState;
  optimizer: AdamwState;
}

function pauseMs(): number {
  const v = Number(process.env.INSTILL_TEST_CHECKPOINT_PAUSE_MS ?? 0);
  return Number.isFinite(v) && v > 0 ? v : 0;
}

async function fsyncPath(path: string, dir = false): Promise<void> {
  const fh = await open(path, dir ? 'r' : 'r+');
  try {
    await fh.sync();
  } catch (err) {
    // Some file systems refuse fsync on a directory handle (EINVAL/EISDIR); the files themselves were synced.
    if (!dir) throw err;
  } finally {
    await fh.close();
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function checkpointDir(outputDir: string, step: number): string {
  return join(outputDir, `checkpoint-${step}`);
}

/** Writes checkpoint-<step> atomically; returns its path. Prunes to `keepLast` complete checkpoints (0 = keep all). */
export async function saveCheckpoint(outputDir: string, c: CheckpointContents, keepLast = 0): Promise<string> {
  const step = c.state.step;
  await mkdir(outputDir, { recursive: true });
  const final = checkpointDir(outputDir, step);
  const tmp = `${final}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp);
  const pause = pauseMs();
  const written: string[] = [];
  const after = async (...files: string[]) => {
    written.push(...files);
    if (pause) await new Promise((r) => setTimeout(r, pause));
  };
  try {
    await c.writeWeights(tmp);
    await after(...(await readdir(tmp)));
    const moments: Record<string, TensorToWrite> = {};
    for (const [name, m] of Object.entries(c.optimizer.m)) moments[`m.${name}`] = { dtype: 'F32', shape: [m.length], data: m };
    for (const [name, v] of Object.entries(c.optimizer.v)) moments[`v.${name}`] = { dtype: 'F32', shape: [v.length], data: v };
    writeSafetensors(join(tmp, OPTIMIZER_FILE), moments, { step: String(c.optimizer.step) });
    await after(OPTIMIZER_FILE);
    await writeFile(join(tmp, TRAINER_STATE_FILE), JSON.stringify(c.state, null, 2) + '\n');
    await after(TRAINER_STATE_FILE);
    for (const f of await readdir(tmp)) await fsyncPath(join(tmp, f));
    await fsyncPath(tmp, true);
    if (existsSync(final)) {
      // Saving the same step again (a resumed run's final save): move the old one aside first.
      const old = `${final}.old-${process.pid}`;
      await rm(old, { recursive: true, force: true });
      await rename(final, old);
      await rename(tmp, final);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, final);
    }
    await fsyncPath(outputDir, true);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    if (err instanceof InstillError) throw err;
    throw new InstillError(ErrorCode.IO, `saving checkpoint ${final}: ${(err as Error).message} (check free disk space and permissions of ${outputDir})`, { cause: err });
  }
  if (keepLast > 0) await pruneCheckpoints(outputDir, keepLast);
  return final;
}

/** Complete checkpoints of a folder, oldest first (folders without trainer_state.json are left out). */
export async function listCheckpoints(outputDir: string): Promise<{ step: number; dir: string }[]> {
  if (!existsSync(outputDir)) return [];
  const out: { step: number; dir: string }[] = [];
  for (const name of await readdir(outputDir)) {
    const m = CHECKPOINT_RE.exec(name);
    if (!m) continue;
    const dir = join(outputDir, name);
    if (!existsSync(join(dir, TRAINER_STATE_FILE))) continue;
    out.push({ step: Number(m[1]), dir });
  }
  return out.sort((a, b) => a.step - b.step);
}

async function pruneCheckpoints(outputDir: string, keepLast: number): Promise<void> {
  const all = await listCheckpoints(outputDir);
  for (const c of all.slice(0, Math.max(0, all.length - keepLast))) await rm(c.dir, { recursive: true, force: true });
  for (const name of await readdir(outputDir)) {
    const m = TMP_RE.exec(name);
    if (m && Number(m[2]) !== process.pid && !pidAlive(Number(m[2]))) await rm(join(outputDir, name), { recursive: true, force: true });
  }
}

/** Reads one checkpoint folder; throws InstillError(E_IO/E_DATA) when it is incomplete or damaged. */
export async function loadCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  let state: TrainerState;
  try {
    state = JSON.parse(await readFile(join(dir, TRAINER_STATE_FILE), 'utf8')) as TrainerState;
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `${dir} is not a complete checkpoint: ${TRAINER_STATE_FILE} could not be read (${(err as Error).message})`, { cause: err });
  }
  if (state?.format !== 'instill-trainer-state' || state.version !== 1 || !Number.isInteger(state.step)) {
    throw new InstillError(ErrorCode.DATA, `${join(dir, TRAINER_STATE_FILE)} is not an instill trainer state (version 1)`);
  }
  const full = existsSync(join(dir, MODEL_FILE)) && !existsSync(join(dir, ADAPTER_FILE));
  for (const f of full ? [MODEL_FILE, MODEL_CONFIG_FILE, OPTIMIZER_FILE] : [ADAPTER_FILE, ADAPTER_CONFIG_FILE, OPTIMIZER_FILE]) {
    if (!existsSync(join(dir, f))) throw new InstillError(ErrorCode.IO, `${dir} is not a complete checkpoint: ${f} is missing`);
  }
  const f = SafetensorsFile.open(join(dir, OPTIMIZER_FILE));
  const optimizer: AdamwState = { step: 0, m: {}, v: {} };
  try {
    for (const n of f.names()) {
      const arr = f.readArray(n);
      if (!(arr instanceof Float32Array)) throw new InstillError(ErrorCode.DATA, `${dir}/${OPTIMIZER_FILE}: '${n}' is not F32`);
      if (n.startsWith('m.')) optimizer.m[n.slice(2)] = arr;
      else if (n.startsWith('v.')) optimizer.v[n.slice(2)] = arr;
    }
  } finally {
    f.close();
  }
  optimizer.step = state.step;
  return { dir, state, optimizer };
}

/** The highest-step checkpoint of `outputDir` that loads, or null when there is none. */
export async function loadLatestCheckpoint(outputDir: string): Promise<LoadedCheckpoint | null> {
  const all = await listCheckpoints(outputDir);
  for (let i = all.length - 1; i >= 0; i--) {
    try {
      return await loadCheckpoint(all[i].dir);
    } catch {
      // damaged (e.g. a disk error after the rename): fall back to the previous one
    }
  }
  return null;
}
