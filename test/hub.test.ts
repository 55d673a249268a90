import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync } from "node:fs";
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  writeFile,
} from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { MidpoError } from "../src/errors.js";
import { parseHubId, resolveModel, type ResolveModelOptions } from "../src/hub/resolve.js";
import { hubSettings } from "../src/hub/settings.js";

// ---------------------------------------------------------------------------------------------
// A mock Hugging Face Hub on 127.0.0.1. The hub server serves the revision API and `resolve`
// URLs. LFS files (*.safetensors) redirect to a second server on another port, standing in for
// the CDN, so the token must not follow the redirect. Small files are served directly with their
// git blob sha1 as ETag, as the real hub does.
// ---------------------------------------------------------------------------------------------

interface MockRepo {
  commit: string;
  files: Map<string, Buffer>;
  /** Token that unlocks a gated repository. No token gets 401, another token 403. */
  gatedToken?: string;
}

interface RecordedRequest {
  server: "hub" | "cdn";
  method: string;
  path: string;
  range: string | undefined;
  authorization: string | undefined;
}

function sha256(content: Buffer): string {
  return createHash("sha256").update(content).digest("hex");
}

function gitBlobSha1(content: Buffer): string {
  return createHash("sha1").update(`blob ${content.length}\0`).update(content).digest("hex");
}

function isLfs(file: string): boolean {
  return file.endsWith(".safetensors");
}

function etagOf(file: string, content: Buffer): string {
  return isLfs(file) ? sha256(content) : gitBlobSha1(content);
}

class MockHub {
  readonly repos = new Map<string, MockRepo>();
  readonly requests: RecordedRequest[] = [];
  /** Close the connection after this many body bytes, for the next `cutsLeft` CDN responses. */
  cutAfterBytes = 0;
  cutsLeft = 0;
  /** Flip one byte of every CDN response, to exercise checksum verification. */
  corrupt = false;

  private hub!: Server;
  private cdn!: Server;
  endpoint = "";
  private cdnEndpoint = "";

  async start(): Promise<void> {
    this.hub = createServer((req, res) => this.handleHub(req, res));
    this.cdn = createServer((req, res) => this.handleCdn(req, res));
    this.endpoint = await listen(this.hub);
    this.cdnEndpoint = await listen(this.cdn);
  }

  async stop(): Promise<void> {
    this.hub.closeAllConnections();
    this.cdn.closeAllConnections();
    await Promise.all([once(this.hub.close(), "close"), once(this.cdn.close(), "close")]);
  }

  countRequests(): number {
    return this.requests.length;
  }

  private record(server: "hub" | "cdn", req: IncomingMessage): void {
    this.requests.push({
      server,
      method: req.method ?? "",
      path: req.url ?? "",
      range: req.headers.range,
      authorization: req.headers.authorization,
    });
  }

  private handleHub(req: IncomingMessage, res: ServerResponse): void {
    this.record("hub", req);
    const url = new URL(req.url ?? "/", this.endpoint);
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
    const resolveMatch = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const match = api ?? resolveMatch;
    if (match === null) {
      return end(res, 404, {});
    }

    const repo = this.repos.get(match[1]);
    if (repo === undefined) {
      return end(res, 404, { "X-Error-Code": "RepoNotFound" });
    }
    if (
      repo.gatedToken !== undefined &&
      req.headers.authorization !== `Bearer ${repo.gatedToken}`
    ) {
      const status = req.headers.authorization === undefined ? 401 : 403;
      return end(res, status, { "X-Error-Code": "GatedRepo" });
    }

    const revision = decodeURIComponent(match[2]);
    if (revision !== "main" && revision !== repo.commit) {
      return end(res, 404, { "X-Error-Code": "RevisionNotFound" });
    }

    if (api !== null) {
      const siblings = [...repo.files.keys()].map((rfilename) => ({ rfilename }));
      const body = Buffer.from(JSON.stringify({ id: match[1], sha: repo.commit, siblings }));
      return end(res, 200, { "Content-Type": "application/json" }, body);
    }
    this.serveResolve(req, res, repo, decodeURIComponent(match[3]));
  }

