/*
 * The customer chat page. Speaks the WebSocket protocol in docs/protocol.md through the shared
 * socket client; the server is the source of truth: every `history` frame redraws the whole list.
 * Besides the bot's answers: "Talk to a person", the wait for one, the agent's messages and
 * typing, the customer ending the chat ("This solved my problem"), the end of a resolved
 * conversation and its rating. The DOM work is in render.js and rating.js.
 */
import { IGNORE, RESTART, GenerationTracker, generationIdOf } from "../js/generations.js";
import { SocketClient } from "../js/socket.js";
import { TypingIndicator, TypingSignal, charCount, newClientId } from "../js/text.js";
import { RatingForm } from "./rating.js";
import * as render from "./render.js";

const MAX_FRAME_BYTES = 16 * 1024; // the server closes the socket (1009) above this
const KEY_CONVERSATION = "chat.conversationId";
// Set by "New conversation" until the next message creates one: a plain `hello` with null
// would re-attach the visitor's latest conversation, i.e. the one the customer just left.
const KEY_START_FRESH = "chat.startFresh";
const EXPIRED_TEXT = "Your chat session expired — reload the page.";

// Error codes that refuse a `message.send` (nothing stored): the text goes back to the customer.
const REFUSED_SEND_CODES = new Set([
  "empty_message", "message_too_long", "invalid_client_id",
  "conversation_closed", "conversation_not_found", "rate_limited", "too_many_answers",
]);

function errorText(code, maxChars) {
  const fallbacks = {
    conversation_closed: "This conversation has been closed. Press “New conversation” to start again.",
    conversation_not_found: "We couldn't find that conversation. Press “New conversation” to start again.",
    assistant_unavailable: "Your message was received, but the assistant is unavailable right now.",
    rate_limited: "You're sending messages too quickly. Please wait a moment.",
    too_many_answers: "The assistant is still answering you in other conversations. Please wait for one to finish.",
    too_many_sockets: "This chat is open in too many windows. Please close some of them.",
    message_too_long: `Messages can be at most ${maxChars} characters.`,
  };
  return fallbacks[code] || "Something went wrong.";
}

// Statuses in which the customer can no longer ask for a person (they have one, or are done).
const NO_HANDOFF_STATUSES = new Set(["waiting_for_agent", "with_agent", "resolved"]);
// Statuses of an open conversation, which the customer may end themselves.
const OPEN_STATUSES = new Set(["bot", "waiting_for_agent", "with_agent"]);
const RATING_ERROR_TEXT = {
  conversation_not_resolved: "This conversation can be rated once it has ended.",
  invalid_score: "Please choose a face from 1 (very bad) to 5 (excellent).",
  comment_too_long: "Your comment is too long; please shorten it.",
  conversation_not_found: "We couldn't find this conversation to rate it.",
  rate_limited: "You're sending too quickly. Please wait a moment and try again.",
};

// sessionStorage may be unavailable: the session cookie still finds the latest conversation.
const store = {
  get(key) {
    try { return sessionStorage.getItem(key); } catch { return null; }
  },
  set(key, value) {
    try {
      if (value == null) sessionStorage.removeItem(key);
      else sessionStorage.setItem(key, String(value));
    } catch { /* ignore */ }
  },
};

