/*
 * A WebSocket client for the pages (the customer chat, the agents' desk): one socket at a time,
 * JSON frames, reconnect with backoff. It knows no frame types: the page says what to send on
 * open and tells the client when it has drawn the server's state (`markReady`).
 */

export const RETRY_MIN_MS = 1000;
export const RETRY_MAX_MS = 30000;
// The server closes a socket without a session with 4401: reconnecting cannot help.
export const CLOSE_EXPIRED = 4401;
// The desk's socket for a user who may not use it: reconnecting cannot help either.
export const CLOSE_FORBIDDEN = 4403;

/** The ws(s):// URL for a path on this page's host (a full ws:// or wss:// URL is kept). */
export function wsUrl(path, base = window.location) {
  if (/^wss?:\/\//.test(path)) return path;
  return `${base.protocol === "https:" ? "wss:" : "ws:"}//${base.host}${path}`;
}

/**
 * Connection states, as `onStatus` reports them: "connected" (the page is ready), "reconnecting",
 * "offline" (the browser says the network is gone) and "expired" (closed for good: 4401, or
 * another of the `finalCloseCodes` the page names).
 * The page shows "connecting" itself until the first report.
 */
export class SocketClient {
  /**
   * @param {string} path - e.g. "/ws/chat/", or a full ws(s):// URL
   * @param {object} handlers
   * @param {() => void} [handlers.onOpen] - the socket is open: send the page's greeting
   * @param {(frame: object) => void} [handlers.onFrame] - a frame that parsed as a JSON object
   * @param {(close: {code: number, expired: boolean}) => void} [handlers.onClose] - the socket
   *   closed; unless `expired`, a new one is on its way
   * @param {(state: string) => void} [handlers.onStatus] - the connection state changed
   * @param {object} [options]
   * @param {Iterable<number>} [options.finalCloseCodes] - close codes after which the client
   *   does not reconnect (4401 by default)
   */
  constructor(
    path,
    { onOpen = () => {}, onFrame = () => {}, onClose = () => {}, onStatus = () => {} } = {},
    { finalCloseCodes = [CLOSE_EXPIRED] } = {},
  ) {
    this.url = wsUrl(path);
    this.handlers = { onOpen, onFrame, onClose, onStatus };
    this.finalCloseCodes = new Set(finalCloseCodes);
    this.socket = null;
    this.ready = false; // the page drew the state the server sent on this socket
    this.expired = false;
    this.retryDelay = RETRY_MIN_MS;
    this.retryTimer = null;
    // Don't wait out a long backoff once the browser says the network is back.
    window.addEventListener("online", () => {
      if (this.retryTimer === null) return;
      clearTimeout(this.retryTimer);
      this.retryDelay = RETRY_MIN_MS;
      this.connect();
    });
    window.addEventListener("offline", () => { if (!this.ready) this.handlers.onStatus("offline"); });
  }

  connect() {
    this.retryTimer = null;
    const ws = new WebSocket(this.url);
    this.socket = ws;
    // Every handler checks `ws === this.socket`, so a stale socket can never touch the page.
    ws.addEventListener("open", () => {
      if (ws === this.socket) this.handlers.onOpen();
    });
    ws.addEventListener("message", (event) => {
      if (ws === this.socket) this.receive(event.data);
    });
    ws.addEventListener("close", (event) => {
      if (ws === this.socket) this.closed(event.code);
    });
  }

  /** Sends `frame` as JSON; false (nothing sent) unless the socket is open. */
  send(frame) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** The page drew the server's state: the connection is up, and the backoff starts over. */
  markReady() {
    this.ready = true;
    // Reset here, not on open: a socket the server closes right after opening still backs off.
    this.retryDelay = RETRY_MIN_MS;
    this.handlers.onStatus("connected");
  }

  receive(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (!frame || typeof frame !== "object") return;
    this.handlers.onFrame(frame);
  }

  closed(code) {
    this.socket = null;
    this.ready = false;
    if (this.finalCloseCodes.has(code)) this.expired = true;
    if (this.expired) {
      this.handlers.onStatus("expired");
    } else {
      this.handlers.onStatus(navigator.onLine === false ? "offline" : "reconnecting");
      this.retryTimer = setTimeout(() => this.connect(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, RETRY_MAX_MS);
    }
    this.handlers.onClose({ code, expired: this.expired });
  }
}
