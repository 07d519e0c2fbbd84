// Live events over the server's websockets, resumed after a drop without gap or repeat.
//
// The token travels in a subprotocol: the page offers "termjobs" and
// "termjobs.bearer.<token, base64url>", and the server selects "termjobs". Browsers
// cannot set an Authorization header on a websocket, and a token in the URL would end
// up in logs and history.

import { ROOT } from "./api.js";

const PROTOCOL = "termjobs";
const BEARER_PREFIX = "termjobs.bearer.";
const CLOSE_NORMAL = 1000;
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_NOT_FOUND = 4404;
const CLOSE_BAD_REQUEST = 4400;

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** The subprotocols that open a stream with ``token`` (none needed with --auth none). */
export function protocols(token) {
  return token ? [PROTOCOL, BEARER_PREFIX + base64url(token)] : [PROTOCOL];
}

export class EventStream {
  /**
   * ``path``: "/v2/events/stream" or "/v2/runs/ID/events/stream"; ``params``: query
   * (job_id); ``resume``: reconnect from the last id seen (run streams), or from now
   * (the firehose; the view reloads what it shows when ``onState("live")`` comes again).
   * Callbacks: onEvent(event), onState("connecting" | "live" | "reconnecting"),
   * onEnd(reason) after a normal close, onUnauthorized().
   */
  constructor({ path, params = {}, token, sinceId = null, resume = true, onEvent, onState, onEnd, onUnauthorized }) {
    Object.assign(this, { path, params, token, resume, onEvent, onState, onEnd, onUnauthorized });
    this.lastId = sinceId;
    this.closed = false;
    this.delay = 500;
    this.socket = null;
    this.timer = null;
  }

  url() {
    const url = new URL(this.path.replace(/^\//, ""), ROOT);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams(this.params);
    if (this.lastId !== null && this.resume) query.set("since_id", String(this.lastId));
    url.search = query.toString();
    return url;
  }

  open() {
    if (this.closed) return;
    this.onState?.("connecting");
    const socket = new WebSocket(this.url(), protocols(this.token));
    this.socket = socket;
    socket.onopen = () => {
      this.delay = 500;
      this.onState?.("live");
    };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (this.lastId !== null && event.id <= this.lastId) return;
      this.lastId = event.id;
      this.onEvent?.(event);
    };
    socket.onclose = (close) => this.closedWith(close.code, close.reason);
  }

  closedWith(code, reason) {
    this.socket = null;
    if (this.closed) return;
    if (code === CLOSE_UNAUTHORIZED) {
      this.closed = true;
      this.onUnauthorized?.();
    } else if (code === CLOSE_NORMAL || code === CLOSE_NOT_FOUND || code === CLOSE_BAD_REQUEST) {
      this.closed = true;
      this.onEnd?.(reason || String(code));
    } else {
      // 1001 server restarting, 4408 fell behind, 1006 connection lost: come back.
      this.onState?.("reconnecting");
      this.timer = setTimeout(() => this.open(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    }
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.socket?.close(CLOSE_NORMAL);
    this.socket = null;
  }
}

/** A small "live" indicator that follows a stream's state. */
export function liveIndicator() {
  const el = document.createElement("span");
  el.className = "live";
  el.setAttribute("role", "status");
  const set = (state) => {
    el.classList.toggle("on", state === "live");
    el.textContent = state === "live" ? "● live" : state === "reconnecting" ? "○ reconnecting…" : "○ connecting…";
  };
  set("connecting");
  return { el, set };
}
