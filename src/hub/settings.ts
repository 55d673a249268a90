// Hub settings from options and the environment variables that huggingface_hub reads, so that
// midpo shares its cache, endpoint, token and offline switch with Python tools.

import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export const DEFAULT_ENDPOINT = "https://huggingface.co";

export interface HubSettings {
  /** Base URL without a trailing slash, e.g. https://huggingface.co. */
  endpoint: string;
  /** Bearer token, or undefined to send no Authorization header. */
  token: string | undefined;
  /** The `hub` cache folder that contains `models--org--name` folders. */
  cacheDir: string;
  /** Use only the cache and send no request. */
  offline: boolean;
}

export interface HubSettingOverrides {
  endpoint?: string;
  token?: string;
  cacheDir?: string;
  offline?: boolean;
}

type Environment = Record<string, string | undefined>;

/**
 * Resolves each setting from `overrides`, then the environment: `HF_ENDPOINT`, `HF_TOKEN` (or the
 * token file that `huggingface-cli login` writes), `HF_HUB_CACHE` / `HF_HOME`, `HF_HUB_OFFLINE`.
 */
export function hubSettings(
  overrides: HubSettingOverrides = {},
  env: Environment = process.env,
): HubSettings {
  return {
    endpoint: (overrides.endpoint ?? nonEmpty(env.HF_ENDPOINT) ?? DEFAULT_ENDPOINT).replace(
      /\/+$/,
      "",
    ),
    token: overrides.token ?? nonEmpty(env.HF_TOKEN) ?? readTokenFile(env),
    cacheDir: overrides.cacheDir ?? defaultCacheDir(env),
    offline: overrides.offline ?? isTruthy(env.HF_HUB_OFFLINE),
  };
}

function hfHome(env: Environment): string {
  const xdgCache = nonEmpty(env.XDG_CACHE_HOME) ?? join(homedir(), ".cache");
  return nonEmpty(env.HF_HOME) ?? join(xdgCache, "huggingface");
}

function defaultCacheDir(env: Environment): string {
  return nonEmpty(env.HF_HUB_CACHE) ?? join(hfHome(env), "hub");
}

function readTokenFile(env: Environment): string | undefined {
  const path = nonEmpty(env.HF_TOKEN_PATH) ?? join(hfHome(env), "token");
  if (!existsSync(path)) {
    return undefined;
  }
  return nonEmpty(readFileSync(path, "utf8").trim());
}

/** Parses a boolean environment variable the way huggingface_hub does. */
function isTruthy(value: string | undefined): boolean {
  return ["1", "ON", "YES", "TRUE"].includes((value ?? "").trim().toUpperCase());
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}
