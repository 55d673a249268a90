// Turns a model argument into a local directory. A path to an existing directory is used as is,
// with no network access. Anything else must be a hub id, `org/name` or `org/name@revision`,
// whose config, tokenizer and safetensors weights are downloaded into the Hugging Face cache
// unless a complete snapshot is already cached.

import { readFile, stat } from "node:fs/promises";
import { join, resolve as resolvePath } from "node:path";
import type { Logger } from "pino";
import { MidpoError } from "../errors.js";
import { log } from "../log.js";
import {
  assertSafeRepoPath,
  OPTIONAL_FILES,
  RepoCache,
  shardFiles,
  SINGLE_WEIGHTS_FILE,
  WEIGHTS_INDEX_FILE,
} from "./cache.js";
import {
  fetchFileMetadata,
  fetchRevisionInfo,
  HubUnreachableError,
  resolveUrl,
  type HubContext,
} from "./http.js";
import { createProgressReporter, type ProgressReporter } from "./progress.js";
import { hubSettings, type HubSettingOverrides } from "./settings.js";
import { downloadBlob } from "./transfer.js";

export interface ResolveModelOptions extends HubSettingOverrides {
  /** Revision when the argument has no `@revision`. Default "main". */
  revision?: string;
  /** Ask the hub for the revision's current commit even when its snapshot is cached. */
  refresh?: boolean;
  /** Attempts per file after the first, each resuming the partial download. Default 5. */
  retries?: number;
  /** Draw a progress bar. Default: when stderr is a terminal. */
  progressBar?: boolean;
  /** Logger for download lines and warnings. Default: the project logger in src/log.ts. */
  logger?: Logger;
}

export interface HubModelId {
  repoId: string;
  revision: string;
}

const HUB_ID = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/;

/**
 * Returns a local model directory for `model`: the directory itself when it exists, otherwise
 * the cached snapshot of the hub id, downloaded first if needed. A complete cached snapshot is
 * used without contacting the hub, so a branch that moved on the hub is noticed only with
 * `refresh`. With `HF_HUB_OFFLINE=1` (or `offline: true`) only the cache is used.
 */
export async function resolveModel(
  model: string,
  options: ResolveModelOptions = {},
): Promise<string> {
  const kind = await pathKind(model);
  if (kind === "directory") {
    return resolvePath(model);
  }
  if (kind === "file") {
    throw new MidpoError(`Model path ${model} is a file. Pass the directory that contains it.`);
  }
  await rejectMissingSubdirectory(model);

  const { repoId, revision } = parseHubId(model, options.revision);
  const settings = hubSettings(options);
  const cache = new RepoCache(settings.cacheDir, repoId);
  const logger = options.logger ?? log;
  const context: HubContext = { settings, repoId, revision };

  if (settings.offline || !options.refresh) {
    const cached = await cache.cachedSnapshot(revision, !settings.offline);
    if (cached !== undefined) {
      logger.debug({ repoId, revision, snapshot: cached }, "using cached snapshot");
      return cached;
    }
  }
  if (settings.offline) {
    throw new MidpoError(
      `Offline mode is on (HF_HUB_OFFLINE) and the cache at ${settings.cacheDir} has no ` +
        `snapshot of ${repoId}@${revision} with config.json and weights. Unset HF_HUB_OFFLINE ` +
        `to download it, or pass a local model directory.`,
    );
  }

  try {
    return await downloadSnapshot(context, cache, {
      logger,
      retries: options.retries ?? 5,
      progress: createProgressReporter(
        logger,
        options.progressBar ?? process.stderr.isTTY === true,
      ),
    });
  } catch (error) {
    if (!(error instanceof HubUnreachableError)) {
      throw error;
    }
    return useCacheWhenUnreachable(context, cache, logger, error);
  }
}

/** Splits `org/name@revision` into id and revision. Anything else raises a MidpoError. */
export function parseHubId(model: string, defaultRevision = "main"): HubModelId {
  const at = model.indexOf("@");
  const repoId = at === -1 ? model : model.slice(0, at);
  const revision = at === -1 ? defaultRevision : model.slice(at + 1);

  const looksLikePath = /^(\.|~|\/)/.test(model) || model.includes("\\");
  if (looksLikePath || !HUB_ID.test(repoId) || revision === "") {
    throw new MidpoError(
      `Model "${model}" is neither an existing directory nor a hub id of the form org/name or ` +
        `org/name@revision. Check the path, or the spelling of the id.`,
    );
  }
  return { repoId, revision };
}

interface DownloadOptions {
  logger: Logger;
  retries: number;
  progress: ProgressReporter;
}

/** Downloads config, tokenizer and weights of one commit, skipping files already cached. */
async function downloadSnapshot(context: HubContext, cache: RepoCache, options: DownloadOptions) {
  const { repoId, revision } = context;
  const { commit, files } = await fetchRevisionInfo(context);
  if (revision !== commit) {
    await cache.writeRef(revision, commit);
  }
  options.logger.info({ repoId, revision, commit }, `resolving ${repoId}@${revision}`);

  const available = new Set(files);
  const weightsFile = pickWeightsFile(available, context);
  await fetchFile(context, cache, commit, "config.json", options);
  for (const file of OPTIONAL_FILES) {
    await fetchOptionalFile(context, cache, commit, file, available, options);
  }

  await fetchFile(context, cache, commit, weightsFile, options);
  if (weightsFile === WEIGHTS_INDEX_FILE) {
    const indexPath = join(cache.snapshotDir(commit), WEIGHTS_INDEX_FILE);
    for (const shard of shardFiles(await readFile(indexPath, "utf8"), indexPath)) {
      await fetchFile(context, cache, commit, shard, options);
    }
  }
  return cache.snapshotDir(commit);
}