class ChatPage {
  constructor(root) {
    const $ = (id) => document.getElementById(id);
    this.els = {
      form: $("composer"),
      input: $("composer-input"),
      send: $("send-button"),
      stop: $("stop-button"),
      newConversation: $("new-conversation-button"),
      status: $("connection-status"),
      counter: $("composer-counter"),
      warning: $("composer-warning"),
      handoff: $("handoff-button"),
      banner: $("handoff-banner"),
      typing: $("typing-indicator"),
      end: $("conversation-end"),
      startAgain: $("start-again-button"),
      resolveBar: $("resolve-bar"),
      resolve: $("resolve-button"),
      resolveConfirm: $("resolve-confirm"),
      resolveYes: $("resolve-yes"),
      resolveNo: $("resolve-no"),
    };
    this.maxChars = parseInt(root.dataset.maxChars, 10) || 2000;
    this.list = new render.MessageList($("messages"));
    this.generations = new GenerationTracker();
    this.answers = new Map(); // generation id -> bot bubble while queued / thinking / streaming
    this.outbox = []; // customer messages not yet saved: {clientId, text, el, sent}
    this.historiesToSkip = 0; // see sendHello()
    this.helloRetried = false;
    this.conversation = null; // the attached conversation as the server last described it
    this.queue = null; // its place in the queue for a person, while it waits for one
    this.handoffPending = false; // "Talk to a person" sent, no answer yet
    this.resolvePending = false; // "End chat" sent, no answer yet
    this.rating = null; // the attached resolved conversation's rating, once it has one
    this.ratingForm = new RatingForm(
      { form: $("rating-form"), thanks: $("rating-thanks") },
      {
        maxChars: parseInt(root.dataset.ratingMaxChars, 10) || 1000,
        onSubmit: (score, comment) => this.submitRating(score, comment),
      },
    );
    // Leaving the conversation for a new one (`conversation.new` sent, its history not yet
    // here): frames about the old one still arriving must not bring it back.
    this.detaching = false;
    this.typingSignal = new TypingSignal((active) => this.client.send({ type: "typing", active }));
    this.agentTyping = new TypingIndicator((text) => render.setTyping(this.els.typing, text));
    this.client = new SocketClient(root.dataset.wsPath || "/ws/chat/", {
      onOpen: () => this.onOpen(),
      onFrame: (frame) => this.onFrame(frame),
      onClose: (close) => this.onClose(close),
      onStatus: (state) => render.setStatus(this.els.status, state),
    });
  }

  start() {
    this.bindControls();
    this.updateConversationState();
    this.client.connect();
  }

  // --- connection -----------------------------------------------------------------------------
  onOpen() {
    this.helloRetried = false;
    this.sendHello(store.get(KEY_CONVERSATION));
  }

  sendHello(conversationId) {
    this.client.send({ type: "hello", conversation_id: conversationId || null });
    if (!conversationId && store.get(KEY_START_FRESH)) {
      // The customer asked for a new conversation: detach from the one `hello` re-attaches and
      // draw only the second (empty) history, so the old conversation never flashes up.
      this.client.send({ type: "conversation.new" });
      this.historiesToSkip = 1;
      this.detaching = true;
    }
  }

  onClose({ expired }) {
    this.historiesToSkip = 0;
    this.handoffPending = false;
    this.resolvePending = false;
    // A rating on its way may or may not be stored: the next history says.
    if (this.ratingForm.sending) this.ratingForm.setSending(false);
    this.detaching = false;
    this.typingSignal.reset(); // the server forgets a closed socket's typing
    this.agentTyping.hide();
    for (const entry of this.outbox) entry.sent = false; // resent (same client_id) after the next history
    if (expired) this.list.addNotice(EXPIRED_TEXT, "error");
    this.updateConversationState();
  }

  onFrame(frame) {
    const verdict = this.generations.judge(frame);
    if (verdict === IGNORE) return;
    const id = generationIdOf(frame);
    if (verdict === RESTART && this.answers.has(id)) render.restartAnswer(this.answers.get(id));
    switch (frame.type) {
      case "history": this.onHistory(frame); break;
      case "message.saved": this.onSaved(frame); break;
      case "generation.queued": render.showAnswerState(this.answerBubble(id), "queued", frame.position); break;
      case "generation.started":
      case "answer.thinking": render.showAnswerState(this.answerBubble(id), "thinking"); break;
      case "answer.delta": this.list.appendAnswerText(this.answerBubble(id), frame.text); break;
      case "answer.done": this.finishAnswer(id, frame.message); break;
      case "generation.failed":
        this.dropAnswer(id);
        this.list.addNotice(frame.detail || "Sorry, the assistant couldn't answer that.", "error");
        break;
      case "generation.cancelled":
        this.dropAnswer(id);
        this.list.addNotice("Answer stopped", "small");
        break;
      case "message.new":
        // An agent's or a system message that arrives live (e.g. "an agent joined").
        if (frame.message?.author === "agent") this.agentTyping.hide();
        if (frame.message && !this.list.find(frame.message.id)) this.list.addMessage(frame.message);
        this.updateResolveBar();
        break;
      case "conversation.updated": this.onConversationUpdated(frame); break;
      case "queue.updated": this.onQueueUpdated(frame); break;
      case "typing": this.onTyping(frame); break;
      case "rating.saved": this.onRatingSaved(frame); break;
      case "error": this.onError(frame); break;
      default: break; // `pong` and anything newer than this page
    }
  }

