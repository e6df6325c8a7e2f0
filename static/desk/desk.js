/*
 * The agents' desk (`/desk/`): the queue and the other lists, one conversation at a time with
 * its whole transcript, the bot's reasoning, private notes, suggested replies, taking over,
 * handing back and resolving. Speaks the desk socket of docs/protocol.md through the shared
 * socket client; the server is the source of truth: `desk.snapshot` redraws the lists and
 * `conversation.detail` the open conversation. The DOM work is in render.js.
 */
import { IGNORE, RESTART, GenerationTracker, generationIdOf } from "../js/generations.js";
import { CLOSE_EXPIRED, CLOSE_FORBIDDEN, SocketClient } from "../js/socket.js";
import { TypingIndicator, TypingSignal, charCount, formatAge, newClientId } from "../js/text.js";
import * as render from "./render.js";

const MAX_FRAME_BYTES = 16 * 1024; // the server closes the socket (1009) above this
const PING_INTERVAL_MS = 20_000; // keeps this agent present (docs/protocol.md)
const AGE_REFRESH_MS = 5_000;
const NOTICE_MS = 10_000;
const KEY_SOUND = "desk.sound";
const LISTS = ["waiting", "mine", "bot", "resolved"];
const EMPTY_TEXT = {
  waiting: "No one is waiting for a person.",
  mine: "You have no conversations.",
  bot: "The bot has no live conversations.",
  resolved: "Nothing resolved recently.",
};
const FORBIDDEN_TEXT =
  "This account may not use the agents' desk. Ask an administrator for the permission to handle conversations.";
// Frames about the bot's answer in the open conversation (the customer's view of it).
const GENERATION_FRAMES = new Set([
  "generation.queued", "generation.started", "answer.thinking", "answer.delta", "answer.done",
  "generation.failed", "generation.cancelled", "reasoning.delta",
]);

const store = {
  get(key) {
    try { return localStorage.getItem(key); } catch { return null; }
  },
  set(key, value) {
    try { localStorage.setItem(key, value); } catch { /* ignore */ }
  },
};

/** A short beep (WebAudio, no file) when someone starts waiting. */
class Beeper {
  constructor() {
    this.context = null;
  }

  /** Call from a user gesture (ticking the box): browsers start audio only after one. */
  unlock() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    this.context ??= new Context();
    if (this.context.state === "suspended") this.context.resume().catch(() => {});
  }

  beep() {
    if (!this.context) this.unlock();
    const audio = this.context;
    if (!audio) return;
    const start = audio.currentTime + 0.01;
    for (const [offset, frequency] of [[0, 880], [0.18, 1175]]) {
      const oscillator = audio.createOscillator();
      const gain = audio.createGain();
      oscillator.type = "sine";
      oscillator.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, start + offset);
      gain.gain.exponentialRampToValueAtTime(0.15, start + offset + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.15);
      oscillator.connect(gain).connect(audio.destination);
      oscillator.start(start + offset);
      oscillator.stop(start + offset + 0.16);
    }
  }
}

