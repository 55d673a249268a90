// Requests to the Hugging Face Hub: the revision API, file metadata from HEAD on `resolve` URLs,
// redirects, and the translation of HTTP and network failures into MidpoErrors that name the fix.

import { z } from "zod";
import { MidpoError } from "../errors.js";
import type { HubSettings } from "./settings.js";

const MAX_REDIRECTS = 10;
const USER_AGENT = "midpo";

/** Repository and revision of a request, named in error messages. */
export interface HubContext {
  settings: HubSettings;
  repoId: string;
  revision: string;
}

/** The hub could not be reached at all, so the caller may fall back to the cache. */
export class HubUnreachableError extends Error {
  constructor(
    readonly code: string,
    readonly url: string,
  ) {
    super(`cannot reach ${url} (${code})`);
    this.name = "HubUnreachableError";
  }
}

export interface FileMetadata {
  /** ETag without quotes or `W/`: sha256 for LFS files, the git blob sha1 for others. */
  etag: string;
  /** Size in bytes, when the hub sends it. */
  size: number | undefined;
  commit: string | undefined;
  /** `X-Xet-Hash`, sent for files in Xet storage. */
  xetHash: string | undefined;
}

export interface RevisionInfo {
  commit: string;
  files: string[];
}

const revisionInfoSchema = z.object({
  sha: z.string().regex(/^[0-9a-f]{40}$/),
  siblings: z.array(z.object({ rfilename: z.string() })),
});

/** Builds `{endpoint}/{repo}/resolve/{revision}/{file}`, the download URL of one file. */
export function resolveUrl(settings: HubSettings, repoId: string, revision: string, file: string) {
  const encodedFile = file.split("/").map(encodeURIComponent).join("/");
  return `${settings.endpoint}/${repoId}/resolve/${encodeURIComponent(revision)}/${encodedFile}`;
}

/** Fetches the commit that `revision` points to and the repository's file list. */
export async function fetchRevisionInfo(context: HubContext): Promise<RevisionInfo> {
  const { settings, repoId, revision } = context;
  const url = `${settings.endpoint}/api/models/${repoId}/revision/${encodeURIComponent(revision)}`;
  const response = await hubRequest(url, { method: "GET", token: settings.token });
  await assertOk(response, context);

  const parsed = revisionInfoSchema.safeParse(await response.json().catch(() => undefined));
  if (!parsed.success) {
    throw new MidpoError(
      `Invalid reply from ${url}: expected a JSON object with sha and siblings. ` +
        `Check that HF_ENDPOINT (${settings.endpoint}) points to a Hugging Face Hub or mirror.`,
    );
  }
  return { commit: parsed.data.sha, files: parsed.data.siblings.map((s) => s.rfilename) };
}

/**
 * Reads a file's ETag, size and commit with HEAD, as huggingface_hub does. Only relative
 * redirects (a renamed repository) are followed, because for LFS files the redirect response
 * itself carries `X-Linked-Etag` and `X-Linked-Size`. Returns undefined when the file is not found.
 */
export async function fetchFileMetadata(
  context: HubContext,
  commit: string,
  file: string,
): Promise<FileMetadata | undefined> {
  const url = resolveUrl(context.settings, context.repoId, commit, file);
  const response = await hubRequest(url, {
    method: "HEAD",
    token: context.settings.token,
    followRedirects: "relative",
  });
  if (response.status === 404) {
    return undefined;
  }
  if (!isRedirect(response.status)) {
    await assertOk(response, context, file);
  }

  const etag = response.headers.get("x-linked-etag") ?? response.headers.get("etag");
  if (etag === null) {
    throw new MidpoError(
      `The hub sent no ETag for ${url}, so midpo cannot place the file in the cache. ` +
        `Check that HF_ENDPOINT (${context.settings.endpoint}) points to a Hugging Face Hub or mirror.`,
    );
  }
  const size = response.headers.get("x-linked-size") ?? response.headers.get("content-length");
  return {
    etag: normalizeEtag(etag),
    size: size === null ? undefined : Number(size),
    commit: response.headers.get("x-repo-commit") ?? undefined,
    xetHash: response.headers.get("x-xet-hash") ?? undefined,
  };
}

export interface HubRequestInit {
  method: "GET" | "HEAD";
  token: string | undefined;
  headers?: Record<string, string>;
  /** "all" (default) follows every redirect, "relative" only those without a host. */
  followRedirects?: "all" | "relative";
}

