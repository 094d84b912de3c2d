// Open a VM console page in headless Chromium, wait until noVNC says it is
// connected and its canvas has pixels, and keep a screenshot.
// Usage: node console.mjs URL SCREENSHOT.png
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
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
  const size = await page.evaluate(() => {
    const c = document.querySelector("#screen canvas");
    return [c.width, c.height];
  });
  console.log(JSON.stringify({ connected: true, canvas: size, status: await page.textContent("#status"), errors }));
} finally {
  await browser.close();
}
