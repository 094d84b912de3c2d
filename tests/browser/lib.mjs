// What every browser test shares: Debian's Chromium through playwright-core,
// flags that keep it off the closed network, a page that records its script
// errors, screenshots kept as test artifacts, and assertions.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(import.meta.url);

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

// A browser context (a fresh profile, or a saved sign-in) and a page that
// collects script errors and CSP violations, which no page may have.
export async function open(browser, { state, javaScript = true, base, colorScheme = "light", bypassCSP = false } = {}) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    storageState: state,
    javaScriptEnabled: javaScript,
    colorScheme,
    bypassCSP,
  });
  if (base) await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  // A refused form answers 4xx by design: only a failing subresource is an error.
  page.on("console", (m) => {
    const text = m.text();
    if ((m.type() === "error" && !text.startsWith("Failed to load resource")) || /Content Security Policy/.test(text)) page.errors.push(text);
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && r.request().resourceType() !== "document") page.errors.push(`${r.status()} ${r.url()}`);
  });
  page.on("dialog", (d) => d.accept());
  return { context, page };
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

export function noErrors(page) {
  check(page.errors.length === 0, `the page had script errors: ${JSON.stringify(page.errors)}`);
}

// A full-page screenshot, kept under the artifacts directory.
export async function shot(page, dir, name) {
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `web-${name}.png`), fullPage: true });
}

// axe-core's WCAG 2.1 A and AA rules on the page as it is now: the
// violations, each with its impact and where. (The page's CSP forbids the
// injected script: open the page with bypassCSP.)
export async function accessibility(page) {
  await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }));
  return result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    where: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
  }));
}

// Run `steps`, print their JSON result on the last line of stdout, exit 1 on failure.
export async function main(steps) {
  const browser = await launch();
  try {
    const result = await steps(browser);
    console.log(JSON.stringify(result ?? {}));
  } catch (e) {
    console.error(e.stack || String(e));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