class DeskPage {
  constructor(root) {
    const $ = (id) => document.getElementById(id);
    this.root = root;
    this.els = {
      status: $("connection-status"),
      notices: $("desk-notices"),
      presence: $("presence-select"),
      sound: $("sound-toggle"),
      team: $("team-list"),
      lists: Object.fromEntries(LISTS.map((name) => [name, $(`list-${name}`)])),
      counts: Object.fromEntries(LISTS.map((name) => [name, $(`count-${name}`)])),
      empty: $("conversation-empty"),
      view: $("conversation-view"),
      title: $("conversation-title"),
      statusLine: $("conversation-status"),
      meta: $("conversation-meta"),
      claim: $("claim-button"),
      suggest: $("suggest-button"),
      handBack: $("handback-button"),
      resolve: $("resolve-button"),
      resolveConfirm: $("resolve-confirm"),
      resolveYes: $("resolve-yes"),
      resolveNo: $("resolve-no"),
      transcript: $("transcript"),
      customerTyping: $("customer-typing"),
      suggestion: $("suggestion"),
      suggestionStatus: $("suggestion-status"),
      suggestionText: $("suggestion-text"),
      suggestionSend: $("suggestion-send"),
      suggestionDiscard: $("suggestion-discard"),
      form: $("reply-form"),
      modeReply: $("mode-reply"),
      modeNote: $("mode-note"),
      input: $("reply-input"),
      send: $("reply-send"),
      hint: $("reply-hint"),
      counter: $("reply-counter"),
    };
    this.storeName = root.dataset.storeName || "";
    this.maxChars = parseInt(root.dataset.maxChars, 10) || 2000;
    this.loginUrl = root.dataset.loginUrl || "/desk/login/";
    this.me = null; // Agent
    this.agents = [];
    this.conversations = new Map(); // id -> DeskConversation, every one the desk knows of
    this.openId = null; // the conversation shown
    this.loaded = false; // its `conversation.detail` is drawn
    this.mode = "reply"; // the composer writes a reply to the customer, or a private note
    this.answers = new Map(); // generation id -> the bot's answer in progress (element)
    this.generations = new GenerationTracker();
    this.outbox = []; // replies not yet stored: {clientId, text, el, sent}
    this.pendingNotes = [];
    this.suggestionState = null; // {id, state: "requested" | "streaming" | "done"}
    this.discardedSuggestions = new Set();
    this.resolveAsked = false;
    this.beeper = new Beeper();
    this.typingSignal = new TypingSignal((active) => this.openId !== null && this.client.send({
      type: "typing", conversation_id: this.openId, active,
    }));
    this.customerTyping = new TypingIndicator((text) => {
      this.els.customerTyping.hidden = !text;
      this.els.customerTyping.querySelector(".typing__text").textContent = text || "";
    });
    this.client = new SocketClient(
      root.dataset.wsPath || "/ws/desk/",
      {
        onOpen: () => this.client.send({ type: "hello" }),
        onFrame: (frame) => this.onFrame(frame),
        onClose: (close) => this.onClose(close),
        onStatus: (state) => render.setStatus(this.els.status, state),
      },
      { finalCloseCodes: [CLOSE_EXPIRED, CLOSE_FORBIDDEN] },
    );
  }

  start() {
    this.els.sound.checked = store.get(KEY_SOUND) === "1";
    this.bindControls();
    this.updateControls();
    this.updateTitle();
    this.client.connect();
    setInterval(() => { if (this.client.ready) this.client.send({ type: "ping" }); }, PING_INTERVAL_MS);
    setInterval(() => this.refreshAges(), AGE_REFRESH_MS);
  }

  // --- connection -------------------------------------------------------------------------------
  onClose({ code, expired }) {
    this.typingSignal.reset();
    this.customerTyping.hide();
    for (const entry of this.outbox) entry.sent = false; // resent (same client_id) after reopening
    if (code === CLOSE_EXPIRED) {
      // Not logged in (any more): the login page brings the agent back here.
      window.location.assign(`${this.loginUrl}?next=${encodeURIComponent(window.location.pathname)}`);
      return;
    }
    if (code === CLOSE_FORBIDDEN) this.notify(FORBIDDEN_TEXT, "error", { sticky: true });
    else if (expired) this.notify("The desk was disconnected. Reload the page.", "error", { sticky: true });
    this.updateControls();
  }

  onFrame(frame) {
    if (GENERATION_FRAMES.has(frame.type)) {
      this.onGenerationFrame(frame);
      return;
    }
    switch (frame.type) {
      case "desk.snapshot": this.onSnapshot(frame); break;
      case "desk.conversation": this.onDeskConversation(frame.conversation); break;
      case "desk.agents": this.onAgents(frame.agents); break;
      case "conversation.detail": this.onDetail(frame); break;
      case "staff.message.new": this.onStaffMessage(frame); break;
      case "message.saved": this.onSaved(frame); break;
      case "note.new": this.onNote(frame); break;
      case "typing": this.onTyping(frame); break;
      case "suggestion.queued":
      case "suggestion.delta":
      case "suggestion.done":
      case "suggestion.failed": this.onSuggestion(frame); break;
      case "error": this.onError(frame); break;
      // The customer's frames that reach the desk too (`message.new`, `conversation.updated`,
      // `queue.updated`): the staff frames above say the same with more. `pong`, newer frames.
      default: break;
    }
  }