/**
 * Sends a request, following redirects by hand so that the token goes only to the endpoint's
 * origin and never to a CDN host. Network failures become {@link HubUnreachableError}.
 */
export async function hubRequest(url: string, init: HubRequestInit): Promise<Response> {
  const endpointOrigin = new URL(url).origin;
  let current = new URL(url);

  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const headers: Record<string, string> = {
      "User-Agent": USER_AGENT,
      // A compressed body would make Content-Length and the byte offsets of Range disagree.
      "Accept-Encoding": "identity",
      ...init.headers,
    };
    if (init.token !== undefined && current.origin === endpointOrigin) {
      headers.Authorization = `Bearer ${init.token}`;
    }

    const response = await fetchOrThrowUnreachable(current, {
      method: init.method,
      headers,
      redirect: "manual",
    });
    const location = response.headers.get("location");
    if (!isRedirect(response.status) || location === null) {
      return response;
    }
    if (init.followRedirects === "relative" && !isRelativeLocation(location)) {
      return response;
    }

    await response.body?.cancel();
    current = new URL(location, current);
  }
  throw new MidpoError(`Too many redirects (more than ${MAX_REDIRECTS}) starting from ${url}.`);
}

/** Throws a MidpoError that explains a failed response. `file` is the requested file, if any. */
export async function assertOk(response: Response, context: HubContext, file?: string) {
  if (response.ok) {
    return;
  }
  await response.body?.cancel();
  throw new MidpoError(statusMessage(response, context, file));
}

function statusMessage(response: Response, context: HubContext, file: string | undefined) {
  const { settings, repoId, revision } = context;
  const where = `${repoId}@${revision} at ${settings.endpoint}`;
  const errorCode = response.headers.get("x-error-code");
  const tokenAdvice =
    settings.token === undefined
      ? "Set HF_TOKEN to an access token that can read it"
      : "The token from HF_TOKEN was not accepted, so check that it is valid and can read it";

  switch (response.status) {
    case 401:
      return (
        `The hub returned 401 Unauthorized for ${where}. The repository is private or gated, ` +
        `or it does not exist. ${tokenAdvice}, or check the id.`
      );
    case 403:
      return (
        `The hub returned 403 Forbidden for ${where}. The repository is gated and your account ` +
        `has no access yet. Accept its terms at ${settings.endpoint}/${repoId} while logged in, ` +
        `then set HF_TOKEN to a token of that account.`
      );
    case 404:
      return notFoundMessage(errorCode, context, file);
    case 429:
      return (
        `The hub rate-limited requests for ${where} (429 Too Many Requests). Wait and run ` +
        `again, or set HF_TOKEN because authenticated requests get a higher limit.`
      );
    default:
      return (
        `The hub returned HTTP ${response.status} ${response.statusText} for ${where}` +
        `${file === undefined ? "" : ` (file ${file})`}. Try again later, or set HF_ENDPOINT ` +
        `to another mirror.`
      );
  }
}

function notFoundMessage(errorCode: string | null, context: HubContext, file: string | undefined) {
  const { settings, repoId, revision } = context;
  if (errorCode === "RevisionNotFound") {
    return (
      `Revision "${revision}" not found in ${repoId} at ${settings.endpoint}. ` +
      `Check the branch, tag or commit after "@".`
    );
  }
  if (file !== undefined && errorCode === "EntryNotFound") {
    return `File ${file} not found in ${repoId}@${revision} at ${settings.endpoint}.`;
  }
  return (
    `Model ${repoId} not found at ${settings.endpoint}, and no local directory has that name. ` +
    `Check the id (org/name), or pass the path of a local model directory.`
  );
}

async function fetchOrThrowUnreachable(url: URL, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (error) {
    throw new HubUnreachableError(networkErrorCode(error), url.toString());
  }
}

/** Extracts a code such as ECONNREFUSED or ENOTFOUND from a failed fetch. */
export function networkErrorCode(error: unknown): string {
  let cause = (error as { cause?: unknown }).cause ?? error;
  if (cause instanceof AggregateError && cause.errors.length > 0) {
    cause = cause.errors[0];
  }
  const code = (cause as { code?: unknown }).code;
  if (typeof code === "string") {
    return code;
  }
  return cause instanceof Error ? cause.message : String(cause);
}

function isRedirect(status: number): boolean {
  return status >= 300 && status < 400;
}

function isRelativeLocation(location: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(location) && !location.startsWith("//");
}

function normalizeEtag(etag: string): string {
  return etag.replace(/^W\//, "").replaceAll('"', "");
}