  private serveResolve(req: IncomingMessage, res: ServerResponse, repo: MockRepo, file: string) {
    const content = repo.files.get(file);
    if (content === undefined) {
      return end(res, 404, { "X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit });
    }

    if (isLfs(file)) {
      return end(res, 302, {
        Location: `${this.cdnEndpoint}/blobs/${sha256(content)}`,
        "X-Repo-Commit": repo.commit,
        "X-Linked-Etag": `"${sha256(content)}"`,
        "X-Linked-Size": String(content.length),
        ETag: `"not-the-content-hash"`,
      });
    }
    serveBytes(req, res, content, {
      ETag: `"${gitBlobSha1(content)}"`,
      "X-Repo-Commit": repo.commit,
    });
  }

  private handleCdn(req: IncomingMessage, res: ServerResponse): void {
    this.record("cdn", req);
    const sha = /^\/blobs\/([0-9a-f]{64})$/.exec(req.url ?? "")?.[1];
    const content = [...this.repos.values()]
      .flatMap((repo) => [...repo.files.values()])
      .find((candidate) => sha256(candidate) === sha);
    if (content === undefined) {
      return end(res, 404, {});
    }

    let served = content;
    if (this.corrupt) {
      served = Buffer.from(content);
      served[0] ^= 0xff;
    }
    if (this.cutsLeft > 0 && req.method === "GET") {
      this.cutsLeft--;
      return serveBytes(req, res, served, {}, this.cutAfterBytes);
    }
    serveBytes(req, res, served, {});
  }
}

async function listen(server: Server): Promise<string> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function end(res: ServerResponse, status: number, headers: Record<string, string>, body?: Buffer) {
  res.writeHead(status, { "Content-Length": String(body?.length ?? 0), ...headers });
  res.end(body);
}

/** Sends `content`, honouring `Range: bytes=N-`, and drops the connection after `cutAfter` bytes. */
function serveBytes(
  req: IncomingMessage,
  res: ServerResponse,
  content: Buffer,
  headers: Record<string, string>,
  cutAfter?: number,
): void {
  const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? "")?.[1] ?? 0);
  if (start >= content.length && req.headers.range !== undefined) {
    return end(res, 416, { "Content-Range": `bytes */${content.length}` });
  }

  const body = content.subarray(start);
  const rangeHeaders: Record<string, string> =
    req.headers.range === undefined
      ? {}
      : { "Content-Range": `bytes ${start}-${content.length - 1}/${content.length}` };
  res.writeHead(req.headers.range === undefined ? 200 : 206, {
    "Content-Length": String(body.length),
    "Accept-Ranges": "bytes",
    ...rangeHeaders,
    ...headers,
  });

  if (req.method === "HEAD") {
    return void res.end();
  }
  if (cutAfter === undefined) {
    return void res.end(body);
  }
  // The pause lets the client read what was sent before the connection drops.
  res.write(body.subarray(0, cutAfter), () => setTimeout(() => res.socket?.destroy(), 50));
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const SHARDED_COMMIT = "fedcba9876543210fedcba9876543210fedcba98";
const WEIGHTS = randomBytes(3 * 1024 * 1024);
const SHARD_1 = randomBytes(512 * 1024);
const SHARD_2 = randomBytes(256 * 1024);

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

function tinyRepo(extra: Partial<MockRepo> = {}): MockRepo {
  return {
    commit: COMMIT,
    files: new Map([
      ["config.json", json({ architectures: ["LlamaForCausalLM"], vocab_size: 32 })],
      ["tokenizer.json", json({ model: { type: "BPE", vocab: {} }, added_tokens: [] })],
      ["tokenizer_config.json", json({ bos_token: "<s>" })],
      ["model.safetensors", WEIGHTS],
      ["README.md", Buffer.from("# tiny\n")],
    ]),
    ...extra,
  };
}

function shardedRepo(): MockRepo {
  const index = {
    metadata: { total_size: SHARD_1.length + SHARD_2.length },
    weight_map: {
      "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
      "model.norm.weight": "model-00002-of-00002.safetensors",
      "lm_head.weight": "model-00002-of-00002.safetensors",
    },
  };
  return {
    commit: SHARDED_COMMIT,
    files: new Map([
      ["config.json", json({ architectures: ["LlamaForCausalLM"] })],
      ["generation_config.json", json({ eos_token_id: 2 })],
      ["model.safetensors.index.json", json(index)],
      ["model-00001-of-00002.safetensors", SHARD_1],
      ["model-00002-of-00002.safetensors", SHARD_2],
    ]),
  };
}

/** Finds a loopback port with nothing listening by opening and closing a server. */
async function closedPortEndpoint(): Promise<string> {
  const server = createServer();
  const endpoint = await listen(server);
  await once(server.close(), "close");
  return endpoint;
}

function captureLogger() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString().trim().split("\n"));
      callback();
    },
  });
  return { logger: pino({ level: "debug" }, stream), lines };
}

