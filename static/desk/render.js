/*
 * The desk page's DOM: the list entries, the team, the transcript (messages, the bot's answers
 * with their reasoning and measures, private notes) and notices. Customer, agent and bot text,
 * names and reasons are only ever set as text (textContent / Text nodes), never as HTML.
 */
import { externalLink, fillCitedText, safeUrl } from "../js/sources.js";
import { formatAge, formatTime } from "../js/text.js";

export const STATUS_LABELS = {
  waiting_for_agent: "Waiting for a person",
  with_agent: "With an agent",
  bot: "With the bot",
  resolved: "Resolved",
};

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  expired: "Disconnected",
};

const PRESENCE_LABELS = { online: "Online", away: "Away", offline: "Offline" };

export function make(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text != null) el.textContent = text;
  return el;
}

/** Shows a connection state in the header's status element. */
export function setStatus(statusEl, state) {
  statusEl.dataset.state = state;
  statusEl.querySelector(".status__text").textContent = CONNECTION_TEXT[state] || state;
}

/** A time element whose text is refreshed by `refreshAges` ("3 min", with a prefix). */
function ageEl(className, iso, prefix = "") {
  const el = make("span", className, `${prefix}${formatAge(iso)}`);
  el.dataset.since = iso;
  el.dataset.prefix = prefix;
  el.title = new Date(iso).toLocaleString();
  return el;
}

/** Brings every age under `root` up to date (wait times tick while the page is open). */
export function refreshAges(root, now = Date.now()) {
  for (const el of root.querySelectorAll("[data-since]")) {
    const text = `${el.dataset.prefix || ""}${formatAge(el.dataset.since, now)}`;
    if (el.textContent !== text) el.textContent = text;
  }
}

// -- the lists -------------------------------------------------------------------------------------

/** One conversation in a list, as a button (keyboard reachable) that opens it. */
export function listEntry(conversation, list, { selected = false } = {}) {
  const item = make("li", "entries__item");
  const button = make("button", "entry");
  button.type = "button";
  button.dataset.conversationId = conversation.id;
  button.dataset.status = conversation.status;
  if (selected) button.setAttribute("aria-current", "true");

  const top = make("span", "entry__top");
  top.append(make("span", "entry__customer", conversation.customer || "Customer"));
  const since = {
    waiting: conversation.escalated_at,
    resolved: conversation.resolved_at,
  }[list] || conversation.last_message_at || conversation.created_at;
  if (since) top.append(ageEl("entry__age", since, list === "waiting" ? "waiting " : ""));
  button.append(top);

  button.append(make("span", "entry__last", conversation.last_message || "No messages yet"));

  const tags = make("span", "entry__tags");
  if (list === "waiting" && conversation.handoff_reason_label) {
    // The model's own handoff says why: its reason's code next to the label, its words on hover.
    const own = conversation.handoff_reason === "bot_handoff" && conversation.handoff_detail;
    const why = own ? conversation.handoff_detail.split(":")[0] : "";
    const label = why ? `${conversation.handoff_reason_label} · ${why.replace(/_/g, " ")}` : conversation.handoff_reason_label;
    const tag = make("span", `tag tag--${conversation.handoff_reason || "reason"}`, label);
    if (conversation.handoff_detail) tag.title = conversation.handoff_detail;
    tags.append(tag);
  }
  if (list === "resolved" && conversation.agent) {
    tags.append(make("span", "tag", `by ${conversation.agent.name}`));
  }
  if (tags.childElementCount) button.append(tags);
  item.append(button);
  return item;
}

/** Replaces a list's entries; an empty list says so. */
export function drawList(listEl, entries, emptyText) {
  if (entries.length === 0) {
    listEl.replaceChildren(make("li", "entries__empty", emptyText));
  } else {
    listEl.replaceChildren(...entries);
  }
}