  // --- the lists --------------------------------------------------------------------------------
  onSnapshot(frame) {
    this.me = frame.me || this.me;
    this.conversations.clear();
    const lists = frame.lists || {};
    for (const name of LISTS) {
      for (const conversation of lists[name] || []) this.conversations.set(conversation.id, conversation);
    }
    this.onAgents(frame.agents || []);
    this.client.markReady();
    this.drawLists();
    if (this.openId !== null) {
      // After a reconnect: read the open conversation again (and follow it live).
      this.loaded = false;
      this.client.send({ type: "conversation.open", conversation_id: this.openId });
    }
    this.updateControls();
  }

  /** The list a conversation belongs in, by its status and owner; null: none of this page's. */
  listOf(conversation) {
    switch (conversation.status) {
      case "waiting_for_agent": return "waiting";
      case "with_agent": return conversation.agent && this.me && conversation.agent.id === this.me.id ? "mine" : null;
      case "bot": return "bot";
      case "resolved": return "resolved";
      default: return null;
    }
  }

  onDeskConversation(conversation) {
    if (!conversation || !conversation.id) return;
    const before = this.conversations.get(conversation.id);
    this.conversations.set(conversation.id, conversation);
    if (conversation.status === "waiting_for_agent" && before?.status !== "waiting_for_agent" && this.els.sound.checked) {
      this.beeper.beep();
    }
    this.drawLists();
    if (conversation.id === this.openId) {
      if (before && before.status !== conversation.status) this.onOpenStatusChanged(before, conversation);
      this.updateControls();
    }
  }

  onOpenStatusChanged(before, conversation) {
    const mine = this.isMine(conversation);
    if (!mine) {
      this.typingSignal.stop();
      if (this.suggestionState) this.discardSuggestion();
    }
    this.resolveAsked = false;
  }

  drawLists() {
    const buckets = Object.fromEntries(LISTS.map((name) => [name, []]));
    for (const conversation of this.conversations.values()) {
      const list = this.listOf(conversation);
      if (list) buckets[list].push(conversation);
    }
    const time = (iso) => (iso ? new Date(iso).getTime() : 0);
    buckets.waiting.sort((a, b) => time(a.escalated_at) - time(b.escalated_at));
    buckets.mine.sort((a, b) => time(b.last_message_at) - time(a.last_message_at));
    buckets.bot.sort((a, b) => time(b.last_message_at) - time(a.last_message_at));
    buckets.resolved.sort((a, b) => time(b.resolved_at) - time(a.resolved_at));
    const focusedId = document.activeElement?.dataset?.conversationId;
    for (const name of LISTS) {
      const entries = buckets[name].map((conversation) => render.listEntry(conversation, name, {
        selected: conversation.id === this.openId,
      }));
      render.drawList(this.els.lists[name], entries, EMPTY_TEXT[name]);
      this.els.counts[name].textContent = String(buckets[name].length);
      this.els.counts[name].toggleAttribute("data-zero", buckets[name].length === 0);
    }
    if (focusedId) {
      const again = this.root.querySelector(`.entry[data-conversation-id="${CSS.escape(focusedId)}"]`);
      again?.focus();
    }
    this.waitingCount = buckets.waiting.length;
    this.updateTitle();
  }

  updateTitle() {
    const waiting = this.waitingCount || 0;
    const name = this.storeName ? `Desk — ${this.storeName}` : "Desk";
    document.title = waiting > 0 ? `(${waiting}) ${name}` : name;
  }

  onAgents(agents) {
    if (!Array.isArray(agents)) return;
    this.agents = agents;
    const me = this.me && agents.find((agent) => agent.id === this.me.id);
    if (me) this.me = me;
    if (this.me && document.activeElement !== this.els.presence) {
      // "offline" while no desk socket is open; this page has one, so it shows the choice.
      this.els.presence.value = this.me.presence;
    }
    render.drawTeam(this.els.team, agents, this.me?.id);
  }

  refreshAges() {
    render.refreshAges(this.root);
    if (this.openId !== null) this.drawConversationHeader();
  }