  onHistory(frame) {
    if (this.historiesToSkip > 0) { this.historiesToSkip -= 1; return; }
    this.client.markReady();
    this.detaching = false;
    const conversation = frame.conversation;
    store.set(KEY_CONVERSATION, conversation ? conversation.id : null);
    if (conversation) store.set(KEY_START_FRESH, null);
    this.conversation = conversation || null;
    this.queue = frame.queue || null;
    this.handoffPending = false;
    this.resolvePending = false;
    this.rating = frame.rating || null;
    this.agentTyping.hide();

    this.list.clear();
    this.answers.clear();
    this.generations.resetAttempts();
    const messages = Array.isArray(frame.messages) ? frame.messages : [];
    if (messages.length === 0 && this.outbox.length === 0) {
      this.list.addNotice("Hi! How can we help you today?", "welcome");
    }
    for (const message of messages) this.list.addMessage(message);
    const generation = frame.generation;
    if (generation) {
      // The queue position is not part of history; the next `generation.queued` brings it.
      const state = generation.status === "pending" ? "queued" : "thinking";
      render.showAnswerState(this.answerBubble(String(generation.id)), state);
    }
    for (const entry of this.outbox) {
      this.list.moveToEnd(entry.el);
      this.markPending(entry.el);
    }
    this.updateStopButton();
    this.updateConversationState();
    this.list.scrollToBottom();
    this.flushOutbox();
  }

  onError(frame) {
    if (frame.code === "conversation_not_found" && !this.client.ready && !this.helloRetried) {
      // The stored conversation is gone (or was never this visitor's): fall back to the latest.
      this.helloRetried = true;
      store.set(KEY_CONVERSATION, null);
      this.sendHello(null);
      return;
    }
    if (frame.frame_type === "rating.submit") {
      this.onRatingRefused(frame);
      return;
    }
    if (frame.frame_type === "handoff.request" || frame.frame_type === "conversation.resolve") {
      this.handoffPending = false;
      this.resolvePending = false;
      this.updateConversationState();
    }
    // A refusal of a message names its client_id where it was well formed; else, as the server
    // answers frames in order, it belongs to the oldest message sent and not yet saved.
    const refusesSend = !frame.frame_type || frame.frame_type === "message.send";
    if (REFUSED_SEND_CODES.has(frame.code) && refusesSend) {
      let index = frame.client_id ? this.outbox.findIndex((entry) => entry.clientId === frame.client_id) : -1;
      if (index < 0) index = this.outbox.findIndex((entry) => entry.sent);
      if (index >= 0) this.returnToComposer(this.outbox.splice(index, 1)[0]);
    }
    // For `assistant_unavailable` the message was saved (message.saved came first) and stays.
    this.list.addNotice(frame.detail || errorText(frame.code, this.maxChars), "error");
  }

  // --- a person: handoff, the queue, the agent --------------------------------------------------
  /** True when a frame about conversation `id` is about the one this page shows (or starts). */
  isCurrent(id) {
    if (this.detaching) return false;
    const current = this.conversation?.id ?? store.get(KEY_CONVERSATION);
    return !current || current === id;
  }

  onConversationUpdated(frame) {
    const conversation = frame.conversation;
    if (!conversation || !this.isCurrent(conversation.id)) return;
    const before = this.conversation?.status;
    if (this.conversation && this.conversation.id !== conversation.id) this.rating = null;
    this.conversation = conversation;
    // "Talk to a person" before any message starts the conversation.
    store.set(KEY_CONVERSATION, conversation.id);
    store.set(KEY_START_FRESH, null);
    this.handoffPending = false;
    if (conversation.status !== "waiting_for_agent") this.queue = null;
    if (conversation.status !== "with_agent") this.agentTyping.hide();
    const justResolved = conversation.status === "resolved" && before !== "resolved";
    // The customer ended it, or their place (the composer, the "End chat" bar) just closed:
    // the keyboard goes on to the rating. An agent's resolution elsewhere does not steal focus.
    const active = document.activeElement;
    const moveFocus = justResolved && (this.resolvePending || !active || active === document.body
      || active === this.els.input || this.els.resolveBar.contains(active));
    this.resolvePending = false;
    if (justResolved) this.typingSignal.stop();
    this.updateConversationState();
    if (moveFocus && !this.rating) this.ratingForm.focus();
  }

