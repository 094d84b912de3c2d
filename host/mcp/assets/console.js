// The console page: noVNC's RFB client on the host's websocket proxy. The
// token in this page's URL is the only credential; it goes to the proxy as is.
import RFB from "/console/novnc/core/rfb.js";

const status = document.getElementById("status");
const button = document.getElementById("ctrl-alt-del");
const token = new URLSearchParams(location.search).get("token") || "";
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const url = `${scheme}//${location.host}${location.pathname.replace(/\/$/, "")}/ws?token=${encodeURIComponent(token)}`;

function show(text, state) {
  status.textContent = text;
  status.className = state || "";
  document.body.dataset.state = state || "";
}

const rfb = new RFB(document.getElementById("screen"), url, { wsProtocols: ["binary"] });
rfb.scaleViewport = true;
rfb.background = "#0f1419";
rfb.addEventListener("connect", () => {
  show("Connected", "connected");
  button.disabled = false;
});
rfb.addEventListener("disconnect", (e) => {
  show(e.detail.clean ? "Disconnected" : "The connection failed or was refused (the link may have expired: ask get_vm_console_url for a new one)", "failed");
  button.disabled = true;
});
button.addEventListener("click", () => rfb.sendCtrlAltDel());