  // --- the open conversation --------------------------------------------------------------------
  open(conversationId) {
    if (!conversationId) return;
    if (conversationId !== this.openId) {
      this.typingSignal.stop();
      if (this.suggestionState) this.discardSuggestion();
      this.outbox = this.outbox.filter((entry) => entry.conversationId === conversationId);
      this.els.input.value = "";
      this.setMode("reply");
    }
    this.openId = conversationId;
    this.loaded = false;
    this.resolveAsked = false;
    this.answers.clear();
    this.generations.resetAttempts();
    this.customerTyping.hide();
    this.els.transcript.replaceChildren(render.transcriptNotice("Loading the conversation…", "placeholder"));
    this.els.empty.hidden = true;
    this.els.view.hidden = false;
    this.client.send({ type: "conversation.open", conversation_id: conversationId });
    this.drawLists();
    this.updateControls();
    // On a narrow screen the lists sit above the conversation: bring it into view.
    if (window.matchMedia("(max-width: 899px)").matches) {
      this.els.view.scrollIntoView({ block: "start", behavior: "smooth" });
    }
  }

  get openConversation() {
    return this.openId === null ? null : this.conversations.get(this.openId) || null;
  }

  isMine(conversation) {
    return Boolean(conversation && conversation.status === "with_agent" && this.me
      && conversation.agent && conversation.agent.id === this.me.id);
  }

  onDetail(frame) {
    const conversation = frame.conversation;
    if (!conversation || conversation.id !== this.openId) return;
    this.conversations.set(conversation.id, conversation);
    this.loaded = true;
    this.answers.clear();
    this.generations.resetAttempts();
    const items = [
      ...(frame.messages || []).map((message) => ({ at: message.created_at, el: this.messageEl(message) })),
      ...(frame.notes || []).map((note) => ({ at: note.created_at, el: render.noteItem(note) })),
    ];
    // Notes sit among the messages where they were written (a stable sort keeps ties in order).
    items.sort((a, b) => new Date(a.at).getTime() - new Date(b.at).getTime());
    const transcript = this.els.transcript;
    transcript.replaceChildren(...items.map((item) => item.el));
    if (items.length === 0) transcript.append(render.transcriptNotice("No messages yet.", "placeholder"));
    const generation = frame.generation;
    if (generation) {
      const el = this.answerEl(String(generation.id));
      render.setAnswerState(el, generation.status === "pending" ? "queued" : "thinking");
    }
    for (const entry of this.outbox) transcript.append(entry.el);
    transcript.scrollTop = transcript.scrollHeight;
    this.drawLists();
    this.updateControls();
    this.flushOutbox();
  }

  messageEl(message) {
    return render.messageItem(message, { customerName: this.openConversation?.customer || "Customer" });
  }

  /** Appends to the transcript, following the end unless the reader scrolled up. */
  append(el) {
    const transcript = this.els.transcript;
    const follow = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 80;
    transcript.querySelector(".tnotice--placeholder")?.remove(); // "No messages yet."
    // Replies still on their way stay last.
    const firstPending = this.outbox.find((entry) => entry.el.isConnected)?.el;
    if (firstPending && el !== firstPending && !this.outbox.some((entry) => entry.el === el)) {
      transcript.insertBefore(el, firstPending);
    } else {
      transcript.append(el);
    }
    if (follow) transcript.scrollTop = transcript.scrollHeight;
  }

  findMessage(id) {
    return this.els.transcript.querySelector(`.item[data-message-id="${CSS.escape(String(id))}"]`);
  }

  onStaffMessage(frame) {
    const message = frame.message;
    if (!message || frame.conversation_id !== this.openId || !this.loaded) return;
    if (message.author === "customer") this.customerTyping.hide();
    const customerName = this.openConversation?.customer || "Customer";
    const existing = this.findMessage(message.id);
    if (existing) {
      render.fillMessage(existing, message, customerName); // e.g. the bot's answer, now with its reasoning
      return;
    }
    const genId = message.generation_id == null ? null : String(message.generation_id);
    const answer = genId && this.answers.get(genId);
    if (answer) {
      this.answers.delete(genId);
      render.fillMessage(answer, message, customerName);
      return;
    }
    this.append(this.messageEl(message));
  }

