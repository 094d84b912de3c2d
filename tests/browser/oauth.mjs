// The OAuth consent page in a real browser:
//   node oauth.mjs AUTHORIZE_URL EMAIL PASSWORD ARTIFACTS_DIR
// A client sent the person to AUTHORIZE_URL: they are asked to sign in, land
// on the consent page (which passes the accessibility rules and has no
// script or CSP errors), approve, and are sent to the client's redirect URI
// with a code. Prints {landed, violations}.
import { accessibility, check, main, noErrors, open, shot } from "./lib.mjs";

const [authorize, email, password, artifacts] = process.argv.slice(2);

main(async (browser) => {
  const { page } = await open(browser);
  await page.goto(authorize);
  check(page.url().includes("/signin?next="), `an unsigned visitor is asked to sign in first: ${page.url()}`);
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("#approve");
  await shot(page, artifacts, "oauth-consent");
  const text = await page.textContent("main");
  check(text.includes("Browser test client") && text.includes(email), "the page says which client asks, as whom");
  check(text.includes("127.0.0.1"), "the page says where the answer goes");
  noErrors(page);
  // The approval leaves the site for the client's loopback redirect (which the page's CSP must allow).
  const landing = page.waitForURL(/\/callback\?/);
  await page.click("#approve");
  await landing;
  const landed = page.url();
  // The accessibility rules run injected, so in a second window that lets them in (the same sign-in).
  const { page: second } = await open(browser, { state: await page.context().storageState(), bypassCSP: true });
  await second.goto(authorize);
  await second.waitForSelector("#approve");
  const violations = await accessibility(second);
  return { landed, violations };
});
