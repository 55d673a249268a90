// Resumable download of one blob into the cache. Bytes go to `<blob>.incomplete`, which survives
// a failed attempt or a killed process. The next attempt requests the rest with a Range header.
// The file is renamed to its final blob name only after its size and checksum match the hub's.
//
// NOTE: unlike huggingface_hub, midpo takes no file lock. Two processes that download the same
// blob at once append to the same partial file, and the checksum check then rejects the result.

import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import type { Logger } from "pino";
import { MidpoError } from "../errors.js";
import { fileSize } from "./cache.js";
import { assertOk, HubUnreachableError, hubRequest, type HubContext } from "./http.js";
import type { ProgressReporter } from "./progress.js";

export interface BlobDownload {
  /** The file's `resolve` URL, which may redirect to a CDN. */
  url: string;
  /** Path of the file inside the repository, for logs and messages. */
  file: string;
  blobPath: string;
  etag: string;
  /** Size in bytes from the HEAD response, when the hub sent one. */
  size: number | undefined;
  /** Set for Xet-stored files, whose ETag may be a Xet hash and not a sha256. */
  xetHash: string | undefined;
}

export interface TransferOptions {
  context: HubContext;
  /** Attempts after the first one, each resuming where the previous one stopped. */
  retries: number;
  progress: ProgressReporter;
  logger: Logger;
}

/** A failure worth another attempt: a dropped connection, a 5xx, or a bad partial response. */
class RetryableTransferError extends Error {
  override name = "RetryableTransferError";
}

const MAX_RETRY_DELAY_MS = 10_000;

/** Downloads a blob into the cache, resuming partial data, and verifies it before the rename. */
export async function downloadBlob(download: BlobDownload, options: TransferOptions) {
  const incomplete = `${download.blobPath}.incomplete`;
  await mkdir(dirname(incomplete), { recursive: true });

  for (let attempt = 0; ; attempt++) {
    try {
      await transferOnce(download, incomplete, options);
      await checkSize(download, incomplete);
      break;
    } catch (error) {
      const retryable =
        error instanceof RetryableTransferError || error instanceof HubUnreachableError;
      if (!retryable) {
        throw error;
      }
      if (attempt >= options.retries) {
        throw await interruptedError(download, incomplete, options, error);
      }

      const delayMs = Math.min(500 * 2 ** attempt, MAX_RETRY_DELAY_MS);
      options.logger.warn(
        { file: download.file, attempt: attempt + 1, delayMs, error: error.message },
        `download of ${download.file} failed, retrying`,
      );
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }

  await verifyChecksum(download, incomplete);
  await rename(incomplete, download.blobPath);
}

async function transferOnce(download: BlobDownload, incomplete: string, options: TransferOptions) {
  let offset = await fileSize(incomplete);
  if (download.size !== undefined && offset > download.size) {
    await rm(incomplete);
    offset = 0;
  }
  if (download.size !== undefined && offset === download.size) {
    return;
  }

  const response = await hubRequest(download.url, {
    method: "GET",
    token: options.context.settings.token,
    headers: offset > 0 ? { Range: `bytes=${offset}-` } : {},
  });
  await checkStatus(response, incomplete, options.context, download.file);

  if (offset > 0 && response.status !== 206) {
    // The server ignored the Range header and sent the whole file.
    offset = 0;
  } else if (offset > 0 && rangeStart(response) !== offset) {
    await response.body?.cancel();
    await rm(incomplete, { force: true });
    throw new RetryableTransferError(`the server sent a range that does not start at ${offset}`);
  }

  await writeBody(response, incomplete, offset, download, options);
}

async function checkStatus(
  response: Response,
  incomplete: string,
  context: HubContext,
  file: string,
): Promise<void> {
  if (response.status === 416) {
    // The partial file no longer fits the blob, so start over.
    await response.body?.cancel();
    await rm(incomplete, { force: true });
    throw new RetryableTransferError("the server rejected the Range request (416)");
  }
  if (response.status >= 500 || response.status === 429) {
    await response.body?.cancel();
    throw new RetryableTransferError(`the server returned HTTP ${response.status}`);
  }
  await assertOk(response, context, file);
}

async function writeBody(
  response: Response,
  incomplete: string,
  offset: number,
  download: BlobDownload,
  options: TransferOptions,
): Promise<void> {
  if (response.body === null) {
    throw new RetryableTransferError("the response has no body");
  }

  const progress = options.progress.start(download.file, download.size, offset);
  let bytesOnDisk = offset;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytesOnDisk += chunk.length;
      progress.update(bytesOnDisk);
      callback(null, chunk);
    },
  });

  try {
    await pipeline(
      Readable.fromWeb(response.body as NodeReadableStream<Uint8Array>),
      counter,
      createWriteStream(incomplete, { flags: offset > 0 ? "a" : "w" }),
    );
  } catch (error) {
    progress.abort();
    // Errors with a syscall come from the file system (ENOSPC, EACCES), which a retry won't fix.
    if ((error as NodeJS.ErrnoException).syscall !== undefined) {
      throw error;
    }
    throw new RetryableTransferError(`the connection dropped: ${(error as Error).message}`);
  }
  progress.finish();
}

async function checkSize(download: BlobDownload, incomplete: string): Promise<void> {
  if (download.size === undefined) {
    return;
  }
  const size = await fileSize(incomplete);
  if (size < download.size) {
    throw new RetryableTransferError(`the transfer ended at ${size} of ${download.size} bytes`);
  }
  if (size > download.size) {
    await rm(incomplete, { force: true });
    throw new RetryableTransferError(`the file grew to ${size} bytes, expected ${download.size}`);
  }
}

/**
 * Compares the file with its ETag when the ETag is a content hash: sha256 for LFS files, the git
 * blob sha1 (`sha1("blob <size>\0" + bytes)`) for files stored in git.
 */
async function verifyChecksum(download: BlobDownload, incomplete: string): Promise<void> {
  const isSha256 = /^[0-9a-f]{64}$/.test(download.etag) && download.etag !== download.xetHash;
  const isGitSha1 = /^[0-9a-f]{40}$/.test(download.etag);
  if (!isSha256 && !isGitSha1) {
    return;
  }

  const hash = createHash(isSha256 ? "sha256" : "sha1");
  if (isGitSha1) {
    hash.update(`blob ${await fileSize(incomplete)}\0`);
  }
  await pipeline(createReadStream(incomplete), hash);
  const actual = hash.digest("hex");

  if (actual !== download.etag) {
    await rm(incomplete, { force: true });
    throw new MidpoError(
      `Downloaded ${download.file} is corrupt: its ${isSha256 ? "sha256" : "git sha1"} is ` +
        `${actual} but the hub lists ${download.etag}. The partial file was deleted, so run ` +
        `the command again to download it anew.`,
    );
  }
}

async function interruptedError(
  download: BlobDownload,
  incomplete: string,
  options: TransferOptions,
  cause: Error,
): Promise<MidpoError> {
  const { repoId, settings } = options.context;
  const bytes = await fileSize(incomplete);
  return new MidpoError(
    `Download of ${download.file} from ${repoId} at ${settings.endpoint} failed after ` +
      `${options.retries + 1} attempts (${cause.message}). ${bytes} bytes are kept in ` +
      `${incomplete}, and running the command again resumes from there.`,
  );
}

/** Parses the first byte position of a `Content-Range: bytes <start>-<end>/<size>` header. */
function rangeStart(response: Response): number | undefined {
  const match = /^bytes (\d+)-/.exec(response.headers.get("content-range") ?? "");
  return match === null ? undefined : Number(match[1]);
}
