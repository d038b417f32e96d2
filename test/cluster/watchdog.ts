/**
 * The cluster harness's clean-up for a run that dies before its afterAll (a crash, a timeout, a
 * SIGTERM or SIGKILL of jest): a small detached shell process that waits for this process to end
 * and then removes what the run left. Listeners on `process` cannot do it: under jest a test's
 * `process` is a copy whose events never fire, and nothing runs after a SIGKILL anyway.
 *
 * It finds the run's things by name: the processes listed in its pid file (managers, Redis), the
 * main engine's containers labelled with the run's task queue, the extra engines' directories
 * `/tmp/wmc-<run>-*` (dockerd stopped, mounts undone, deleted), bridges `wmc<run>*` and the `br-*`
 * bridges of the networks those engines made inside their claimed subnets, and the
 * run's still running workflows and its hosts' image-GC schedules (with the Temporal CLI of
 * scripts/stack.sh, when present). A run
 * that ends normally disarms it after its own clean-up.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const SCRIPT = String.raw`
set -u
while kill -0 "$OWNER" 2>/dev/null; do sleep 1; done
for p in $(cat "$PIDS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
ids=$(docker ps -aq --filter "label=com.codegen.task_queue=$QUEUE" 2>/dev/null)
[ -n "$ids" ] && docker rm -f -v $ids >/dev/null 2>&1
for d in /tmp/wmc-"$RUN"-*; do
  [ -d "$d" ] || continue
  if [ -f "$d/docker.pid" ]; then
    p=$(cat "$d/docker.pid"); kill -TERM "$p" 2>/dev/null
    for i in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 1; done
    kill -9 "$p" 2>/dev/null
  fi
  pkill -9 -f "$d/" 2>/dev/null
  awk -v d="$d/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$d"
done
for o in $(grep -lx "$OWNER" /tmp/wm-cluster-subnets/* 2>/dev/null | xargs -r -n1 basename); do
  ip -4 -o addr | awk -v p="10.$o." 'index($4, p) == 1 && $2 ~ /^br-/ { print $2 }' | xargs -r -n1 ip link del 2>/dev/null
done
for b in $(ls /sys/class/net | grep "^wmc$RUN"); do ip link del "$b" 2>/dev/null; done
for f in /tmp/wm-cluster-subnets/*; do [ "$(cat "$f" 2>/dev/null)" = "$OWNER" ] && rm -f "$f"; done
if [ -x "$TEMPORAL_CLI" ]; then
  "$TEMPORAL_CLI" workflow terminate --address "$TEMPORAL_ADDRESS" --query "TaskQueue=\"$QUEUE\" AND ExecutionStatus=\"Running\"" --reason "cluster test run died" --yes >/dev/null 2>&1
  for i in 0 1 2 3 4 5 6 7 8 9; do
    "$TEMPORAL_CLI" schedule delete --address "$TEMPORAL_ADDRESS" --schedule-id "image-gc-$QUEUE-h$i" >/dev/null 2>&1
  done
fi
rm -f "$PIDS"
`;

export class Watchdog {
  private readonly pids: string;
  private pid?: number;

  constructor(
    private readonly run: string,
    private readonly queue: string,
    private readonly root: string,
  ) {
    this.pids = `/tmp/wmc-${run}.pids`;
  }

  /** Starts the watchdog (once). */
  arm(): void {
    if (this.pid) return;
    writeFileSync(this.pids, '');
    const tools = path.join(this.root, '.tools');
    const cliDir = existsSync(tools) ? readdirSync(tools).find((d) => d.startsWith('temporal-')) : undefined;
    const p = spawn('bash', ['-c', SCRIPT], {
      detached: true,
      stdio: 'ignore',
      env: {
        PATH: process.env.PATH,
        OWNER: String(process.pid),
        PIDS: this.pids,
        RUN: this.run,
        QUEUE: this.queue,
        TEMPORAL_CLI: cliDir ? path.join(tools, cliDir, 'temporal') : '',
        TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
      },
    });
    p.unref();
    this.pid = p.pid;
  }

  /** A process the watchdog kills if the run dies. */
  watch(pid: number | undefined): void {
    if (pid) appendFileSync(this.pids, `${pid}\n`);
  }

  /** After a normal clean-up: the watchdog is not needed any more. */
  disarm(): void {
    if (this.pid) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      this.pid = undefined;
    }
    rmSync(this.pids, { force: true });
  }
}
