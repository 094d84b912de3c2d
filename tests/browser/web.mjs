// The web console in a real browser, one scenario per run:
//   node web.mjs SCENARIO BASE_URL ARTIFACTS_DIR STATE_FILE [ARGS…]
// STATE_FILE holds the signed-in browser between scenarios (cookies only).
// Each scenario prints a JSON object on its last line of output.
import { existsSync } from "node:fs";
import { accessibility, check, main, noErrors, open, shot } from "./lib.mjs";

const [scenario, base, artifacts, stateFile, ...args] = process.argv.slice(2);
const KEY = /of_mcp_[0-9a-f]{40}/;

const scenarios = {
  // Sign up; create a key and see it once, with a copy button and the client
  // configurations; reload and see it no more.
  async signup(browser) {
    const [email] = args;
    const { context, page } = await open(browser, { base });
    await page.goto(`${base}/signup`);
    await shot(page, artifacts, "signup");
    await page.fill("#email", email);
    await page.fill("#password", "short");
    await page.click("button[type=submit]");
    check(await page.locator("#password-error").isVisible(), "a short password is refused beside its field");
    check((await page.inputValue("#email")) === email, "the email is kept after a refused sign-up");
    await page.fill("#password", "a long passphrase of words");
    await page.click("button[type=submit]");
    await page.waitForURL(/\/settings/);
    check((await page.textContent(".account")).includes(email), "the top bar shows who is signed in");
    check((await page.textContent("main")).includes("Welcome"), "a new account is welcomed");

    await page.fill("#key-name", "Claude Desktop");
    await page.click("form[action='/settings/keys'] button[type=submit]");
    await page.waitForSelector("#new-key");
    const key = (await page.textContent("#new-key-value")).trim();
    check(KEY.test(key), `the new key is shown: ${key}`);
    for (const id of ["claude-desktop", "cursor", "claude-code"]) {
      const text = await page.textContent(`#${id}`);
      check(text.includes(`Bearer ${key}`) && text.includes(`${base}/api/mcp/sse`), `the ${id} snippet has the key and the SSE URL`);
    }
    const copy = page.locator("button[data-copy='#new-key-value']");
    check(await copy.isVisible(), "the copy button is shown");
    await copy.click();
    check((await page.evaluate(() => navigator.clipboard.readText())) === key, "the copy button copies the key");
    await shot(page, artifacts, "settings-new-key");
    noErrors(page);

    await page.reload();
    const html = await page.content();
    check(!html.includes(key), "after a reload the key is nowhere on the page");
    check(html.includes(key.slice(0, 13)), "the key is listed by its prefix");
    await context.storageState({ path: stateFile });
    return { key };
  },

  // Browse and search the catalog, read a template, without signing in;
  // then the same pages with scripts off.
  async catalog(browser) {
    const { page } = await open(browser);
    await page.goto(`${base}/catalog`);
    const tiles = await page.locator("article.tile").count();
    check(tiles >= 10, `the catalog shows its templates (${tiles})`);
    await shot(page, artifacts, "catalog");
    await page.click("nav.side a:has-text('Healthcare')");
    await page.waitForURL(/category=healthcare/);
    const names = await page.locator("article.tile h3").allTextContents();
    check(names.includes("gxp-medtech"), `the healthcare category has gxp-medtech: ${names}`);
    await page.fill("#q", "docker monitoring");
    await page.press("#q", "Enter");
    await page.waitForURL(/q=docker/);
    await page.click("nav.side a:has-text('All templates')");
    const found = await page.locator("article.tile h3").allTextContents();
    check(found.includes("debian-docker-monitoring"), `search finds debian-docker-monitoring: ${found}`);
    check(!found.includes("debian-minimal-server"), "search leaves out what does not match");
    await shot(page, artifacts, "catalog-search");
    await page.fill("#q", "no-such-thing-anywhere");
    await page.press("#q", "Enter");
    await page.waitForSelector(".empty");

    await page.goto(`${base}/catalog/debian-docker-monitoring`);
    const text = await page.textContent("main");
    for (const want of ["docker", "monitoring", "node_exporter_port", "prometheus-node-exporter", "Plan preview", "Boot checks", "create_build"]) {
      check(text.includes(want), `the template page shows ${want}`);
    }
    const steps = await page.locator("#plan ~ ol.steps li, section:has(#plan) ol.steps li").count();
    check(steps > 10, `the plan preview lists the steps (${steps})`);
    check(await page.locator("a:has-text('Sign in to build')").isVisible(), "a visitor is asked to sign in to build");
    await shot(page, artifacts, "template");
    noErrors(page);

    const bare = await open(browser, { javaScript: false });
    await bare.page.goto(`${base}/catalog?q=gxp`);
    const bareNames = await bare.page.locator("article.tile h3").allTextContents();
    check(bareNames.includes("gxp-medtech"), "the catalog reads without JavaScript");
    await bare.page.goto(`${base}/catalog/gxp-medtech`);
    check((await bare.page.textContent("main")).includes("Plan preview"), "a template reads without JavaScript");
    return { tiles };
  },

  // Build a template with one click and watch its status change in place.
  async build(browser) {
    const [template] = args;
    const { page } = await open(browser, { state: stateFile });
    await page.goto(`${base}/catalog/${template}`);
    await page.click("button:has-text('Build this image')");
    await page.waitForURL(/\/builds\/[0-9a-f]{12}$/);
    const buildId = page.url().split("/").pop();
    check((await page.textContent(".flash")).includes("queued"), "the build page says the build is queued");
    // A mark on this document: it survives only if the page never reloads.
    await page.evaluate(() => { window.sameDocument = true; });
    const seen = [];
    const deadline = Date.now() + 240_000;
    while (Date.now() < deadline) {
      const status = (await page.textContent("#status-panel [role=status]")).trim();
      const progress = Number(await page.getAttribute("#status-panel progress", "value"));
      const stage = (await page.locator("#status-panel .stages li.now").allTextContents())[0] || "";
      const last = seen[seen.length - 1];
      if (!last || last.status !== status || last.stage !== stage) seen.push({ status, stage, progress });
      if (seen.some((s) => s.status === "running" && s.stage) && seen.length >= 2) break;
      if (status === "failed") throw new Error(`the build failed: ${await page.textContent("#status-panel")}`);
      await page.waitForTimeout(500);
    }
    check(seen.length >= 2, `the status changed in the page: ${JSON.stringify(seen)}`);
    check(await page.evaluate(() => window.sameDocument === true), "the page did not reload to show it");
    await page.waitForTimeout(2500);
    check((await page.locator("#status-panel pre.log").count()) === 1, "the log tail is shown");
    await shot(page, artifacts, "build-running");
    await page.goto(`${base}/builds`);
    check((await page.textContent("main")).includes(buildId), "the build is listed");
    await shot(page, artifacts, "builds");
    noErrors(page);
    return { build_id: buildId, seen };
  },

  // A completed build: downloads with checksum, its files; a VM from it, its
  // screen in the page, connected; stop and delete it.
  async vm(browser) {
    const [buildId, name] = args;
    const { page } = await open(browser, { state: stateFile });
    await page.goto(`${base}/builds/${buildId}`);
    const sha = (await page.textContent("#sha256")).trim();
    check(/^[0-9a-f]{64}$/.test(sha), `the ISO's sha256 is shown: ${sha}`);
    const href = await page.getAttribute("a[href$='/files/iso']", "href");
    check(href === `/builds/${buildId}/files/iso`, "the ISO downloads from the build's own URL, with no token in it");
    await shot(page, artifacts, "build-completed");
    await page.fill("#vm-name", name);
    await page.fill("#vm-memory", "1024");
    await page.click("form[action$='/vms'] button[type=submit]");
    // The first VM of a host may wait for the accelerator probe.
    await page.waitForURL(new RegExp(`/vms/${name}$`), { timeout: 120_000 });
    await page.waitForSelector("body[data-state=connected]", { timeout: 30_000 });
    await page.waitForFunction(() => {
      const c = document.querySelector("#screen canvas");
      return c && c.width >= 640 && c.height >= 400;
    }, null, { timeout: 30_000 });
    const canvas = await page.evaluate(() => {
      const c = document.querySelector("#screen canvas");
      return [c.width, c.height];
    });
    check((await page.textContent("#status")).includes("Connected"), "the console says it is connected");
    await page.waitForTimeout(8000);
    await shot(page, artifacts, "vm-console");
    noErrors(page);
    await page.goto(`${base}/vms`);
    check((await page.textContent("main")).includes(name), "the VM is listed");
    await shot(page, artifacts, "vms");
    return { canvas };
  },

  async "vm-delete"(browser) {
    const [name] = args;
    const { page } = await open(browser, { state: stateFile });
    await page.goto(`${base}/vms/${name}`);
    await page.waitForSelector("body[data-state=connected]", { timeout: 30_000 });
    await page.click("form[action$='/stop'][data-confirm] button");
    await page.waitForURL(new RegExp(`/vms/${name}$`));
    check((await page.textContent(".flash")).includes("Stopped"), `a forced stop is confirmed: ${await page.textContent(".flash")}`);
    check((await page.textContent("main")).includes("The VM is stopped"), "a stopped VM shows no screen");
    await page.click("form[action$='/delete'] button");
    await page.waitForURL(/\/vms$/);
    check(!(await page.textContent("main")).includes(`/vms/${name}`), "the VM is gone from the list");
    noErrors(page);
    return {};
  },

  // Test a completed build: results per check with evidence, live.
  async tests(browser) {
    const [buildId] = args;
    const { page } = await open(browser, { state: stateFile });
    await page.goto(`${base}/builds/${buildId}`);
    await page.click("form[action$='/test-runs'] button");
    await page.waitForURL(/\/test-runs\/[0-9a-f]{12}$/);
    const runId = page.url().split("/").pop();
    check(await page.locator("#results[data-live]:not([data-final])").count() === 1, "a new run's results are live");
    await page.waitForSelector("#results[data-final]", { timeout: 600_000 });
    // The end of the run reloads the page once, for its actions.
    await page.waitForFunction(() => !document.querySelector("form[action$='/stop']"), null, { timeout: 30_000 });
    await page.waitForLoadState();
    const status = (await page.textContent("#summary-title + [role=status], .card-head [role=status]")).trim();
    const checks = await page.locator("article.check").count();
    const passed = await page.locator("article.check .badge.s-passed").count();
    check(checks > 3, `the checks are shown (${checks})`);
    check((await page.locator("#results pre.log").count()) >= 1, "the serial console is kept");
    await shot(page, artifacts, "test-run");
    await page.goto(`${base}/test-runs`);
    check((await page.textContent("main")).includes(runId), "the run is listed");
    await shot(page, artifacts, "test-runs");
    noErrors(page);
    return { run_id: runId, status, checks, passed };
  },

  // Revoke the key in Settings.
  async revoke(browser) {
    const { page } = await open(browser, { state: stateFile });
    await page.goto(`${base}/settings`);
    await page.click("form[action$='/revoke'] button");
    await page.waitForURL(/\/settings$/);
    check((await page.textContent(".flash")).includes("revoked"), "the page says the key was revoked");
    check((await page.locator("td .badge.s-cancelled").count()) === 1, "the key is listed as revoked");
    await shot(page, artifacts, "settings-revoked");
    noErrors(page);
    return {};
  },

  // WCAG 2.1 AA (axe-core) on every kind of page, signed in and not, in
  // the light and the dark scheme: no violation at all.
  async accessibility(browser) {
    const [buildId, runId] = args;
    const found = {};
    for (const colorScheme of ["light", "dark"]) {
      const visitor = await open(browser, { colorScheme, bypassCSP: true });
      for (const path of ["/", "/catalog", "/catalog?q=docker", "/catalog/gxp-medtech", "/signin", "/signup", "/plugins"]) {
        await visitor.page.goto(`${base}${path}`);
        const v = await accessibility(visitor.page);
        if (v.length) found[`${colorScheme} ${path}`] = v;
      }
      const user = await open(browser, { colorScheme, bypassCSP: true, state: stateFile });
      for (const path of ["/", "/builds", `/builds/${buildId}`, "/vms", "/test-runs", `/test-runs/${runId}`, "/settings"]) {
        await user.page.goto(`${base}${path}`);
        await user.page.locator("details").evaluateAll((all) => all.forEach((d) => { d.open = true; }));
        const v = await accessibility(user.page);
        if (v.length) found[`${colorScheme} ${path} (signed in)`] = v;
      }
      await visitor.context.close();
      await user.context.close();
    }
    check(Object.keys(found).length === 0, `accessibility violations: ${JSON.stringify(found, null, 1)}`);
    return { pages: 28 };
  },

  // Every other page, for the record: each must render without errors.
  async pages(browser) {
    const { page } = await open(browser, { state: stateFile });
    for (const [path, name] of [["/", "overview"], ["/plugins", "plugins"]]) {
      await page.goto(`${base}${path}`);
      await shot(page, artifacts, name);
    }
    noErrors(page);
    const visitor = await open(browser);
    for (const [path, name] of [["/", "home"], ["/signin", "signin"]]) {
      await visitor.page.goto(`${base}${path}`);
      await shot(visitor.page, artifacts, name);
    }
    noErrors(visitor.page);
    return {};
  },
};

await main(async (browser) => {
  const run = scenarios[scenario];
  check(run, `no scenario ${scenario}; there are ${Object.keys(scenarios).join(", ")}`);
  if (scenario !== "signup" && scenario !== "catalog") check(existsSync(stateFile), "sign up first (no saved sign-in)");
  return run(browser);
});