  onNote(frame) {
    if (frame.conversation_id !== this.openId || !this.loaded || !frame.note) return;
    if (this.els.transcript.querySelector(`[data-note-id="${CSS.escape(String(frame.note.id))}"]`)) return;
    this.pendingNotes.shift();
    this.append(render.noteItem(frame.note));
  }

  onTyping(frame) {
    if (frame.conversation_id !== this.openId || frame.author !== "customer") return;
    const name = this.openConversation?.customer || "The customer";
    this.customerTyping.update(frame.active === true, `${name} is typing…`);
  }

  // --- the bot's answer in the open conversation --------------------------------------------------
  answerEl(id) {
    let el = this.answers.get(id);
    if (!el) {
      el = render.answerItem(id);
      this.answers.set(id, el);
      this.append(el);
    }
    return el;
  }

  onGenerationFrame(frame) {
    if (this.openId === null || !this.loaded) return;
    const verdict = this.generations.judge(frame);
    if (verdict === IGNORE) return;
    const id = generationIdOf(frame);
    if (id === null) return;
    if (verdict === RESTART && this.answers.has(id)) render.restartAnswer(this.answers.get(id));
    switch (frame.type) {
      case "generation.queued": render.setAnswerState(this.answerEl(id), "queued", frame.position); break;
      case "generation.started":
      case "answer.thinking": render.setAnswerState(this.answerEl(id), "thinking"); break;
      case "reasoning.delta": render.appendReasoning(this.answerEl(id), frame.text); break;
      case "answer.delta": render.appendAnswer(this.answerEl(id), frame.text); break;
      case "answer.done": {
        const el = this.answers.get(id);
        this.answers.delete(id);
        const message = frame.message;
        if (!message) { el?.remove(); break; }
        if (this.findMessage(message.id)) { el?.remove(); break; } // `staff.message.new` came first
        // The stored answer; its reasoning and measures follow in `staff.message.new`.
        const reasoning = el?.querySelector(".reasoning__text")?.textContent || "";
        const target = el || this.messageEl(message);
        render.fillMessage(target, { ...message, reasoning }, this.openConversation?.customer);
        if (!el) this.append(target);
        break;
      }
      case "generation.failed":
        this.dropAnswer(id);
        this.append(render.transcriptNotice(`The bot could not answer: ${frame.detail || "it failed."}`, "error"));
        break;
      case "generation.cancelled":
        if (this.dropAnswer(id)) this.append(render.transcriptNotice("The bot's answer was stopped.", "small"));
        break;
      default: break;
    }
  }

  dropAnswer(id) {
    const el = this.answers.get(id);
    el?.remove();
    this.answers.delete(id);
    return Boolean(el);
  }

  // --- replies, notes -----------------------------------------------------------------------------
  setMode(mode) {
    this.mode = mode;
    const reply = mode === "reply";
    this.els.modeReply.setAttribute("aria-selected", String(reply));
    this.els.modeNote.setAttribute("aria-selected", String(!reply));
    this.els.form.dataset.mode = mode;
    if (!reply) this.typingSignal.stop();
    this.updateComposer();
  }

  updateComposer() {
    const { input, send, hint, counter } = this.els;
    const conversation = this.openConversation;
    const reply = this.mode === "reply";
    const mine = this.isMine(conversation);
    // A reply written while the socket is down waits in the outbox; a note needs the socket.
    const usable = reply ? mine : Boolean(conversation) && this.client.ready;
    const text = input.value;
    const count = charCount(text);
    const over = count > this.maxChars;
    input.disabled = !(reply ? mine : conversation);
    input.placeholder = reply ? replyPlaceholder(conversation, mine)
      : "A private note for the team — the customer never sees it";
    counter.textContent = `${count} / ${this.maxChars}`;
    counter.classList.toggle("counter--warn", !over && count >= this.maxChars * 0.9);
    counter.classList.toggle("counter--over", over);
    input.setAttribute("aria-invalid", String(over));
    let message = "";
    if (over) message = `Too long: at most ${this.maxChars} characters.`;
    else if (!this.client.ready && text.trim()) {
      message = reply ? "Not connected — your reply will be sent when we reconnect." : "Not connected.";
    }
    if (hint.textContent !== message) hint.textContent = message;
    send.disabled = !usable || over || text.trim() === "";
    send.textContent = reply ? "Send" : "Add note";
  }

