// A VM's screen: noVNC's RFB client on the host's websocket bridge. The
// websocket's address, with its signed token, is the screen element's
// data-ws (the web console's VM page), or this page's own address plus /ws
// (the standalone page that get_vm_console_url links to).
import RFB from "/console/novnc/core/rfb.js";

const screen = document.getElementById("screen");
const status = document.getElementById("status");
const button = document.getElementById("ctrl-alt-del");
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const url = screen.dataset.ws
  ? `${scheme}//${location.host}${screen.dataset.ws}`
  : `${scheme}//${location.host}${location.pathname.replace(/\/$/, "")}/ws?token=${encodeURIComponent(new URLSearchParams(location.search).get("token") || "")}`;

function show(text, state) {
  status.textContent = text;
  status.className = state || "";
  document.body.dataset.state = state || "";
}

const rfb = new RFB(screen, url, { wsProtocols: ["binary"] });
rfb.scaleViewport = true;
rfb.background = "#0b0e12";
rfb.addEventListener("connect", () => {
  show("Connected", "connected");
  button.disabled = false;
});
rfb.addEventListener("disconnect", (e) => {
  show(e.detail.clean
    ? "Disconnected"
    : "The connection failed or was refused (the link may have expired: reload the page, or ask get_vm_console_url for a new one)", "failed");
  button.disabled = true;
});
button.addEventListener("click", () => rfb.sendCtrlAltDel());
