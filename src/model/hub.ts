// Model location: a local folder, or a Hugging Face Hub id resolved through the
// standard Hugging Face cache layout:
//   <cache>/models--<org>--<name>/refs/<revision>     (a file holding the commit hash)
//   <cache>/models--<org>--<name>/snapshots/<commit>/  (the files)
// <cache> is HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub.
// A cached snapshot is used without touching the network. A missing one is
// downloaded with @huggingface/hub into that same layout unless HF_HUB_OFFLINE is set:
// only the files instill reads (config, safetensors weights, tokenizer, generation
// config; see wantedHubFile), not other formats of the same weights. Without a
// network, the error says what was looked for and where.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
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

/** Whether a file of a Hub model repository is one instill needs (top level only). */
export function wantedHubFile(path: string): boolean {
  if (path.includes('/')) return false;
  return (
    /^(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|model\.safetensors\.index)\.json$/.test(path) ||
    /^model(-\d+-of-\d+)?\.safetensors$/.test(path) ||
    path === 'chat_template.jinja' ||
    path === 'tokenizer.model'
  );
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
    const { listFiles, downloadFileToCacheDir } = await import('@huggingface/hub');
    const accessToken = process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN || undefined;
    const repo = { type: 'model' as const, name: hub.id };
    const files: string[] = [];
    for await (const f of listFiles({ repo, revision: hub.revision, accessToken })) {
      if (f.type === 'file' && wantedHubFile(f.path)) files.push(f.path);
    }
    if (!files.includes('config.json')) throw new Error(`${hub.id} has no config.json at revision ${hub.revision}`);
    let snapshot: string | null = null;
    for (const path of files) {
      const local = await downloadFileToCacheDir({ repo, path, revision: hub.revision, cacheDir, accessToken });
      snapshot = dirname(local);
    }
    return snapshot!;
  } catch (err) {
    throw new InstillError(ErrorCode.IO, `${notFound}, and downloading it failed: ${(err as Error).message}`, { cause: err });
  }
}