  submit() {
    const { input } = this.els;
    const text = input.value;
    if (text.trim() === "" || charCount(text) > this.maxChars || this.openId === null) return;
    if (this.mode === "note") {
      if (!this.client.send({ type: "note.add", conversation_id: this.openId, text })) return;
      this.pendingNotes.push(text);
    } else {
      if (!this.isMine(this.openConversation) || !this.sendReply(text)) return;
      this.typingSignal.stop();
    }
    input.value = "";
    this.autosize();
    this.updateComposer();
    input.focus();
  }

  /** Sends a reply to the customer (from the box or a suggestion); false if it cannot go. */
  sendReply(text) {
    const clientId = newClientId();
    const frame = { type: "message.send", conversation_id: this.openId, text, client_id: clientId };
    if (new TextEncoder().encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES) {
      this.notify("This message is too large to send. Please shorten it.");
      return false;
    }
    const el = render.pendingItem(text, this.me?.name || "You");
    const entry = { clientId, text, el, sent: false, conversationId: this.openId };
    this.outbox.push(entry);
    this.append(el);
    this.els.transcript.scrollTop = this.els.transcript.scrollHeight;
    this.flushOutbox();
    return true;
  }

  flushOutbox() {
    if (!this.client.ready || !this.loaded) return;
    for (const entry of this.outbox) {
      if (entry.sent || entry.conversationId !== this.openId) continue;
      entry.sent = this.client.send({
        type: "message.send", conversation_id: entry.conversationId, text: entry.text, client_id: entry.clientId,
      });
    }
  }

  onSaved(frame) {
    const index = this.outbox.findIndex((entry) => entry.clientId === frame.client_id);
    const entry = index >= 0 ? this.outbox.splice(index, 1)[0] : null;
    const message = frame.message;
    if (!message) { entry?.el.remove(); return; }
    if (this.findMessage(message.id)) { // `staff.message.new` came first
      entry?.el.remove();
      return;
    }
    if (entry && entry.conversationId === this.openId) {
      render.fillMessage(entry.el, { ...message, author_name: this.me?.name });
    }
  }

  autosize() {
    const { input } = this.els;
    input.style.height = "auto";
    input.style.height = `${input.scrollHeight}px`; // capped by max-height in CSS
  }

  // --- suggested replies ---------------------------------------------------------------------------
  requestSuggestion() {
    if (!this.isMine(this.openConversation) || this.suggestionState?.state === "requested"
      || this.suggestionState?.state === "streaming") return;
    if (this.suggestionState?.id) this.discardedSuggestions.add(this.suggestionState.id);
    if (!this.client.send({ type: "suggestion.request", conversation_id: this.openId })) return;
    this.suggestionState = { id: null, state: "requested" };
    const { suggestion, suggestionText, suggestionStatus } = this.els;
    suggestion.hidden = false;
    suggestionText.value = "";
    suggestionText.readOnly = true;
    suggestionStatus.textContent = "Drafting a reply…";
    this.updateControls();
  }

  onSuggestion(frame) {
    const id = generationIdOf(frame);
    const current = this.suggestionState;
    if (id === null || this.discardedSuggestions.has(id) || !current) return;
    // The request's reply (`suggestion.queued`) names the generation.
    if (current.id === null && current.state === "requested") current.id = id;
    if (current.id !== id) return;
    const { suggestionText, suggestionStatus } = this.els;
    if (frame.type === "suggestion.queued") return;
    if (frame.type === "suggestion.delta") {
      current.state = "streaming";
      suggestionText.value += String(frame.text ?? "");
      suggestionStatus.textContent = "Drafting a reply…";
    } else if (frame.type === "suggestion.done") {
      current.state = "done";
      suggestionText.value = String(frame.text ?? "");
      suggestionText.readOnly = false;
      suggestionStatus.textContent = frame.text
        ? "Suggested by the model — edit it, then send or discard it."
        : "The model had no suggestion for this message.";
      if (frame.text) suggestionText.focus();
    } else {
      current.state = "done";
      suggestionText.readOnly = false;
      suggestionStatus.textContent = frame.detail || "No suggestion could be drafted.";
    }
    this.updateControls();
  }