/** The team: each agent's presence and load. */
export function drawTeam(listEl, agents, meId) {
  if (!agents.length) {
    listEl.replaceChildren(make("li", "entries__empty", "No agents yet."));
    return;
  }
  const order = { online: 0, away: 1, offline: 2 };
  const sorted = [...agents].sort(
    (a, b) => (order[a.presence] ?? 3) - (order[b.presence] ?? 3) || String(a.name).localeCompare(String(b.name)),
  );
  listEl.replaceChildren(
    ...sorted.map((agent) => {
      const item = make("li", "agent");
      item.dataset.presence = agent.presence;
      const dot = make("span", "agent__dot");
      dot.setAttribute("aria-hidden", "true");
      const name = make("span", "agent__name", agent.name);
      if (agent.id === meId) name.append(make("span", "agent__you", " (you)"));
      item.append(
        dot,
        name,
        make("span", "agent__presence", PRESENCE_LABELS[agent.presence] || agent.presence),
        make("span", "agent__load", `${agent.active ?? 0}/${agent.capacity ?? "–"}`),
      );
      item.lastChild.title = "Conversations now / capacity";
      return item;
    }),
  );
}

// -- the transcript --------------------------------------------------------------------------------

const AUTHOR_FALLBACK = { customer: "Customer", bot: "Assistant", agent: "Agent", system: "" };

function itemHead(author, metaParts) {
  const head = make("header", "item__head");
  head.append(make("span", "item__author", author));
  const meta = make("span", "item__meta", metaParts.filter(Boolean).join(" · "));
  head.append(meta);
  return head;
}

/** The measures shown with a bot answer: its model variant and time to first token. */
function botMeasures(message) {
  const parts = [];
  if (message.model_variant) parts.push(message.model_variant);
  if (Number.isFinite(message.time_to_first_token_ms)) {
    parts.push(`TTFT ${Math.round(message.time_to_first_token_ms)} ms`);
  }
  return parts;
}

/** The bot's reasoning, collapsed (staff only). */
function reasoningEl(text, { live = false } = {}) {
  const details = make("details", "reasoning");
  const summary = make("summary", "reasoning__summary", live ? "Reasoning (live)" : "Reasoning");
  details.append(summary, make("div", "reasoning__text", text || ""));
  return details;
}

/** A stored message as staff see it. `customerName` names the customer's messages. */
export function messageItem(message, { customerName = "Customer" } = {}) {
  const author = Object.prototype.hasOwnProperty.call(AUTHOR_FALLBACK, message.author) ? message.author : "system";
  const el = make("article", `item item--${author}`);
  if (message.id != null) el.dataset.messageId = message.id;
  if (message.generation_id != null) el.dataset.generationId = message.generation_id;
  fillMessage(el, message, customerName);
  return el;
}

/** (Re)draws a message element's content from a (staff) message. */
export function fillMessage(el, message, customerName = "Customer") {
  const author = el.classList.contains("item--system") ? "system" : message.author;
  el.classList.remove("item--streaming", "item--pending", "item--failed");
  el.removeAttribute("aria-busy");
  delete el.dataset.state;
  if (message.id != null) el.dataset.messageId = message.id;
  const time = formatTime(message.created_at);
  if (author === "system") {
    el.replaceChildren(make("div", "item__text", message.text || ""));
    if (time) el.append(make("span", "item__meta", time));
    return;
  }
  const name = {
    customer: customerName,
    agent: message.author_name || "Agent",
    bot: "Assistant",
  }[author];
  const meta = author === "bot" ? [...botMeasures(message), time] : [time];
  el.replaceChildren(itemHead(name, meta));
  if (author === "bot" && message.no_answer) el.append(make("span", "tag tag--no-answer", "no answer"));
  const text = make("div", "item__text");
  if (author === "bot") fillCitedText(text, message.text, message.sources);
  else text.textContent = message.text || "";
  el.append(text);
  if (author === "bot" && Array.isArray(message.passages) && message.passages.length) {
    el.append(passagesEl(message.passages, message.answer_check));
  }
  if (author === "bot" && message.reasoning) el.append(reasoningEl(message.reasoning));
}

// What the worker's answer check did (inference_worker/grounding.py), in staff's words.
const ANSWER_CHECKS = {
  supported: "answer checked against its passage",
  quoted: "the passage replaced the model's answer (its figures differed)",
  unsupported: "no passage said it: the bot said it could not find it",
};

/** "Passages (3) · cited [1] [3]": how many the answer was given and which it names. */
export function passagesSummary(passages, check = "") {
  const cited = passages.filter((p) => p?.cited).map((p) => `[${p.n}]`);
  const summary = `Passages (${passages.length}) · ${cited.length ? `cited ${cited.join(" ")}` : "none cited"}`;
  return ANSWER_CHECKS[check] ? `${summary} · ${ANSWER_CHECKS[check]}` : summary;
}