  onQueueUpdated(frame) {
    if (!this.isCurrent(frame.conversation_id)) return;
    if (this.conversation && this.conversation.status !== "waiting_for_agent") return;
    const { position, agents_online: agentsOnline, support_hours: supportHours } = frame;
    this.queue = { position, agents_online: agentsOnline, support_hours: supportHours };
    this.updateConversationState();
  }

  onTyping(frame) {
    if (frame.author !== "agent" || !this.isCurrent(frame.conversation_id)) return;
    const name = frame.name || "Our support agent";
    this.agentTyping.update(frame.active === true, `${name} is typing…`);
  }

  requestHandoff() {
    if (!this.client.ready || this.handoffPending || this.detaching) return;
    if (this.client.send({ type: "handoff.request" })) {
      this.handoffPending = true;
      this.updateConversationState();
    }
  }

  /** The banner, the handoff button, the end of a resolved conversation and the composer, as
   * the conversation's status says. */
  updateConversationState() {
    const { handoff, banner, end } = this.els;
    const status = this.conversation?.status || null;
    render.setBanner(banner, bannerText(this.conversation, this.queue), status);
    handoff.hidden = NO_HANDOFF_STATUSES.has(status);
    handoff.disabled = !this.client.ready || this.handoffPending || this.detaching;
    handoff.setAttribute("aria-busy", String(this.handoffPending));
    end.hidden = status !== "resolved";
    this.updateRating();
    this.updateResolveBar();
    this.updateComposer();
  }

  // --- the end: "This solved my problem" / "End chat", and the rating ---------------------------
  /** The customer's own "End chat", while the conversation is open: with the bot once it has
   * answered ("This solved my problem"), waiting for a person or with one ("End chat"). */
  updateResolveBar() {
    const { resolveBar, resolve } = this.els;
    const status = this.conversation?.status;
    const replied = status !== "bot"
      || this.list.el.querySelector(".message--bot[data-message-id], .message--agent") !== null;
    const show = OPEN_STATUSES.has(status) && replied && !this.detaching;
    resolveBar.hidden = !show;
    if (!show) this.closeResolveConfirm({ focus: false });
    const label = status === "bot" ? "This solved my problem" : "End chat";
    if (resolve.textContent !== label) resolve.textContent = label;
    resolve.disabled = !this.client.ready || this.resolvePending;
    resolve.setAttribute("aria-busy", String(this.resolvePending));
  }

  openResolveConfirm() {
    const { resolve, resolveConfirm, resolveYes } = this.els;
    resolve.hidden = true;
    resolveConfirm.hidden = false;
    resolveYes.focus();
  }

  closeResolveConfirm({ focus = true } = {}) {
    const { resolve, resolveConfirm } = this.els;
    const wasOpen = !resolveConfirm.hidden;
    resolveConfirm.hidden = true;
    resolve.hidden = false;
    if (focus && wasOpen) resolve.focus();
  }

  resolveConversation() {
    if (!this.client.ready || this.resolvePending || this.detaching || !this.conversation) return;
    if (this.client.send({ type: "conversation.resolve" })) {
      this.resolvePending = true;
      this.closeResolveConfirm({ focus: false });
      this.updateResolveBar();
    }
  }

  /** Asks for the rating of a resolved conversation that has none, or shows the one it has. */
  updateRating() {
    const conversation = this.conversation;
    if (conversation?.status !== "resolved") {
      this.ratingForm.hide();
      return;
    }
    if (this.rating) this.ratingForm.showRated(this.rating, this.rating.detail);
    else this.ratingForm.ask(conversation.id);
  }