  sendSuggestion() {
    const text = this.els.suggestionText.value;
    if (!text.trim() || this.suggestionState?.state !== "done") return;
    if (charCount(text) > this.maxChars) {
      this.notify(`Too long: at most ${this.maxChars} characters.`);
      return;
    }
    if (!this.isMine(this.openConversation) || !this.sendReply(text)) return;
    this.discardSuggestion();
    this.els.input.focus();
  }

  discardSuggestion() {
    const state = this.suggestionState;
    const id = state?.id;
    // A draft still being written leaves the worker's batch; any late frame of it is ignored.
    if (id) this.discardedSuggestions.add(id);
    if (id && state.state !== "done") {
      this.client.send({ type: "suggestion.cancel", conversation_id: this.openId, generation_id: Number(id) });
    }
    this.suggestionState = null;
    this.els.suggestion.hidden = true;
    this.els.suggestionText.value = "";
    this.updateControls();
  }

  // --- errors and notices ------------------------------------------------------------------------
  onError(frame) {
    const detail = frame.detail || "Something went wrong.";
    if (frame.frame_type === "message.send" || (frame.client_id && !frame.frame_type)) {
      const index = frame.client_id ? this.outbox.findIndex((entry) => entry.clientId === frame.client_id) : -1;
      if (index >= 0) {
        const [entry] = this.outbox.splice(index, 1);
        if (this.els.input.value.trim() === "" && entry.conversationId === this.openId) {
          entry.el.remove();
          this.setMode("reply");
          this.els.input.value = entry.text;
          this.autosize();
          this.updateComposer();
        } else {
          render.markNotSent(entry.el);
        }
      }
    }
    if (frame.frame_type === "note.add") {
      const text = this.pendingNotes.shift();
      if (text && this.els.input.value.trim() === "") {
        this.setMode("note");
        this.els.input.value = text;
        this.updateComposer();
      }
    }
    if (frame.frame_type === "suggestion.request" && this.suggestionState?.state === "requested") {
      this.suggestionState.state = "done";
      this.els.suggestionStatus.textContent = detail;
      this.els.suggestionText.readOnly = false;
      this.updateControls();
    }
    if (frame.frame_type === "conversation.open" && frame.code === "conversation_not_found") {
      this.openId = null;
      this.els.view.hidden = true;
      this.els.empty.hidden = false;
    }
    this.notify(detail, "error");
  }

  notify(text, kind = "error", { sticky = false } = {}) {
    const el = render.pageNotice(text, kind);
    this.els.notices.append(el);
    while (this.els.notices.childElementCount > 4) this.els.notices.firstElementChild.remove();
    if (!sticky) setTimeout(() => el.remove(), NOTICE_MS);
  }

  // --- the conversation's header and actions -----------------------------------------------------
  drawConversationHeader() {
    const conversation = this.openConversation;
    if (!conversation) return;
    const { title, statusLine, meta } = this.els;
    title.textContent = conversation.customer || "Customer";
    let status = render.STATUS_LABELS[conversation.status] || conversation.status;
    if (conversation.status === "with_agent") {
      status = this.isMine(conversation) ? "With you" : `With ${conversation.agent?.name || "another agent"}`;
    }
    if (conversation.status === "waiting_for_agent" && conversation.escalated_at) {
      status += ` · ${formatAge(conversation.escalated_at)}`;
    }
    statusLine.textContent = status;
    statusLine.dataset.status = conversation.status;
    const parts = [];
    const withPeople = conversation.status === "waiting_for_agent" || conversation.status === "with_agent";
    if (withPeople && conversation.handoff_reason_label) {
      const detail = conversation.handoff_detail ? ` (${conversation.handoff_detail})` : "";
      parts.push(conversation.handoff_reason_label + detail);
    }
    if (conversation.created_at) parts.push(`started ${new Date(conversation.created_at).toLocaleString()}`);
    const text = parts.join(" · ");
    if (meta.textContent !== text) meta.textContent = text;
  }