function pickWeightsFile(available: Set<string>, context: HubContext): string {
  if (available.has(SINGLE_WEIGHTS_FILE)) {
    return SINGLE_WEIGHTS_FILE;
  }
  if (available.has(WEIGHTS_INDEX_FILE)) {
    return WEIGHTS_INDEX_FILE;
  }
  const weights = [...available].filter((file) => /\.(bin|pt|pth|safetensors|gguf)$/.test(file));
  throw new MidpoError(
    `${context.repoId}@${context.revision} has neither ${SINGLE_WEIGHTS_FILE} nor ` +
      `${WEIGHTS_INDEX_FILE}` +
      `${weights.length > 0 ? ` (its weights files: ${weights.join(", ")})` : ""}. midpo reads ` +
      `safetensors only, so convert the checkpoint and pass the local directory instead.`,
  );
}

async function fetchOptionalFile(
  context: HubContext,
  cache: RepoCache,
  commit: string,
  file: string,
  available: Set<string>,
  options: DownloadOptions,
) {
  const found =
    available.has(file) && (await fetchFile(context, cache, commit, file, options, false));
  if (found) {
    return;
  }
  await cache.markMissing(commit, file);
  if (file === "tokenizer.json") {
    options.logger.warn(
      { repoId: context.repoId, commit },
      `${context.repoId} has no tokenizer.json, so only token ids can be passed to this model`,
    );
  }
}

/**
 * Places one file in `snapshots/<commit>/`, downloading its blob unless it is cached. Returns
 * false when the hub does not have the file and `required` is false.
 */
async function fetchFile(
  context: HubContext,
  cache: RepoCache,
  commit: string,
  file: string,
  options: DownloadOptions,
  required = true,
): Promise<boolean> {
  assertSafeRepoPath(file);
  if (await cache.hasFile(commit, file)) {
    return true;
  }

  const metadata = await fetchFileMetadata(context, commit, file);
  if (metadata === undefined) {
    if (!required) {
      return false;
    }
    throw new MidpoError(
      `File ${file} not found in ${context.repoId}@${commit} at ${context.settings.endpoint}, ` +
        `although the model needs it. Check that the repository is a complete checkpoint.`,
    );
  }

  const blobPath = cache.blobPath(metadata.etag);
  if (!(await isFile(blobPath))) {
    const url = resolveUrl(context.settings, context.repoId, commit, file);
    await downloadBlob(
      { url, file, blobPath, etag: metadata.etag, size: metadata.size, xetHash: metadata.xetHash },
      { context, ...options },
    );
  }
  await cache.linkSnapshotFile(commit, file, metadata.etag);
  return true;
}

async function useCacheWhenUnreachable(
  context: HubContext,
  cache: RepoCache,
  logger: Logger,
  error: HubUnreachableError,
): Promise<string> {
  const { settings, repoId, revision } = context;
  const cached = await cache.cachedSnapshot(revision, false);
  if (cached !== undefined) {
    logger.warn(
      { repoId, revision, endpoint: settings.endpoint, code: error.code, snapshot: cached },
      `cannot reach the hub, using the cached snapshot of ${repoId}@${revision}`,
    );
    return cached;
  }

  throw new MidpoError(
    `Cannot reach the Hugging Face Hub at ${settings.endpoint} to download ` +
      `${repoId}@${revision} (${error.code}). The cache at ${settings.cacheDir} has no snapshot of it ` +
      `to fall back on. Check your network connection, set HF_ENDPOINT to a reachable hub or ` +
      `mirror, or pass a local model directory instead of a hub id.`,
  );
}

/**
 * Rejects a path that does not exist, and a hub id `org/name` whose `org` is a local directory,
 * which is usually a mistyped path such as `models/tiny`. `org/name@revision` still
 * reaches the hub, for a user whose working directory has a folder named like the organisation.
 */
async function rejectMissingSubdirectory(model: string): Promise<void> {
  if (/^(\.|~|\/)/.test(model) || model.includes("\\")) {
    throw new MidpoError(`Model directory ${resolvePath(model)} does not exist. Check the path.`);
  }
  const slash = model.indexOf("/");
  if (slash <= 0 || model.includes("@")) {
    return;
  }
  const parent = model.slice(0, slash);
  if ((await pathKind(parent)) === "directory") {
    const hubHint = HUB_ID.test(model)
      ? ` If you meant the hub id ${model}, write it as ${model}@main.`
      : "";
    throw new MidpoError(
      `Model directory ${resolvePath(model)} does not exist, although ${resolvePath(parent)} ` +
        `does. Check the path.${hubHint}`,
    );
  }
}

async function pathKind(path: string): Promise<"directory" | "file" | undefined> {
  try {
    return (await stat(path)).isDirectory() ? "directory" : "file";
  } catch {
    return undefined;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