let hub: MockHub;
let cacheDir: string;
const tempDirs: string[] = [];

async function newTempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "midpo-hub-"));
  tempDirs.push(dir);
  return dir;
}

function options(extra: ResolveModelOptions = {}): ResolveModelOptions {
  return {
    endpoint: hub.endpoint,
    cacheDir,
    token: undefined,
    offline: false,
    progressBar: false,
    logger: pino({ level: "silent" }),
    ...extra,
  };
}

beforeAll(async () => {
  hub = new MockHub();
  await hub.start();
  hub.repos.set("org/tiny", tinyRepo());
  hub.repos.set("org/sharded", shardedRepo());
  hub.repos.set("org/gated", tinyRepo({ gatedToken: "hf_right" }));
  hub.repos.set("org/no-safetensors", {
    commit: COMMIT,
    files: new Map([
      ["config.json", json({})],
      ["pytorch_model.bin", Buffer.from("x")],
    ]),
  });
});

afterAll(async () => {
  await hub.stop();
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

beforeEach(async () => {
  // Keep the machine's own token, cache and hub settings out of these tests.
  for (const name of [
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HF_ENDPOINT",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
  ]) {
    vi.stubEnv(name, "");
  }
  vi.stubEnv("HF_HOME", await newTempDir());
  cacheDir = await newTempDir();
  hub.requests.length = 0;
  hub.cutsLeft = 0;
  hub.corrupt = false;
});

afterEach(() => {
  vi.unstubAllEnvs();
});

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe("resolveModel with local paths", () => {
  it("returns an existing directory", async () => {
    const dir = await newTempDir();
    const endpoint = await closedPortEndpoint();
    expect(await resolveModel(dir, options({ endpoint }))).toBe(resolve(dir));
  });

  it("rejects a file path", async () => {
    const dir = await newTempDir();
    const file = join(dir, "config.json");
    await writeFile(file, "{}");
    await expect(resolveModel(file, options())).rejects.toThrow(/is a file/);
  });

  it("rejects paths that are not hub ids", async () => {
    for (const model of ["./missing-model", "/no/such/dir", "a/b/c", "justaname", "org/name@"]) {
      await expect(resolveModel(model, options())).rejects.toThrow(MidpoError);
    }
    expect(hub.countRequests()).toBe(0);
  });

  it("names a missing subdirectory", async () => {
    // "test" exists in the working directory of the tests, the repository root.
    await expect(resolveModel("test/no-such-model", options())).rejects.toThrow(
      /Model directory .*test\/no-such-model does not exist, although .*test does\. Check the path\. If you meant the hub id test\/no-such-model, write it as test\/no-such-model@main/,
    );
    // Deeper paths and paths that start with "./" are no hub ids, so no hub id is suggested.
    for (const model of ["test/fixtures/none", "./test/none"]) {
      const error = resolveModel(model, options());
      await expect(error).rejects.toThrow(
        /Model directory .*none does not exist.* Check the path\.$/,
      );
    }
    expect(hub.countRequests()).toBe(0);
  });
});

describe("parseHubId", () => {
  it("splits id and revision", () => {
    expect(parseHubId("org/name")).toEqual({ repoId: "org/name", revision: "main" });
    expect(parseHubId("org/name@v1.0")).toEqual({ repoId: "org/name", revision: "v1.0" });
    expect(parseHubId("org/name@refs/pr/1")).toEqual({ repoId: "org/name", revision: "refs/pr/1" });
  });
});

describe("resolveModel download", () => {
  it("lays out the cache like huggingface_hub", async () => {
    const { logger, lines } = captureLogger();
    const snapshot = await resolveModel("org/tiny", options({ logger }));

    const repoRoot = join(cacheDir, "models--org--tiny");
    expect(snapshot).toBe(join(repoRoot, "snapshots", COMMIT));
    expect(await readFile(join(repoRoot, "refs", "main"), "utf8")).toBe(COMMIT);

    const repo = hub.repos.get("org/tiny")!;
    const expectedFiles = [
      "config.json",
      "tokenizer.json",
      "tokenizer_config.json",
      "model.safetensors",
    ];
    for (const file of expectedFiles) {
      const content = repo.files.get(file)!;
      const pointer = join(snapshot, file);
      expect((await lstat(pointer)).isSymbolicLink()).toBe(true);
      expect(await readlink(pointer)).toBe(`../../blobs/${etagOf(file, content)}`);
      expect((await readFile(pointer)).equals(content)).toBe(true);
    }

    const blobs = await readdir(join(repoRoot, "blobs"));
    const expectedBlobs = expectedFiles.map((file) => etagOf(file, repo.files.get(file)!));
    expect(blobs.sort()).toEqual(expectedBlobs.sort());
    expect(await readdir(snapshot)).not.toContain("README.md");

    const missing = await readdir(join(repoRoot, ".no_exist", COMMIT));
    expect(missing.sort()).toEqual(["chat_template.jinja", "generation_config.json"]);

    expect(lines.some((line) => line.includes("downloaded model.safetensors"))).toBe(true);
  });

  it("sends no request on the second call", async () => {
    const first = await resolveModel("org/tiny", options());
    const requestsAfterFirst = hub.countRequests();
    expect(requestsAfterFirst).toBeGreaterThan(0);

    const second = await resolveModel("org/tiny", options());
    expect(second).toBe(first);
    expect(hub.countRequests()).toBe(requestsAfterFirst);
  });

  it("reuses cached blobs on refresh", async () => {
    await resolveModel("org/tiny", options());
    hub.requests.length = 0;

    await resolveModel("org/tiny", options({ refresh: true }));
    expect(hub.requests.map((request) => request.path)).toEqual([
      "/api/models/org/tiny/revision/main",
    ]);
  });

  it("downloads every shard of an index", async () => {
    const snapshot = await resolveModel("org/sharded", options());
    expect(snapshot).toBe(join(cacheDir, "models--org--sharded", "snapshots", SHARDED_COMMIT));

    const repo = hub.repos.get("org/sharded")!;
    for (const [file, content] of repo.files) {
      expect((await readFile(join(snapshot, file))).equals(content)).toBe(true);
    }
  });

  it("pins a commit revision", async () => {
    const snapshot = await resolveModel(`org/tiny@${COMMIT}`, options());
    expect(snapshot).toBe(join(cacheDir, "models--org--tiny", "snapshots", COMMIT));
    expect(existsSync(join(cacheDir, "models--org--tiny", "refs"))).toBe(false);

    const resolvePaths = hub.requests.filter((r) => r.path.includes("/resolve/"));
    expect(resolvePaths.length).toBeGreaterThan(0);
    for (const request of resolvePaths) {
      expect(request.path).toContain(`/resolve/${COMMIT}/`);
    }
  });

  it("keeps the token away from the CDN", async () => {
    await resolveModel("org/gated", options({ token: "hf_right" }));

    const hubRequests = hub.requests.filter((r) => r.server === "hub");
    const cdnRequests = hub.requests.filter((r) => r.server === "cdn");
    expect(cdnRequests.length).toBeGreaterThan(0);
    for (const request of hubRequests) {
      expect(request.authorization).toBe("Bearer hf_right");
    }
    for (const request of cdnRequests) {
      expect(request.authorization).toBeUndefined();
    }
  });

  it("rejects a repository without safetensors", async () => {
    const run = resolveModel("org/no-safetensors", options());
    await expect(run).rejects.toThrow(MidpoError);
    await expect(run).rejects.toThrow(/pytorch_model\.bin/);
  });
});

describe("resumable transfer", () => {
  const cutAfter = 1024 * 1024;

  it("resumes a cut-off transfer with Range", async () => {
    hub.cutAfterBytes = cutAfter;
    hub.cutsLeft = 1;
    const snapshot = await resolveModel("org/tiny", options());

    const weightRequests = hub.requests.filter((r) => r.server === "cdn" && r.method === "GET");
    expect(weightRequests).toHaveLength(2);
    expect(weightRequests[0].range).toBeUndefined();
    // Bytes still queued in the client's stream when the socket closes are lost, so the resume
    // offset may fall short of the bytes the server sent.
    const resumeOffset = Number(/^bytes=(\d+)-$/.exec(weightRequests[1].range ?? "")?.[1]);
    expect(resumeOffset).toBeGreaterThan(0);
    expect(resumeOffset).toBeLessThanOrEqual(cutAfter);
    expect((await readFile(join(snapshot, "model.safetensors"))).equals(WEIGHTS)).toBe(true);
  });

  it("resumes a partial file from an earlier run", async () => {
    hub.cutAfterBytes = cutAfter;
    hub.cutsLeft = 1;
    const firstRun = resolveModel("org/tiny", options({ retries: 0 }));
    await expect(firstRun).rejects.toThrow(/model\.safetensors .*failed after 1 attempts/);

    const incomplete = join(
      cacheDir,
      "models--org--tiny",
      "blobs",
      `${sha256(WEIGHTS)}.incomplete`,
    );
    const partialSize = (await lstat(incomplete)).size;
    expect(partialSize).toBeGreaterThan(0);
    expect(partialSize).toBeLessThanOrEqual(cutAfter);

    hub.requests.length = 0;
    const snapshot = await resolveModel("org/tiny", options({ retries: 0 }));
    const weightRequests = hub.requests.filter((r) => r.server === "cdn" && r.method === "GET");
    expect(weightRequests.map((r) => r.range)).toEqual([`bytes=${partialSize}-`]);
    expect((await readFile(join(snapshot, "model.safetensors"))).equals(WEIGHTS)).toBe(true);
    expect(existsSync(incomplete)).toBe(false);
  });

  it("restarts when the partial file is too long", async () => {
    const blobs = join(cacheDir, "models--org--tiny", "blobs");
    await mkdir(blobs, { recursive: true });
    await writeFile(join(blobs, `${sha256(WEIGHTS)}.incomplete`), randomBytes(WEIGHTS.length + 10));

    const snapshot = await resolveModel("org/tiny", options());
    expect((await readFile(join(snapshot, "model.safetensors"))).equals(WEIGHTS)).toBe(true);
  });

  it("rejects bytes that fail the checksum", async () => {
    hub.corrupt = true;
    const run = resolveModel("org/tiny", options());
    await expect(run).rejects.toThrow(MidpoError);
    await expect(run).rejects.toThrow(/model\.safetensors is corrupt/);

    const blobs = await readdir(join(cacheDir, "models--org--tiny", "blobs"));
    expect(blobs.filter((blob) => blob.startsWith(sha256(WEIGHTS)))).toEqual([]);
  });
});

describe("hub errors", () => {
  it("explains an unreachable hub", async () => {
    const endpoint = await closedPortEndpoint();
    const run = resolveModel("org/tiny", options({ endpoint }));
    await expect(run).rejects.toThrow(MidpoError);
    await expect(run).rejects.toThrow(`Cannot reach the Hugging Face Hub at ${endpoint}`);
    await expect(run).rejects.toThrow("org/tiny@main (ECONNREFUSED)");
    await expect(run).rejects.toThrow(/set HF_ENDPOINT/);
    await expect(run).rejects.toThrow(/pass a local model directory/);
  });

  it("falls back to the cache when unreachable", async () => {
    const downloaded = await resolveModel("org/tiny", options());
    const endpoint = await closedPortEndpoint();
    const { logger, lines } = captureLogger();

    const snapshot = await resolveModel("org/tiny", options({ endpoint, refresh: true, logger }));
    expect(snapshot).toBe(downloaded);
    expect(lines.some((line) => line.includes("using the cached snapshot"))).toBe(true);
  });

  it("explains a missing repository", async () => {
    const run = resolveModel("org/missing", options());
    await expect(run).rejects.toThrow(MidpoError);
    await expect(run).rejects.toThrow(`Model org/missing not found at ${hub.endpoint}`);
    await expect(run).rejects.toThrow(/Check the id/);
  });

  it("explains a missing revision", async () => {
    const run = resolveModel("org/tiny@v9", options());
    await expect(run).rejects.toThrow(/Revision "v9" not found in org\/tiny/);
  });

  it("explains 401 without a token", async () => {
    const run = resolveModel("org/gated", options());
    await expect(run).rejects.toThrow(MidpoError);
    await expect(run).rejects.toThrow(/401 Unauthorized for org\/gated@main/);
    await expect(run).rejects.toThrow(/Set HF_TOKEN/);
  });

  it("explains 403 with a token lacking access", async () => {
    const run = resolveModel("org/gated", options({ token: "hf_wrong" }));
    await expect(run).rejects.toThrow(MidpoError);
    await expect(run).rejects.toThrow(/403 Forbidden for org\/gated@main/);
    await expect(run).rejects.toThrow(/Accept its terms/);
  });
});

describe("offline mode", () => {
  it("uses only the cache with HF_HUB_OFFLINE", async () => {
    const downloaded = await resolveModel("org/tiny", options());
    const requestsBefore = hub.countRequests();

    vi.stubEnv("HF_HUB_OFFLINE", "1");
    const snapshot = await resolveModel("org/tiny", options({ offline: undefined }));
    expect(snapshot).toBe(downloaded);
    expect(hub.countRequests()).toBe(requestsBefore);
  });

  it("accepts a Python-made snapshot offline", async () => {
    // huggingface_hub may leave no .no_exist markers, so offline mode needs only config and weights.
    await resolveModel("org/tiny", options());
    await rm(join(cacheDir, "models--org--tiny", ".no_exist"), { recursive: true });

    const snapshot = await resolveModel("org/tiny", options({ offline: true }));
    expect(snapshot).toBe(join(cacheDir, "models--org--tiny", "snapshots", COMMIT));
  });

  it("rejects an uncached model with HF_HUB_OFFLINE", async () => {
    vi.stubEnv("HF_HUB_OFFLINE", "1");
    const run = resolveModel("org/tiny", options({ offline: undefined }));
    await expect(run).rejects.toThrow(MidpoError);
    await expect(run).rejects.toThrow(/Offline mode is on \(HF_HUB_OFFLINE\)/);
    await expect(run).rejects.toThrow("org/tiny@main");
    expect(hub.countRequests()).toBe(0);
  });
});

describe("hubSettings", () => {
  it("prefers HF_HUB_CACHE over HF_HOME", () => {
    const settings = hubSettings({}, { HF_HUB_CACHE: "/c/hub", HF_HOME: "/h" });
    expect(settings.cacheDir).toBe("/c/hub");
  });

  it("derives the cache from HF_HOME", () => {
    expect(hubSettings({}, { HF_HOME: "/h" }).cacheDir).toBe(join("/h", "hub"));
  });

  it("reads endpoint, token and offline switch", () => {
    const settings = hubSettings(
      {},
      {
        HF_HOME: "/h",
        HF_ENDPOINT: "http://mirror.local/",
        HF_TOKEN: "hf_x",
        HF_HUB_OFFLINE: "true",
      },
    );
    expect(settings.endpoint).toBe("http://mirror.local");
    expect(settings.token).toBe("hf_x");
    expect(settings.offline).toBe(true);
  });

  it("defaults to huggingface.co online", () => {
    const settings = hubSettings({}, { HF_HOME: "/nonexistent-midpo-home" });
    expect(settings.endpoint).toBe("https://huggingface.co");
    expect(settings.token).toBeUndefined();
    expect(settings.offline).toBe(false);
  });

  it("reads the token file under HF_HOME", async () => {
    const home = await newTempDir();
    await writeFile(join(home, "token"), "hf_from_file\n");
    expect(hubSettings({}, { HF_HOME: home }).token).toBe("hf_from_file");
  });

  it("lets options override the environment", () => {
    const settings = hubSettings(
      { endpoint: "http://127.0.0.1:1", cacheDir: "/x", offline: false },
      { HF_ENDPOINT: "http://other", HF_HUB_CACHE: "/y", HF_HUB_OFFLINE: "1" },
    );
    expect(settings.endpoint).toBe("http://127.0.0.1:1");
    expect(settings.cacheDir).toBe("/x");
    expect(settings.offline).toBe(false);
  });
});