  updateControls() {
    const conversation = this.openConversation;
    const { claim, suggest, handBack, resolve, resolveConfirm } = this.els;
    const ready = this.client.ready && this.loaded;
    const mine = this.isMine(conversation);
    const status = conversation?.status;
    claim.hidden = !conversation || !(status === "waiting_for_agent" || status === "bot");
    claim.disabled = !ready;
    for (const button of [suggest, handBack, resolve]) {
      button.hidden = !mine;
      button.disabled = !ready;
    }
    const drafting = this.suggestionState?.state === "requested" || this.suggestionState?.state === "streaming";
    suggest.disabled = !ready || drafting;
    resolve.hidden = !mine || this.resolveAsked;
    resolveConfirm.hidden = !mine || !this.resolveAsked;
    this.els.suggestionSend.disabled = !ready || !mine || this.suggestionState?.state !== "done"
      || !this.els.suggestionText.value.trim();
    if (!mine && this.suggestionState) this.discardSuggestion();
    this.drawConversationHeader();
    this.updateComposer();
  }

  bindControls() {
    const els = this.els;
    for (const name of LISTS) {
      els.lists[name].addEventListener("click", (event) => {
        const entry = event.target.closest(".entry");
        if (entry) this.open(entry.dataset.conversationId);
      });
    }
    els.claim.addEventListener("click", () => {
      if (this.openId !== null) this.client.send({ type: "conversation.claim", conversation_id: this.openId });
    });
    els.handBack.addEventListener("click", () => {
      this.typingSignal.stop();
      this.client.send({ type: "conversation.handback", conversation_id: this.openId });
    });
    els.resolve.addEventListener("click", () => {
      this.resolveAsked = true;
      this.updateControls();
      els.resolveYes.focus();
    });
    els.resolveNo.addEventListener("click", () => {
      this.resolveAsked = false;
      this.updateControls();
      els.resolve.focus();
    });
    els.resolveYes.addEventListener("click", () => {
      this.resolveAsked = false;
      this.typingSignal.stop();
      this.client.send({ type: "conversation.resolve", conversation_id: this.openId });
      this.updateControls();
    });
    els.suggest.addEventListener("click", () => this.requestSuggestion());
    els.suggestionSend.addEventListener("click", () => this.sendSuggestion());
    els.suggestionDiscard.addEventListener("click", () => {
      this.discardSuggestion();
      els.input.focus();
    });
    els.suggestionText.addEventListener("input", () => this.updateControls());
    els.suggestionText.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.sendSuggestion();
      }
    });
    els.modeReply.addEventListener("click", () => { this.setMode("reply"); els.input.focus(); });
    els.modeNote.addEventListener("click", () => { this.setMode("note"); els.input.focus(); });
    // Tabs: the arrow keys move between them.
    for (const tab of [els.modeReply, els.modeNote]) {
      tab.addEventListener("keydown", (event) => {
        if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
        const other = tab === els.modeReply ? els.modeNote : els.modeReply;
        other.focus();
        other.click();
      });
    }
    els.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    els.input.addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter is a newline; an IME composing text keeps its Enter.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        this.submit();
      }
    });
    els.input.addEventListener("input", () => {
      this.autosize();
      this.updateComposer();
      if (this.mode !== "reply" || !this.isMine(this.openConversation)) return;
      if (els.input.value.trim() === "") this.typingSignal.stop();
      else this.typingSignal.typed();
    });
    els.input.addEventListener("blur", () => this.typingSignal.stop());
    els.presence.addEventListener("change", () => {
      this.client.send({ type: "presence.set", presence: els.presence.value });
    });
    els.sound.addEventListener("change", () => {
      store.set(KEY_SOUND, els.sound.checked ? "1" : "0");
      if (els.sound.checked) {
        this.beeper.unlock();
        this.beeper.beep(); // what it will sound like
      }
    });
  }
}

/** What the reply box says when it is empty (or why it is off). */
function replyPlaceholder(conversation, mine) {
  if (mine) return "Reply to the customer (Enter sends, Shift+Enter for a new line)";
  switch (conversation?.status) {
    case "resolved": return "This conversation is resolved.";
    case "with_agent": return `${conversation.agent?.name || "Another agent"} handles this conversation.`;
    default: return "Take the conversation over to reply.";
  }
}

const root = document.getElementById("desk-root");
if (root) new DeskPage(root).start();