  submitRating(score, comment) {
    const conversation = this.conversation;
    if (conversation?.status !== "resolved") return false;
    const frame = { type: "rating.submit", conversation_id: conversation.id, score, comment };
    if (!this.client.ready || !this.client.send(frame)) {
      this.ratingForm.showError("Not connected — please try again when we reconnect.");
      return false;
    }
    return true;
  }

  onRatingSaved(frame) {
    if (!frame.rating || frame.conversation_id !== this.conversation?.id) return;
    this.rating = frame.rating;
    this.updateRating();
  }

  onRatingRefused(frame) {
    if (frame.code === "already_rated") {
      // Rated already (in another tab, say): never ask again.
      this.rating = { score: null, comment: "", detail: frame.detail || "This conversation has been rated already; thank you." };
      this.updateRating();
      return;
    }
    this.ratingForm.showError(frame.detail || RATING_ERROR_TEXT[frame.code] || "Your rating could not be saved.");
  }

  // --- the bot's answers in progress ----------------------------------------------------------
  answerBubble(id) {
    let el = this.answers.get(id);
    if (!el) {
      el = this.list.addAnswer(id);
      this.answers.set(id, el);
      this.updateStopButton();
    }
    return el;
  }

  finishAnswer(id, message) {
    const el = this.answers.get(id);
    this.answers.delete(id);
    this.updateStopButton();
    if (!message) return;
    if (this.list.find(message.id)) { el?.remove(); return; } // already drawn from a history
    if (el) render.completeAnswer(el, message);
    else this.list.addMessage(message);
    this.updateResolveBar();
  }

  dropAnswer(id) {
    this.answers.get(id)?.remove();
    this.answers.delete(id);
    this.updateStopButton();
  }

  updateStopButton() {
    this.els.stop.hidden = this.answers.size === 0;
  }

  // --- outbox: the customer's messages until the server saved them ---------------------------
  onSaved(frame) {
    const { message, conversation } = frame;
    if (conversation && conversation.id) {
      store.set(KEY_CONVERSATION, conversation.id);
      store.set(KEY_START_FRESH, null);
      const statusChanged = conversation.status !== this.conversation?.status;
      this.conversation = conversation;
      if (statusChanged) this.updateConversationState();
    }
    const index = this.outbox.findIndex((entry) => entry.clientId === frame.client_id);
    const el = index >= 0 ? this.outbox.splice(index, 1)[0].el : null;
    if (!message) return;
    // A resend after reconnect: the history already drew this message.
    const existing = this.list.find(message.id);
    if (existing) {
      if (el && el !== existing) el.remove();
      return;
    }
    if (el) render.markSaved(el, message);
    else this.list.addMessage(message);
  }

  flushOutbox() {
    if (!this.client.ready) return;
    for (const entry of this.outbox) {
      if (entry.sent) continue;
      entry.sent = this.client.send({ type: "message.send", text: entry.text, client_id: entry.clientId });
      if (entry.sent) this.markPending(entry.el);
    }
  }

  markPending(el) {
    render.markPending(el, this.client.ready);
  }

  // A refused message is not lost: its text goes back into an empty composer, else stays marked.
  returnToComposer(entry) {
    if (this.els.input.value.trim() === "") {
      entry.el.remove();
      this.els.input.value = entry.text;
      this.autosize();
      this.updateComposer();
    } else {
      render.markNotSent(entry.el);
    }
  }

  // --- composer -------------------------------------------------------------------------------
  get resolved() {
    return this.conversation?.status === "resolved";
  }

  updateComposer() {
    const { form, input, counter, warning, send, newConversation } = this.els;
    const expired = this.client.expired;
    const resolved = this.resolved;
    // A resolved conversation takes no more messages: its end (and rating) takes the composer's
    // place, which on a phone is room the rating needs.
    form.hidden = resolved;
    input.disabled = resolved;
    input.placeholder = resolved ? "This conversation is resolved" : "Type your message…";
    const text = input.value;
    const count = charCount(text);
    const over = count > this.maxChars;
    counter.textContent = `${count} / ${this.maxChars}`;
    counter.classList.toggle("composer__counter--warn", !over && count >= this.maxChars * 0.9);
    counter.classList.toggle("composer__counter--over", over);
    input.setAttribute("aria-invalid", String(over));
    let message = "";
    if (expired) message = EXPIRED_TEXT;
    else if (over) message = `Too long: please shorten your message to ${this.maxChars} characters.`;
    else if (!this.client.ready && text.trim()) message = "Not connected — your message will be sent when we reconnect.";
    if (warning.textContent !== message) warning.textContent = message;
    send.disabled = expired || resolved || over || text.trim() === "";
    newConversation.disabled = expired;
  }

