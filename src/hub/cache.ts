// The Hugging Face cache layout, as huggingface_hub writes it, for one model repository:
//
//   <cacheDir>/models--<org>--<name>/
//     blobs/<etag>                     file contents, named by ETag (sha256 for LFS files,
//                                      git blob sha1 for small ones)
//     blobs/<etag>.incomplete          a transfer in progress, resumed from its current size
//     refs/<revision>                  the commit hash that a branch or tag pointed to
//     snapshots/<commit>/<file>        relative symlink to ../../blobs/<etag>
//     .no_exist/<commit>/<file>        empty marker: the file is absent at that commit
//
// Sharing this layout lets midpo and Python tools reuse each other's downloads.

import { copyFile, lstat, mkdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { MidpoError } from "../errors.js";

export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** Files read by midpo besides the weights. A repository may lack any of them. */
export const OPTIONAL_FILES = [
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "chat_template.jinja",
];

export const SINGLE_WEIGHTS_FILE = "model.safetensors";
export const WEIGHTS_INDEX_FILE = "model.safetensors.index.json";

export class RepoCache {
  readonly root: string;

  constructor(cacheDir: string, repoId: string) {
    this.root = join(cacheDir, `models--${repoId.replaceAll("/", "--")}`);
  }

  blobPath(etag: string): string {
    return join(this.root, "blobs", etag);
  }

  snapshotDir(commit: string): string {
    return join(this.root, "snapshots", commit);
  }

  async readRef(revision: string): Promise<string | undefined> {
    try {
      const commit = (await readFile(join(this.root, "refs", revision), "utf8")).trim();
      return COMMIT_HASH.test(commit) ? commit : undefined;
    } catch {
      return undefined;
    }
  }

  async writeRef(revision: string, commit: string): Promise<void> {
    const path = join(this.root, "refs", revision);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, commit);
  }

  async hasFile(commit: string, file: string): Promise<boolean> {
    return pathExists(join(this.snapshotDir(commit), file));
  }

  async isKnownMissing(commit: string, file: string): Promise<boolean> {
    return pathExists(join(this.root, ".no_exist", commit, file));
  }

  async markMissing(commit: string, file: string): Promise<void> {
    const path = join(this.root, ".no_exist", commit, file);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, "");
  }

  /** Points `snapshots/<commit>/<file>` at the blob, with a relative symlink as huggingface_hub does. */
  async linkSnapshotFile(commit: string, file: string, etag: string): Promise<void> {
    const pointer = join(this.snapshotDir(commit), file);
    const blob = this.blobPath(etag);
    await mkdir(dirname(pointer), { recursive: true });
    await rm(pointer, { force: true });

    try {
      await symlink(relative(dirname(pointer), blob), pointer);
    } catch (error) {
      // Windows without developer mode cannot create symlinks, so keep a copy as
      // huggingface_hub does there.
      if ((error as NodeJS.ErrnoException).code !== "EPERM") {
        throw error;
      }
      await copyFile(blob, pointer);
    }
  }

  /**
   * Returns the snapshot folder for `revision` when it contains config.json and every weights
   * file. With `requireKnownOptional`, each optional file must also be either present or marked
   * missing, so that skipping the hub loses nothing.
   */
  async cachedSnapshot(
    revision: string,
    requireKnownOptional: boolean,
  ): Promise<string | undefined> {
    const commit = COMMIT_HASH.test(revision) ? revision : await this.readRef(revision);
    if (commit === undefined || !(await this.hasFile(commit, "config.json"))) {
      return undefined;
    }

    const weights = await this.weightsFiles(commit);
    if (weights === undefined) {
      return undefined;
    }
    for (const file of weights) {
      if (!(await this.hasFile(commit, file))) {
        return undefined;
      }
    }

    if (requireKnownOptional) {
      for (const file of OPTIONAL_FILES) {
        const known =
          (await this.hasFile(commit, file)) || (await this.isKnownMissing(commit, file));
        if (!known) {
          return undefined;
        }
      }
    }
    return this.snapshotDir(commit);
  }

  /** Lists the cached weights files of a snapshot, or undefined when neither form is cached. */
  private async weightsFiles(commit: string): Promise<string[] | undefined> {
    if (await this.hasFile(commit, SINGLE_WEIGHTS_FILE)) {
      return [SINGLE_WEIGHTS_FILE];
    }
    if (!(await this.hasFile(commit, WEIGHTS_INDEX_FILE))) {
      return undefined;
    }

    const indexPath = join(this.snapshotDir(commit), WEIGHTS_INDEX_FILE);
    const shards = shardFiles(await readFile(indexPath, "utf8"), indexPath);
    return [WEIGHTS_INDEX_FILE, ...shards];
  }
}

/** Lists the distinct shard files named in a `model.safetensors.index.json` weight_map. */
export function shardFiles(indexText: string, indexPath: string): string[] {
  let weightMap: unknown;
  try {
    weightMap = (JSON.parse(indexText) as { weight_map?: unknown }).weight_map;
  } catch (error) {
    throw new MidpoError(`Invalid JSON in ${indexPath}: ${(error as Error).message}.`);
  }
  if (typeof weightMap !== "object" || weightMap === null) {
    throw new MidpoError(`Invalid ${indexPath}: it has no weight_map object.`);
  }

  const shards = new Set<string>();
  for (const file of Object.values(weightMap)) {
    if (typeof file !== "string") {
      throw new MidpoError(`Invalid ${indexPath}: weight_map values must be file names.`);
    }
    assertSafeRepoPath(file);
    shards.add(file);
  }
  return [...shards];
}

/** Rejects file names from the hub that could escape the snapshot folder. */
export function assertSafeRepoPath(file: string): void {
  const parts = file.split("/");
  const unsafe =
    file === "" ||
    file.startsWith("/") ||
    file.includes("\\") ||
    /^[A-Za-z]:/.test(file) ||
    parts.some((part) => part === ".." || part === "." || part === "");
  if (unsafe) {
    throw new MidpoError(
      `Invalid file name "${file}" in the repository: it is not a plain relative path.`,
    );
  }
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Size of a file in bytes, or 0 when it does not exist. Does not follow symlinks. */
export async function fileSize(path: string): Promise<number> {
  try {
    return (await lstat(path)).size;
  } catch {
    return 0;
  }
}
