/**
 * What a worker's agent CLI runs with, once the wrapper knows its worker: the model gateway's token
 * in place of an API key, droid's custom model, a host Claude session, and the environment the
 * agent inherits.
 */
import { cpSync, existsSync, lstatSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gatewayToken } from '../contract/gatewayToken';
import type { WrapperSettings } from './settings';

/** Who the wrapper works for: from its environment, or from a warm-pool claim. */
export interface Identity {
  workerId: string;
  allowedCommands: string[];
}

export interface AgentSetup {
  model?: string;
  /** Set on top of the wrapper's own (secret-free) environment for every agent process. */
  env: Record<string, string>;
  /** The model gateway, asked with the worker's token for each task's usage. */
  gateway?: { url: string; token: string };
}

export function prepareAgent(settings: WrapperSettings, identity: Identity, claimed: boolean): AgentSetup {
  const { agentType } = settings;
  // The model gateway's token stands in for the API key (src/contract/gatewayToken.ts).
  const gateway = settings.gateway && { url: settings.gateway.url, token: gatewayToken(settings.gateway.key, identity.workerId) };
  const defaultModel = prepareAgentHome(settings, gateway?.token);
  const model = settings.model ?? defaultModel;
  return {
    model,
    env: {
      ...(claimed ? { WORKER_ID: identity.workerId, WORKER_ALLOWED_COMMANDS: JSON.stringify(identity.allowedCommands) } : {}),
      ...(gateway && agentType === 'CLAUDE' ? { ANTHROPIC_API_KEY: gateway.token } : {}),
      ...(model !== undefined ? { WORKER_AGENT_MODEL: model } : {}),
    },
    gateway,
  };
}

/**
 * Sets up the agent's home: droid's custom model (the model gateway, with the worker's token), a
 * host Claude session. Returns the model to run when the settings name none.
 */
function prepareAgentHome({ agentType, factory, workspace }: WrapperSettings, token: string | undefined): string | undefined {
  const home = os.homedir();
  let model: string | undefined;
  if (agentType === 'FACTORY' && factory.baseUrl) {
    mkdirSync(path.join(home, '.factory'), { recursive: true });
    const custom = {
      model: factory.modelName ?? 'claude-sonnet-4-5',
      displayName: 'Configured',
      baseUrl: factory.baseUrl,
      apiKey: token ?? factory.apiKey ?? 'none',
      provider: 'anthropic',
      maxOutputTokens: 8192,
    };
    writeFileSync(path.join(home, '.factory', 'settings.json'), JSON.stringify({ customModels: [custom] }, null, 2));
    model = 'custom:Configured-0';
  }
  // host_session auth: the host's Claude directory is mounted read-only; Claude Code needs a writable copy.
  const hostClaude = '/opt/worker/host-claude';
  if (existsSync(hostClaude)) cpSync(hostClaude, path.join(home, '.claude'), { recursive: true });
  keepSessionsInWorkspace(agentType, home, workspace);
  return model;
}

/**
 * The agent's session files (Claude Code's ~/.claude/projects, droid's ~/.factory/sessions) live
 * in the workspace, under .agent-sessions, linked from where the agent looks for them: a worker's
 * workspace is its volume (src/host/volumes.ts), so a SUSPENDED worker's next container finds its
 * conversation there, at the same paths.
 */
export function keepSessionsInWorkspace(agentType: string, home: string, workspace: string): void {
  const [dir, name] =
    agentType === 'FACTORY'
      ? [path.join(home, '.factory', 'sessions'), 'factory-sessions']
      : [path.join(home, '.claude', 'projects'), 'claude-projects'];
  const store = path.join(workspace, '.agent-sessions', name);
  mkdirSync(store, { recursive: true });
  mkdirSync(path.dirname(dir), { recursive: true });
  const existing = lstatOrNone(dir);
  if (existing?.isSymbolicLink()) return; // linked by an earlier start of this wrapper
  if (existing) {
    cpSync(dir, store, { recursive: true }); // e.g. a host_session copy's sessions
    rmSync(dir, { recursive: true, force: true });
  }
  symlinkSync(store, dir);
}

function lstatOrNone(p: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}
