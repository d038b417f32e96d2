/**
 * What an operator reads about a worker in the Temporal Web UI, checked in a real browser:
 * Debian's chromium (installed by scripts/stack.sh --test), headless, driven by playwright-core
 * (no browser download). A real worker on the real stack; the UI is the dev server's own
 * (http://localhost:8233, or TEMPORAL_UI_URL). Screenshots land in test-artifacts/ (git-ignored):
 * ui-workflow-list.png, ui-workflow-history.png, ui-workflow-metadata.png, and ui-last-page.png (the
 * page as the test left it, which after a failure shows where it stopped).
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import { renderInstructions } from '../../src/shared/instructions';
import { eventually, ROOT, startManager, waitForStatus, type RunningManager } from '../helpers/stack';

const UI_URL = process.env.TEMPORAL_UI_URL ?? 'http://localhost:8233';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'test-artifacts');
/** Playwright's auto-waiting limit for each step (the UI reads visibility, which lags a little). */
const STEP_MS = 60_000;

describe('the Temporal UI shows a worker as an operator needs it (real browser)', () => {
  let m: RunningManager;
  let browser: Browser;
  let page: Page;

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    m = await startManager();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // As root (CI, this machine) Chromium will not start its sandbox: the usual flag.
      args: process.getuid?.() === 0 ? ['--no-sandbox'] : [],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.setDefaultTimeout(STEP_MS);
    // Chromium fails its in-flight requests with ERR_NETWORK_CHANGED whenever a network interface
    // comes or goes, and Docker adds and removes one for every container the other tests start
    // (the UI then shows "Internal Error"). So playwright makes the page's requests from this
    // process and hands the responses to the page: the same server, the same bytes.
    await page.route(
      '**/*',
      (route) =>
        route
          .fetch()
          .then((response) => route.fulfill({ response }))
          .catch(() => route.abort().catch(() => undefined)), // server away, or the page moved on
    );
  });
  afterAll(async () => {
    // The page as the test left it: after a failure, where it stopped.
    await page?.screenshot({ path: path.join(ARTIFACTS, 'ui-last-page.png') }).catch(() => undefined);
    await browser?.close();
    await m?.stop();
  });

  /** The sandboxed frame in which the UI renders a User Metadata panel's markdown. */
  const metadataPanel = (title: string): Locator =>
    page
      .getByRole('heading', { name: title, level: 3, exact: true })
      .locator('xpath=ancestor::div[.//iframe][1]')
      .frameLocator('iframe')
      .locator('body');

  test('filter ExecutionStatus="Running" AND WorkerStatus="RUNNING", open the worker: summary, details, current state and activity summaries', async () => {
    const taskId = `ui-${Date.now().toString(36)}`;
    const instructions = '# Rules\nBe brief.\n';
    const allowed = ['git status'];
    const { worker_id: id } = await m.client.create({
      agent_type: 'CLAUDE',
      instructions,
      allowed_commands: allowed,
      modules: ['GIT'],
      task_id: taskId,
    });
    const st = await waitForStatus(m.client, id, ['RUNNING']);
    const workflowId = `worker-${id}`;
    const container = (st.container_id as string).slice(0, 12);
    const claudeMdSummary = `write CLAUDE.md (${Buffer.byteLength(renderInstructions(instructions, allowed))} B)`;
    const launchSummary = `launch CLAUDE container (warm pool or new), ${claudeMdSummary}, wait for the wrapper (≤ ${m.config.WORKER_READY_TIMEOUT_SECONDS} s)`;

    // The workflow list, filtered as the README tells operators to (and by this worker's id:
    // other tests run workers on the same server at the same time).
    const query = `ExecutionStatus="Running" AND WorkerStatus="RUNNING" AND WorkerId="${id}"`;
    await page.goto(`${UI_URL}/namespaces/default/workflows`);
    await page.getByTestId('toggle-manual-query').click(); // the raw-query toggle: an icon with no accessible name
    await page.getByRole('searchbox', { name: 'Enter a query' }).fill(query);
    await page.getByRole('button', { name: 'Search' }).click();
    await page.waitForURL((url) => url.searchParams.get('query') === query);
    const workflows = page.getByRole('table', { name: 'Workflows' });
    const link = workflows.getByRole('link', { name: workflowId, exact: true });
    await link.waitFor();
    // Only this worker is listed once the filtered list has replaced the unfiltered one.
    await eventually('the filtered list to show this worker alone', async () => {
      const ids = await workflows.getByRole('link', { name: /^worker-/ }).allInnerTexts();
      return ids.length === 1 && ids[0]!.trim() === workflowId;
    });
    const row = workflows.getByRole('row').filter({ has: page.getByRole('link', { name: workflowId, exact: true }) });
    expect(await row.innerText()).toEqual(expect.stringContaining('Running'));
    expect(await row.innerText()).toEqual(expect.stringContaining('workerLifecycle'));
    await page.screenshot({ path: path.join(ARTIFACTS, 'ui-workflow-list.png') });

    // Its page opens on the event history.
    await link.click();
    await page.getByRole('heading', { name: workflowId, level: 1 }).waitFor();
    await page.getByRole('tab', { name: /^History/, selected: true }).waitFor();
    // The timeline names each activity with its summary ...
    await page.getByRole('button', { name: `launchContainer • ${launchSummary}` }).waitFor();
    await page.getByRole('button', { name: 'ensureImage • image for CLAUDE + GIT' }).waitFor();
    // ... and so does the compact event list, one row per activity.
    await page.getByRole('button', { name: 'Compact', exact: true }).click();
    const events = page.getByRole('table').filter({ has: page.getByRole('columnheader', { name: 'Event Type' }) });
    const activityRow = (type: string): Locator =>
      events.getByRole('row').filter({ hasText: new RegExp(`Activity Type\\s*${type}\\s*Summary`) });
    await activityRow('launchContainer').waitFor();
    expect(await activityRow('launchContainer').innerText()).toContain(launchSummary);
    expect(await activityRow('ensureImage').innerText()).toContain('image for CLAUDE + GIT');
    expect(await activityRow('workerActivity').innerText()).toContain('check whether the worker is idle');
    // The permit request and status writes are local activities: their summaries are in the list too.
    const localRow = (summary: string | RegExp): Locator =>
      events.getByRole('row').filter({ hasText: 'Local Activity' }).filter({ hasText: summary });
    await localRow('status RUNNING (running)').waitFor();
    await localRow(/ask (pool \S+|the cluster) for a worker slot/).waitFor();
    await page.getByRole('heading', { name: 'Event History', level: 2 }).scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(ARTIFACTS, 'ui-workflow-history.png') });

    // User Metadata: the static summary and details, and the current details (the worker's state).
    await page.getByRole('tab', { name: 'User Metadata' }).click();
    const summary = metadataPanel('Summary');
    await summary.getByText(`CLAUDE worker for task ${taskId}`).waitFor();
    const details = metadataPanel('Details');
    await details.getByText('Resources').waitFor();
    const detailsText = await details.innerText();
    expect(detailsText).toMatch(/Agent\s+CLAUDE/);
    expect(detailsText).toMatch(/modules\s+GIT/);
    expect(detailsText).toContain(`Task ${taskId}`);
    expect(detailsText).toContain('git status');
    const current = metadataPanel('Current Details');
    await current.getByText('RUNNING', { exact: true }).waitFor();
    const currentText = await current.innerText();
    expect(currentText).toContain('(running)');
    expect(currentText).toContain(`container ${container}`);
    expect(currentText).toContain(`image ${st.image}`);
    expect(currentText).toContain(`ip ${st.ip_address}`);
    await page.getByText(claudeMdSummary).first().waitFor(); // "Events with Metadata" lists the summaries too
    await page.screenshot({ path: path.join(ARTIFACTS, 'ui-workflow-metadata.png') });

    // Search Attributes: what the list filters on.
    await page.getByRole('tab', { name: 'Search Attributes' }).click();
    const attributes = page.getByRole('heading', { name: 'Search Attributes', level: 3 }).locator('xpath=..');
    await attributes.getByText('"WorkerStatus": "RUNNING"').waitFor();
    const attributesText = await attributes.innerText();
    expect(attributesText).toContain(`"WorkerId": "${id}"`);
    expect(attributesText).toContain('"AgentType": "CLAUDE"');

    await m.client.delete(id);
  });
});