  autosize() {
    const { input } = this.els;
    input.style.height = "auto";
    input.style.height = `${input.scrollHeight}px`; // capped by max-height in CSS
  }

  submit() {
    const { input } = this.els;
    const text = input.value;
    if (this.client.expired || this.resolved || text.trim() === "" || charCount(text) > this.maxChars) {
      this.updateComposer();
      return;
    }
    const clientId = newClientId();
    const frameBytes = new TextEncoder().encode(
      JSON.stringify({ type: "message.send", text, client_id: clientId })).length;
    if (frameBytes > MAX_FRAME_BYTES) {
      this.els.warning.textContent = "This message is too large to send. Please shorten it.";
      return;
    }
    this.typingSignal.stop();
    const el = this.list.addMessage({ author: "customer", text });
    this.outbox.push({ clientId, text, el, sent: false });
    this.markPending(el);
    input.value = "";
    this.autosize();
    this.updateComposer();
    this.list.scrollToBottom(); // the customer's own message is always brought into view
    this.flushOutbox();
    input.focus();
  }

  startNewConversation() {
    store.set(KEY_CONVERSATION, null);
    store.set(KEY_START_FRESH, "1");
    this.typingSignal.stop();
    this.conversation = null;
    this.queue = null;
    this.rating = null;
    this.resolvePending = false;
    this.agentTyping.hide();
    // The reply is a `history` with no conversation, which clears the list. Offline, clear it
    // now; the next hello starts fresh (see sendHello).
    if (this.client.send({ type: "conversation.new" })) {
      this.detaching = true;
    } else {
      this.list.clear();
      this.answers.clear();
      this.updateStopButton();
    }
    this.updateConversationState();
  }

  bindControls() {
    const { form, input, stop, newConversation, handoff, startAgain, resolve, resolveYes, resolveNo } = this.els;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    input.addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter is a newline; an IME composing text keeps its Enter.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        this.submit();
      }
    });
    input.addEventListener("input", () => {
      this.autosize();
      this.updateComposer();
      // Staff watching the conversation see that the customer is typing.
      if (input.value.trim() === "") this.typingSignal.stop();
      else if (this.conversation && !this.resolved) this.typingSignal.typed();
    });
    input.addEventListener("blur", () => this.typingSignal.stop());
    handoff.addEventListener("click", () => this.requestHandoff());
    resolve.addEventListener("click", () => this.openResolveConfirm());
    resolveYes.addEventListener("click", () => this.resolveConversation());
    resolveNo.addEventListener("click", () => this.closeResolveConfirm());
    this.els.resolveConfirm.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.closeResolveConfirm();
    });
    startAgain.addEventListener("click", () => {
      this.startNewConversation();
      input.focus();
    });
    stop.addEventListener("click", () => {
      this.client.send({ type: "generation.cancel" }); // the bubble goes on `generation.cancelled`
      input.focus();
    });
    newConversation.addEventListener("click", () => {
      this.startNewConversation();
      input.focus();
    });
  }
}

/** What the banner says about a conversation and its queue, or null for no banner. */
function bannerText(conversation, queue) {
  switch (conversation?.status) {
    case "waiting_for_agent":
      if (queue && queue.agents_online === 0) {
        const hours = queue.support_hours ? ` We're available ${queue.support_hours}.` : "";
        return `No one from our team is online right now.${hours} Your conversation stays in the queue.`;
      }
      if (queue && Number.isInteger(queue.position)) {
        return `You're waiting for a person — you're number ${queue.position} in line.`;
      }
      return "You're waiting for a person…";
    case "with_agent": {
      const name = conversation.agent?.name;
      return name ? `${name} from our support team is here.` : "Someone from our support team is here.";
    }
    default:
      return null;
  }
}

const root = document.getElementById("chat-root");
if (root) new ChatPage(root).start();
