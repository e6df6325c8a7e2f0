/*
 * Small helpers the pages share (the customer chat, the agents' desk): counting characters the
 * way the server does, idempotency keys for messages, and times for people.
 */

/** Code points, like the server's len(); a UTF-16 length would count emoji twice. */
export const charCount = (text) => [...text].length;

/** A random `client_id` for `message.send` (1-64 characters of [A-Za-z0-9_-]). */
export function newClientId() {
  if (window.crypto?.randomUUID) return crypto.randomUUID(); // hex and "-" only
  const bytes = new Uint8Array(16);
  if (window.crypto?.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** "14:05" in the reader's locale; "" for a missing or unreadable time. */
export function formatTime(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** How long ago `iso` was, in short words: "just now", "45 s", "3 min", "2 h 5 min", "3 d". */
export function formatAge(iso, now = Date.now()) {
  const then = new Date(iso).getTime();
  if (!iso || Number.isNaN(then)) return "";
  const seconds = Math.max(0, Math.floor((now - then) / 1000));
  if (seconds < 10) return "just now";
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  return `${Math.floor(hours / 24)} d`;
}

/**
 * Tells the other side that this person is typing: `active: true` at most every `intervalMs`
 * while they type, `active: false` once they stop for `idleMs` (or `stop()`: sent, emptied,
 * left). `send(active)` sends the frame.
 */
export class TypingSignal {
  constructor(send, { intervalMs = 2000, idleMs = 3000 } = {}) {
    this.send = send;
    this.intervalMs = intervalMs;
    this.idleMs = idleMs;
    this.lastSentAt = 0;
    this.active = false;
    this.idleTimer = null;
  }

  /** The person typed something. */
  typed() {
    const now = Date.now();
    if (!this.active || now - this.lastSentAt >= this.intervalMs) {
      if (this.send(true) !== false) {
        this.active = true;
        this.lastSentAt = now;
      }
    }
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.stop(), this.idleMs);
  }

  /** The person stopped (sent, emptied the box, left): says so once. */
  stop() {
    clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (!this.active) return;
    this.active = false;
    this.lastSentAt = 0;
    this.send(false);
  }

  /** Forget the state without telling anyone (the socket closed: the server forgot it too). */
  reset() {
    clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.active = false;
    this.lastSentAt = 0;
  }
}

/**
 * Shows "X is typing…" until `active: false`, or `timeoutMs` without a refresh (a lost `false`
 * must not leave it up forever). `show(text | null)` draws it.
 */
export class TypingIndicator {
  constructor(show, { timeoutMs = 6000 } = {}) {
    this.show = show;
    this.timeoutMs = timeoutMs;
    this.timer = null;
  }

  update(active, text) {
    clearTimeout(this.timer);
    this.timer = null;
    if (!active) {
      this.show(null);
      return;
    }
    this.show(text);
    this.timer = setTimeout(() => this.update(false), this.timeoutMs);
  }

  hide() {
    this.update(false);
  }
}