/**
 * Every knowledge-base passage a bot answer was given, collapsed (staff only): its number, the
 * section's heading and article, its relevance, whether the answer cites it, its text as it was
 * then, and a link to the help page.
 */
function passagesEl(passages, check) {
  const details = make("details", "passages");
  details.append(make("summary", "passages__summary", passagesSummary(passages, check)));
  const list = make("ol", "passages__list");
  for (const passage of passages) {
    if (!passage || typeof passage !== "object") continue;
    const item = make("li", `passage${passage.cited ? " passage--cited" : ""}`);
    if (Number.isInteger(passage.n)) item.dataset.n = passage.n;
    const head = make("div", "passage__head");
    head.append(make("span", "passage__n", `[${passage.n ?? "?"}]`));
    head.append(make("span", "passage__heading", passage.heading || passage.title || "Untitled"));
    if (passage.title && passage.title !== passage.heading) head.append(make("span", "passage__title", passage.title));
    if (Number.isFinite(passage.relevance)) {
      const relevance = make("span", "passage__relevance", `relevance ${passage.relevance.toFixed(2)}`);
      relevance.title = "How well the passage matched the question (0 to 1)";
      head.append(relevance);
    }
    if (passage.cited) head.append(make("span", "tag tag--cited", "cited"));
    item.append(head, make("div", "passage__text", passage.text || ""));
    const href = safeUrl(passage.url);
    if (href) {
      const link = externalLink(href, "passage__link", passage.url);
      if (passage.revision != null) link.title = `The article as it is now (the answer read revision ${passage.revision})`;
      item.append(link);
    }
    list.append(item);
  }
  details.append(list);
  return details;
}

/** A private note: staff only, drawn apart from the messages. */
export function noteItem(note) {
  const el = make("article", "item item--note");
  el.dataset.noteId = note.id;
  el.append(itemHead(`Private note · ${note.author_name || "Staff"}`, [formatTime(note.created_at)]));
  el.append(make("div", "item__text", note.text || ""));
  return el;
}

/** A bot answer in progress: its state, its live reasoning (collapsed) and its text. */
export function answerItem(generationId) {
  const el = make("article", "item item--bot item--streaming");
  el.dataset.generationId = generationId;
  el.setAttribute("aria-busy", "true");
  el.append(itemHead("Assistant", ["answering…"]));
  el.append(reasoningEl("", { live: true }));
  el.append(make("div", "item__text"));
  return el;
}

/** The answer's state in its head: queued (with its place), thinking, writing. */
export function setAnswerState(el, state, position = null) {
  if (el.dataset.state === "streaming" && state !== "streaming") return;
  el.dataset.state = state;
  const text = {
    queued: position == null ? "queued" : `queued, number ${position}`,
    thinking: "thinking…",
    streaming: "writing…",
  }[state];
  el.querySelector(".item__meta").textContent = text || "";
}

export function appendReasoning(el, text) {
  el.querySelector(".reasoning__text")?.append(String(text ?? ""));
}

export function appendAnswer(el, text) {
  setAnswerState(el, "streaming");
  el.querySelector(".item__text").append(String(text ?? ""));
}

/** A lost run's text is dropped: the next run starts over. */
export function restartAnswer(el) {
  el.querySelector(".item__text").textContent = "";
  const reasoning = el.querySelector(".reasoning__text");
  if (reasoning) reasoning.textContent = "";
  delete el.dataset.state;
}

/** An agent's reply drawn before the server stored it. */
export function pendingItem(text, authorName) {
  const el = make("article", "item item--agent item--pending");
  el.append(itemHead(authorName, ["Sending…"]), make("div", "item__text", text));
  return el;
}

export function markNotSent(el, why = "Not sent") {
  el.classList.remove("item--pending");
  el.classList.add("item--failed");
  el.querySelector(".item__meta").textContent = why;
}

/** A line of the transcript from this page (not stored): an answer stopped, failed. */
export function transcriptNotice(text, kind = "info") {
  return make("div", `tnotice tnotice--${kind}`, text);
}

/** A notice at the top of the page (an error from the server, a refusal); dismissable. */
export function pageNotice(text, kind = "error") {
  const el = make("div", `notice notice--${kind}`);
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.append(make("span", "notice__text", text));
  const close = make("button", "notice__close", "×");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => el.remove());
  el.append(close);
  return el;
}
