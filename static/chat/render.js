/*
 * The chat page's DOM: messages, notices, the bot's answer bubble and its indicators, the
 * connection status. Customer, bot and agent text is only ever set as text (textContent / Text
 * nodes), never as HTML.
 */
import { externalLink, fillCitedText, safeUrl } from "../js/sources.js";
import { formatTime } from "../js/text.js";

const AUTHOR_LABELS = { customer: "You", bot: "Assistant", agent: "Support agent", system: "" };

const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  expired: "Session expired",
};

function make(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text != null) el.textContent = text;
  return el;
}

/** Shows a connection state (a key of STATUS_TEXT) in the header's status element. */
export function setStatus(statusEl, state) {
  statusEl.dataset.state = state;
  statusEl.querySelector(".status__text").textContent = STATUS_TEXT[state];
}

/** Shows the handoff banner with `text` for a conversation `status`, or hides it (null). */
export function setBanner(bannerEl, text, status) {
  bannerEl.hidden = !text;
  bannerEl.dataset.status = status || "";
  const textEl = bannerEl.querySelector(".handoff__text");
  // Only a change is written: aria-live announces every write.
  if (textEl.textContent !== (text || "")) textEl.textContent = text || "";
}

/** Shows "X is typing…" (`text`) below the messages, or hides it (null). */
export function setTyping(typingEl, text) {
  typingEl.hidden = !text;
  const textEl = typingEl.querySelector(".typing__text");
  if (textEl.textContent !== (text || "")) textEl.textContent = text || "";
}

/** The scrolling list of messages and notices. */
export class MessageList {
  constructor(el) {
    this.el = el;
  }

  isNearBottom() {
    return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 80;
  }

  scrollToBottom() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  /** Appends `el`, keeping the reader where they are if they scrolled up, following otherwise. */
  append(el) {
    const follow = this.isNearBottom();
    this.el.append(el);
    if (follow) this.scrollToBottom();
  }

  /** Moves an element drawn before (a message still being sent) to the end, as it is. */
  moveToEnd(el) {
    this.el.append(el);
  }

  clear() {
    this.el.replaceChildren();
  }

  /** The element of the saved message with this id, or null. */
  find(messageId) {
    return this.el.querySelector(`[data-message-id="${CSS.escape(String(messageId))}"]`);
  }

  addMessage(message, { generationId = null } = {}) {
    const known = Object.prototype.hasOwnProperty.call(AUTHOR_LABELS, message.author);
    const author = known ? message.author : "system";
    const el = make("div", `message message--${author}`);
    // An agent's message is signed with their name, e.g. "Kim · Support agent".
    const label = author === "agent" && message.author_name
      ? `${message.author_name} · ${AUTHOR_LABELS.agent}`
      : AUTHOR_LABELS[author];
    if (label) el.append(make("div", "message__author", label));
    const text = make("div", "message__text");
    fillCitedText(text, message.text, message.sources);
    el.append(text);
    setSources(el, message.sources);
    el.append(make("div", "message__meta"));
    const genId = generationId || message.generation_id;
    if (genId) el.dataset.generationId = genId;
    if (message.id != null) markSaved(el, message);
    this.append(el);
    return el;
  }

  addNotice(text, kind = "info") {
    this.append(make("div", `notice notice--${kind}`, text));
  }

  /** An empty bot bubble for an answer in progress. */
  addAnswer(generationId) {
    const el = this.addMessage({ author: "bot", text: "" }, { generationId });
    el.classList.add("message--streaming");
    el.setAttribute("aria-busy", "true"); // screen readers announce the answer once, when done
    return el;
  }

  /** Appends the next piece of an answer to its bubble (as a Text node, never HTML). */
  appendAnswerText(bubble, text) {
    if (bubble.dataset.state !== "streaming") {
      bubble.dataset.state = "streaming";
      setIndicator(bubble, null);
    }
    const follow = this.isNearBottom();
    bubble.querySelector(".message__text").append(String(text ?? ""));
    if (follow) this.scrollToBottom();
  }
}

