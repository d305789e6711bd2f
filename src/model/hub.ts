// Model location: a local folder, or a Hugging Face Hub id resolved through the
// standard Hugging Face cache layout:
//   <cache>/models--<org>--<name>/refs/<revision>     (a file holding the commit hash)
//   <cache>/models--<org>--<name>/snapshots/<commit>/  (the files)
// <cache> is HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub.
// A cached snapshot is used without touching the network. A missing one is
// downloaded with @huggingface/hub (snapshotDownload) unless HF_HUB_OFFLINE is set;
// without a network, the error says what was looked for and where.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { ErrorCode, InstillError } from '../errors.js';

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return resolve(env.HF_HUB_CACHE);
  if (env.HF_HOME) return join(resolve(env.HF_HOME), 'hub');
  return join(homedir(), '.cache', 'huggingface', 'hub');
}

const HUB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)?$/;

/** Splits 'org/name@rev' into id and revision (default 'main'). */
export function parseHubId(s: string): { id: string; revision: string } | null {
  const at = s.lastIndexOf('@');
  const id = at > 0 ? s.slice(0, at) : s;
  const revision = at > 0 ? s.slice(at + 1) : 'main';
  if (!HUB_ID.test(id) || id.includes('..') || revision.length === 0 || revision.includes('/..')) return null;
  return { id, revision };
}

/** The snapshot folder of a Hub id in the cache, or null when it is not there. */
export function resolveFromCache(hubId: string, revision = 'main', cacheDir = hubCacheDir()): string | null {
  const repoDir = join(cacheDir, `models--${hubId.replace(/\//g, '--')}`);
  if (!existsSync(repoDir)) return null;
  let commit = revision;
  if (!/^[0-9a-f]{40}$/.test(revision)) {
    const ref = join(repoDir, 'refs', revision);
    if (!existsSync(ref)) return null;
    commit = readFileSync(ref, 'utf8').trim();
  }
  const snap = join(repoDir, 'snapshots', commit);
  return existsSync(join(snap, 'config.json')) ? snap : null;
}

/** A local model folder for `pathOrHubId`: the folder itself, a cached snapshot, or a fresh download. */
export async function resolveModelDir(pathOrHubId: string): Promise<string> {
  if (typeof pathOrHubId !== 'string' || pathOrHubId.length === 0) {
    throw new InstillError(ErrorCode.ARG, 'Expected a model folder or a Hugging Face Hub id (org/name) for the model');
  }
  if (existsSync(pathOrHubId)) {
    if (!statSync(pathOrHubId).isDirectory()) {
      throw new InstillError(ErrorCode.IO, `${pathOrHubId} is a file; pass the model folder that holds config.json`);
    }
    return resolve(pathOrHubId);
  }
  const looksLocal = pathOrHubId.startsWith('.') || pathOrHubId.startsWith('/') || pathOrHubId.includes('\\');
  const hub = looksLocal ? null : parseHubId(pathOrHubId);
  if (!hub) throw new InstillError(ErrorCode.IO, `model folder ${pathOrHubId} does not exist`);
  const cacheDir = hubCacheDir();
  const cached = resolveFromCache(hub.id, hub.revision, cacheDir);
  if (cached) return cached;
  const offline = ['1', 'true', 'yes', 'on'].includes(String(process.env.HF_HUB_OFFLINE ?? '').toLowerCase());
  const notFound = `'${pathOrHubId}' is neither a local folder nor a model in the Hugging Face cache (${cacheDir})`;
  if (offline) throw new InstillError(ErrorCode.IO, `${notFound}, and HF_HUB_OFFLINE is set so it was not downloaded`);
  try {
    const { snapshotDownload } = await import('@huggingface/hub');
    const accessToken = process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN || undefined;
    const dir = await snapshotDownload({ repo: { type: 'model', name: hub.id }, revision: hub.revision, cacheDir, accessToken });
    return dir;
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `${notFound}, and downloading it failed: ${(err as Error).message}`, { cause: err });
  }
}
