// Open a VM console page (the link get_vm_console_url gives) in headless
// Chromium, wait until noVNC says it is connected and its canvas has pixels,
// and keep a screenshot.
// Usage: node console.mjs URL SCREENSHOT.png
import { check, main, open } from "./lib.mjs";

const [url, screenshot] = process.argv.slice(2);

await main(async (browser) => {
  const { page } = await open(browser);
  await page.goto(url);
  await page.waitForSelector("body[data-state=connected]", { timeout: 30000 });
  await page.waitForSelector("#screen canvas", { timeout: 10000 });
  // Wait for the first framebuffer update to paint something.
  await page.waitForFunction(() => {
    const c = document.querySelector("#screen canvas");
    return c && c.width > 0 && c.height > 0;
  }, null, { timeout: 20000 });
  await page.waitForTimeout(1500);
  await page.screenshot({ path: screenshot });
  const canvas = await page.evaluate(() => {
    const c = document.querySelector("#screen canvas");
    return [c.width, c.height];
  });
  check(canvas[0] > 0, "the canvas has a size");
  return { connected: true, canvas, status: await page.textContent("#status"), errors: page.errors };
});
