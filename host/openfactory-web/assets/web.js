// Progressive enhancement for the web console. Every page reads without it;
// with it, parts of a page that change (a build's status, a test run's
// checks, a VM's serial console) refresh in place, secrets copy with a click,
// and destructive buttons ask first.

const POLL_MS = 2000;

// An element with data-live="URL" is replaced by the HTML the server renders
// at URL (the same fragment the page was built from) every two seconds,
// until the fragment says data-final; one marked data-reload then reloads
// the page.
function live(element) {
  let failures = 0;
  const tick = async () => {
    if (!element.isConnected) return;
    if (document.hidden) return void setTimeout(tick, POLL_MS);
    try {
      const response = await fetch(element.dataset.live, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (response.status === 401 || response.status === 404) return; // signed out, or gone: stop quietly
      if (!response.ok) throw new Error(String(response.status));
      const holder = document.createElement("template");
      holder.innerHTML = (await response.text()).trim();
      const next = holder.content.firstElementChild;
      if (!next) return;
      const focused = element.contains(document.activeElement) && document.activeElement.id;
      // Keep a log scrolled to its end if it was there.
      const logs = [...element.querySelectorAll("pre.log")].map((p) => p.scrollTop + p.clientHeight >= p.scrollHeight - 4);
      element.replaceWith(next);
      next.querySelectorAll("pre.log").forEach((p, i) => { if (logs[i] !== false) p.scrollTop = p.scrollHeight; });
      if (focused) document.getElementById(focused)?.focus();
      enhance(next);
      failures = 0;
      if (next.dataset.final !== undefined) {
        // A finished build or run changes the rest of its page too (actions,
        // downloads): a live part marked data-reload reloads the page then.
        if (element.dataset.reload !== undefined) location.reload();
        return;
      }
      element = next;
    } catch {
      failures += 1;
    }
    setTimeout(tick, POLL_MS * Math.min(1 + failures, 5));
  };
  if (element.dataset.final === undefined) setTimeout(tick, POLL_MS);
}

// <button data-copy="#id"> copies the text of #id.
function copy(button) {
  button.hidden = false;
  button.addEventListener("click", async () => {
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = source.textContent.trim();
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const range = document.createRange();
      range.selectNodeContents(source);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      document.execCommand("copy");
    }
    const label = button.textContent;
    button.textContent = "Copied";
    button.setAttribute("aria-live", "polite");
    setTimeout(() => { button.textContent = label; }, 1600);
  });
}

// <form data-confirm="…"> asks before it submits.
function confirmation(form) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}

function enhance(root) {
  // Logs end where the news is.
  root.querySelectorAll("pre.log").forEach((p) => { p.scrollTop = p.scrollHeight; });
  root.querySelectorAll("[data-live]").forEach(live);
  root.querySelectorAll("button[data-copy]").forEach(copy);
  root.querySelectorAll("form[data-confirm]").forEach(confirmation);
}

document.documentElement.classList.add("js");
enhance(document);