/**
 * The "Sources" line under a bot answer: each help-center section it cites, as a link (its
 * heading; the article's title beside it), opening in a new tab. None: no line.
 */
function setSources(el, sources) {
  el.querySelector(".sources")?.remove();
  const list = (Array.isArray(sources) ? sources : []).filter((source) => source && typeof source === "object");
  if (list.length === 0) return;
  const box = make("div", "sources");
  box.append(make("span", "sources__label", "Sources"));
  const items = make("ol", "sources__list");
  for (const source of list) {
    const item = make("li", "source");
    if (Number.isInteger(source.n)) item.dataset.n = source.n;
    const heading = String(source.heading || source.title || "Help center");
    const title = String(source.title || "");
    const href = safeUrl(source.url);
    const name = href ? externalLink(href, "source__link", heading) : make("span", "source__link", heading);
    if (title) name.title = href ? `${title} (opens in a new tab)` : title;
    item.append(name);
    if (title && title !== heading) item.append(make("span", "source__title", title));
    items.append(item);
  }
  box.append(items);
  const meta = el.querySelector(".message__meta");
  if (meta) meta.before(box);
  else el.append(box);
}

/** Marks a message element as stored: its id and time. */
export function markSaved(el, message) {
  el.dataset.messageId = message.id;
  el.classList.remove("message--pending", "message--failed");
  const meta = el.querySelector(".message__meta");
  meta.textContent = formatTime(message.created_at);
  if (message.created_at) meta.title = new Date(message.created_at).toLocaleString();
}

/** Marks a customer's message as on its way (`connected`) or waiting for the connection. */
export function markPending(el, connected) {
  el.classList.add("message--pending");
  el.querySelector(".message__meta").textContent = connected ? "Sending…" : "Waiting for connection…";
}

/** Marks a customer's message that the server refused. */
export function markNotSent(el) {
  el.classList.remove("message--pending");
  el.classList.add("message--failed");
  el.querySelector(".message__meta").textContent = "Not sent";
}

// One indicator at a time: queue position ("queue-status") or the animated "thinking" dots.
function setIndicator(el, kind, label) {
  el.querySelector(".indicator")?.remove();
  if (!kind) return;
  const indicator = make("div", `indicator ${kind}`);
  if (kind === "thinking") {
    const dots = make("span", "thinking__dots");
    dots.setAttribute("aria-hidden", "true");
    dots.append(make("span"), make("span"), make("span"));
    indicator.append(dots);
  }
  indicator.append(make("span", "indicator__label", label));
  el.querySelector(".message__text").before(indicator);
}

/** Shows an answer as "queued" (with its place in line, if known) or "thinking". */
export function showAnswerState(bubble, state, position = null) {
  // Frames can overtake each other after a reconnect: never step back from a later state.
  if (bubble.dataset.state === "streaming") return;
  if (state === "queued" && bubble.dataset.state === "thinking") return;
  bubble.dataset.state = state;
  if (state === "queued") {
    const label = position == null ? "Waiting for the assistant…" : `You're number ${position} in line…`;
    setIndicator(bubble, "queue-status", label);
  } else {
    setIndicator(bubble, "thinking", "Thinking…");
  }
}

/** Empties an answer's bubble: its next run starts over. */
export function restartAnswer(bubble) {
  bubble.querySelector(".message__text").textContent = "";
  setIndicator(bubble, null);
  delete bubble.dataset.state;
}

/** Turns an answer's bubble into the stored message. */
export function completeAnswer(bubble, message) {
  setIndicator(bubble, null);
  fillCitedText(bubble.querySelector(".message__text"), message.text, message.sources);
  setSources(bubble, message.sources);
  bubble.classList.remove("message--streaming");
  bubble.removeAttribute("aria-busy");
  delete bubble.dataset.state;
  markSaved(bubble, message);
}
