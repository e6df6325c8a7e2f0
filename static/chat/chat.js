/*
 * Customer chat page. Speaks the WebSocket protocol in docs/protocol.md; no build step, no
 * dependencies. The server is the source of truth: every `history` frame redraws the whole list.
 * Customer, bot and agent text is only ever set as text (textContent / Text nodes), never as HTML.
 */
(() => {
  "use strict";

  const root = document.getElementById("chat-root");
  if (!root) return;

  const $ = (id) => document.getElementById(id);
  const els = {
    messages: $("messages"),
    form: $("composer"),
    input: $("composer-input"),
    send: $("send-button"),
    stop: $("stop-button"),
    newConversation: $("new-conversation-button"),
    status: $("connection-status"),
    counter: $("composer-counter"),
    warning: $("composer-warning"),
  };

  const WS_PATH = root.dataset.wsPath || "/ws/chat/";
  const MAX_CHARS = parseInt(root.dataset.maxChars, 10) || 2000;
  const MAX_FRAME_BYTES = 16 * 1024; // the server closes the socket (1009) above this
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 30000;
  const KEY_CONVERSATION = "chat.conversationId";
  // Set by "New conversation" until the next message creates one: a plain `hello` with null
  // would re-attach the visitor's latest conversation, i.e. the one the customer just left.
  const KEY_START_FRESH = "chat.startFresh";

  const AUTHOR_LABELS = { customer: "You", bot: "Assistant", agent: "Support agent", system: "" };
  const STATUS_TEXT = {
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    expired: "Session expired",
  };
  // Error codes that refuse a `message.send` (nothing stored): the text goes back to the customer.
  const REFUSED_SEND_CODES = new Set([
    "empty_message", "message_too_long", "invalid_client_id",
    "conversation_closed", "conversation_not_found", "rate_limited",
  ]);
  const ERROR_FALLBACKS = {
    conversation_closed: "This conversation has been closed. Press “New conversation” to start again.",
    conversation_not_found: "We couldn't find that conversation. Press “New conversation” to start again.",
    assistant_unavailable: "Your message was received, but the assistant is unavailable right now.",
    rate_limited: "You're sending messages too quickly. Please wait a moment.",
    message_too_long: `Messages can be at most ${MAX_CHARS} characters.`,
  };

  let socket = null;
  let ready = false;            // a `history` has arrived on the current socket
  let expired = false;          // closed with 4401: no reconnecting
  let retryDelay = RETRY_MIN_MS;
  let retryTimer = null;
  let historiesToSkip = 0;      // see sendHello()
  let helloRetried = false;
  const outbox = [];            // customer messages not yet saved: {clientId, text, el, sent}
  const generations = new Map(); // generation_id -> bot bubble while queued / thinking / streaming
  const attempts = new Map(); // generation_id -> the latest attempt the page has seen frames of
  const ended = new Set(); // generation ids that are done, failed or cancelled (they never run again)
  const ENDS = new Set(["answer.done", "generation.failed", "generation.cancelled"]);

  // --- storage (may be unavailable: the session cookie still finds the latest conversation) ----
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

  // --- small DOM helpers ----------------------------------------------------------------------
  function make(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text != null) el.textContent = text;
    return el;
  }

  function isNearBottom() {
    const m = els.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function scrollToBottom() {
    els.messages.scrollTop = els.messages.scrollHeight;
  }

  // Keeps the reader where they are if they scrolled up; follows the conversation otherwise.
  function appendToList(el) {
    const follow = isNearBottom();
    els.messages.append(el);
    if (follow) scrollToBottom();
  }

  function formatTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function findMessage(id) {
    return els.messages.querySelector(`[data-message-id="${CSS.escape(String(id))}"]`);
  }

  // --- rendering ------------------------------------------------------------------------------
  function renderMessage(message, { generationId = null } = {}) {
    const known = Object.prototype.hasOwnProperty.call(AUTHOR_LABELS, message.author);
    const author = known ? message.author : "system";
    const el = make("div", `message message--${author}`);
    if (AUTHOR_LABELS[author]) el.append(make("div", "message__author", AUTHOR_LABELS[author]));
    el.append(make("div", "message__text", message.text || ""));
    el.append(make("div", "message__meta"));
    const genId = generationId || message.generation_id;
    if (genId) el.dataset.generationId = genId;
    if (message.id != null) markSaved(el, message);
    appendToList(el);
    return el;
  }

  function markSaved(el, message) {
    el.dataset.messageId = message.id;
    el.classList.remove("message--pending", "message--failed");
    const meta = el.querySelector(".message__meta");
    meta.textContent = formatTime(message.created_at);
    if (message.created_at) meta.title = new Date(message.created_at).toLocaleString();
  }

  function markPending(el) {
    el.classList.add("message--pending");
    el.querySelector(".message__meta").textContent = ready ? "Sending…" : "Waiting for connection…";
  }

  function showNotice(text, kind = "info") {
    appendToList(make("div", `notice notice--${kind}`, text));
  }

  function setStatus(state) {
    els.status.dataset.state = state;
    els.status.querySelector(".status__text").textContent = STATUS_TEXT[state];
  }

  // --- generations (the bot's answer in progress) -----------------------------------------------
  function generationBubble(id) {
    let el = generations.get(id);
    if (!el) {
      el = renderMessage({ author: "bot", text: "" }, { generationId: id });
      el.classList.add("message--streaming");
      el.setAttribute("aria-busy", "true"); // screen readers announce the answer once, when done
      generations.set(id, el);
      updateStopButton();
    }
    return el;
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

  function setGenerationState(id, state, position = null) {
    const el = generationBubble(id);
    // Frames can overtake each other after a reconnect: never step back from a later state.
    if (el.dataset.state === "streaming") return;
    if (state === "queued" && el.dataset.state === "thinking") return;
    el.dataset.state = state;
    if (state === "queued") {
      const label = position == null ? "Waiting for the assistant…" : `You're number ${position} in line…`;
      setIndicator(el, "queue-status", label);
    } else {
      setIndicator(el, "thinking", "Thinking…");
    }
  }

  // A generation whose worker (or engine) was lost mid-answer runs again: its frames carry the
  // attempt number. A later attempt starts the bubble over; a lost attempt's late frames are dropped.
  function followAttempt(id, attempt) {
    const seen = attempts.get(id) ?? 0;
    if (attempt < seen) return false;
    if (attempt > seen) {
      attempts.set(id, attempt);
      const el = generations.get(id);
      if (seen > 0 && el) {
        el.querySelector(".message__text").textContent = "";
        setIndicator(el, null);
        delete el.dataset.state;
      }
    }
    return true;
  }

  function appendDelta(id, text) {
    const el = generationBubble(id);
    if (el.dataset.state !== "streaming") {
      el.dataset.state = "streaming";
      setIndicator(el, null);
    }
    const follow = isNearBottom();
    el.querySelector(".message__text").append(String(text ?? "")); // a Text node, never HTML
    if (follow) scrollToBottom();
  }

  function finishAnswer(id, message) {
    const el = generations.get(id);
    generations.delete(id);
    updateStopButton();
    if (!message) return;
    if (findMessage(message.id)) { el?.remove(); return; } // already drawn from a history
    if (!el) { renderMessage(message); return; }
    setIndicator(el, null);
    el.querySelector(".message__text").textContent = message.text || "";
    el.classList.remove("message--streaming");
    el.removeAttribute("aria-busy");
    delete el.dataset.state;
    markSaved(el, message);
  }

  function dropGeneration(id) {
    generations.get(id)?.remove();
    generations.delete(id);
    updateStopButton();
  }

  function updateStopButton() {
    els.stop.hidden = generations.size === 0;
  }

  // --- socket ---------------------------------------------------------------------------------
  function wsUrl() {
    if (/^wss?:\/\//.test(WS_PATH)) return WS_PATH;
    return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}${WS_PATH}`;
  }

  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  function connect() {
    retryTimer = null;
    const ws = new WebSocket(wsUrl());
    socket = ws;
    // Handlers check `ws === socket` so a stale socket can never touch the page.
    ws.addEventListener("open", () => {
      if (ws !== socket) return;
      helloRetried = false;
      sendHello(store.get(KEY_CONVERSATION));
    });
    ws.addEventListener("message", (event) => { if (ws === socket) handleFrame(event.data); });
    ws.addEventListener("close", (event) => { if (ws === socket) onClose(event); });
  }

  function sendHello(conversationId) {
    ready = false;
    send({ type: "hello", conversation_id: conversationId || null });
    if (!conversationId && store.get(KEY_START_FRESH)) {
      // The customer asked for a new conversation: detach from the one `hello` re-attaches and
      // draw only the second (empty) history, so the old conversation never flashes up.
      send({ type: "conversation.new" });
      historiesToSkip = 1;
    }
  }

  function onClose(event) {
    socket = null;
    ready = false;
    historiesToSkip = 0;
    for (const entry of outbox) entry.sent = false; // resent (same client_id) after the next history
    if (event.code === 4401) {
      expired = true;
      setStatus("expired");
      showNotice("Your chat session expired — reload the page.", "error");
      updateComposer();
      return;
    }
    setStatus(navigator.onLine === false ? "offline" : "reconnecting");
    updateComposer();
    retryTimer = setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, RETRY_MAX_MS);
  }

  function handleFrame(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (!frame || typeof frame !== "object") return;
    // Ids may be numbers or strings: compare them as strings everywhere.
    const id = frame.generation_id == null ? null : String(frame.generation_id);
    if (id !== null) {
      // An ended answer's late frames (a lost run's, or a requeue that raced a stop) are dropped.
      // Its end always counts, from whichever run it comes: the stored answer replaces the text.
      if (ENDS.has(frame.type)) ended.add(id);
      else if (ended.has(id)) return;
      else if (Number.isInteger(frame.attempt) && !followAttempt(id, frame.attempt)) return;
    }
    switch (frame.type) {
      case "history": onHistory(frame); break;
      case "message.saved": onSaved(frame); break;
      case "generation.queued": setGenerationState(id, "queued", frame.position); break;
      case "generation.started":
      case "answer.thinking": setGenerationState(id, "thinking"); break;
      case "answer.delta": appendDelta(id, frame.text); break;
      case "answer.done": finishAnswer(id, frame.message); break;
      case "generation.failed":
        dropGeneration(id);
        showNotice(frame.detail || "Sorry, the assistant couldn't answer that.", "error");
        break;
      case "generation.cancelled":
        dropGeneration(id);
        showNotice("Answer stopped", "small");
        break;
      case "message.new":
        // An agent's or a system message that arrives live (e.g. "an agent joined").
        if (frame.message && !els.messages.querySelector(`[data-message-id="${CSS.escape(String(frame.message.id))}"]`)) {
          renderMessage(frame.message);
        }
        break;
      case "error": onError(frame); break;
      default: break; // `pong` and anything newer than this page
    }
  }

  function onHistory(frame) {
    if (historiesToSkip > 0) { historiesToSkip -= 1; return; }
    ready = true;
    retryDelay = RETRY_MIN_MS; // reset here, not on open: a socket closed right after open still backs off
    setStatus("connected");
    const conversation = frame.conversation;
    store.set(KEY_CONVERSATION, conversation ? conversation.id : null);
    if (conversation) store.set(KEY_START_FRESH, null);

    els.messages.replaceChildren();
    generations.clear();
    attempts.clear();
    const messages = Array.isArray(frame.messages) ? frame.messages : [];
    if (messages.length === 0 && outbox.length === 0) {
      showNotice("Hi! How can we help you today?", "welcome");
    }
    for (const message of messages) renderMessage(message);
    const generation = frame.generation;
    if (generation) {
      // The queue position is not part of history; the next `generation.queued` brings it.
      setGenerationState(String(generation.id), generation.status === "pending" ? "queued" : "thinking");
    }
    for (const entry of outbox) {
      els.messages.append(entry.el);
      markPending(entry.el);
    }
    updateStopButton();
    updateComposer();
    scrollToBottom();
    flushOutbox();
  }

  function onSaved(frame) {
    const { message, conversation } = frame;
    if (conversation && conversation.id) {
      store.set(KEY_CONVERSATION, conversation.id);
      store.set(KEY_START_FRESH, null);
    }
    const index = outbox.findIndex((entry) => entry.clientId === frame.client_id);
    const el = index >= 0 ? outbox.splice(index, 1)[0].el : null;
    if (!message) return;
    // A resend after reconnect: the history already drew this message.
    const existing = findMessage(message.id);
    if (existing) {
      if (el && el !== existing) el.remove();
      return;
    }
    if (el) markSaved(el, message);
    else renderMessage(message);
  }

  function onError(frame) {
    if (frame.code === "conversation_not_found" && !ready && !helloRetried) {
      // The stored conversation is gone (or was never this visitor's): fall back to the latest.
      helloRetried = true;
      store.set(KEY_CONVERSATION, null);
      sendHello(null);
      return;
    }
    // Errors don't name the frame they refuse. The server answers frames in order, so a refusal
    // of a message belongs to the oldest message sent and not yet saved.
    if (REFUSED_SEND_CODES.has(frame.code)) {
      const index = outbox.findIndex((entry) => entry.sent);
      if (index >= 0) returnToComposer(outbox.splice(index, 1)[0]);
    }
    // For `assistant_unavailable` the message was saved (message.saved came first) and stays.
    showNotice(frame.detail || ERROR_FALLBACKS[frame.code] || "Something went wrong.", "error");
  }

  // A refused message is not lost: its text goes back into an empty composer, else stays marked.
  function returnToComposer(entry) {
    if (els.input.value.trim() === "") {
      entry.el.remove();
      els.input.value = entry.text;
      autosize();
      updateComposer();
    } else {
      entry.el.classList.remove("message--pending");
      entry.el.classList.add("message--failed");
      entry.el.querySelector(".message__meta").textContent = "Not sent";
    }
  }

  function flushOutbox() {
    if (!ready) return;
    for (const entry of outbox) {
      if (entry.sent) continue;
      entry.sent = send({ type: "message.send", text: entry.text, client_id: entry.clientId });
      if (entry.sent) markPending(entry.el);
    }
  }

  // --- composer -------------------------------------------------------------------------------
  // Code points, like the server's len(); a UTF-16 length would count emoji twice.
  const charCount = (text) => [...text].length;

  function newClientId() {
    if (window.crypto?.randomUUID) return crypto.randomUUID(); // hex and "-" only
    const bytes = new Uint8Array(16);
    if (window.crypto?.getRandomValues) crypto.getRandomValues(bytes);
    else for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function updateComposer() {
    const text = els.input.value;
    const count = charCount(text);
    const over = count > MAX_CHARS;
    els.counter.textContent = `${count} / ${MAX_CHARS}`;
    els.counter.classList.toggle("composer__counter--warn", !over && count >= MAX_CHARS * 0.9);
    els.counter.classList.toggle("composer__counter--over", over);
    els.input.setAttribute("aria-invalid", String(over));
    let warning = "";
    if (expired) warning = "Your chat session expired — reload the page.";
    else if (over) warning = `Too long: please shorten your message to ${MAX_CHARS} characters.`;
    else if (!ready && text.trim()) warning = "Not connected — your message will be sent when we reconnect.";
    if (els.warning.textContent !== warning) els.warning.textContent = warning;
    els.send.disabled = expired || over || text.trim() === "";
    els.newConversation.disabled = expired;
  }

  function autosize() {
    els.input.style.height = "auto";
    els.input.style.height = `${els.input.scrollHeight}px`; // capped by max-height in CSS
  }

  function submit() {
    const text = els.input.value;
    if (expired || text.trim() === "" || charCount(text) > MAX_CHARS) { updateComposer(); return; }
    const clientId = newClientId();
    const frameBytes = new TextEncoder().encode(
      JSON.stringify({ type: "message.send", text, client_id: clientId })).length;
    if (frameBytes > MAX_FRAME_BYTES) {
      els.warning.textContent = "This message is too large to send. Please shorten it.";
      return;
    }
    const el = renderMessage({ author: "customer", text });
    outbox.push({ clientId, text, el, sent: false });
    markPending(el);
    els.input.value = "";
    autosize();
    updateComposer();
    scrollToBottom(); // the customer's own message is always brought into view
    flushOutbox();
    els.input.focus();
  }

  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });

  els.input.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a newline; an IME composing text keeps its Enter.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      submit();
    }
  });

  els.input.addEventListener("input", () => {
    autosize();
    updateComposer();
  });

  els.stop.addEventListener("click", () => {
    send({ type: "generation.cancel" }); // the bubble goes on `generation.cancelled`
    els.input.focus();
  });

  els.newConversation.addEventListener("click", () => {
    store.set(KEY_CONVERSATION, null);
    store.set(KEY_START_FRESH, "1");
    // The reply is a `history` with no conversation, which clears the list. Offline, clear it
    // now; the next hello starts fresh (see sendHello).
    if (!send({ type: "conversation.new" })) {
      els.messages.replaceChildren();
      generations.clear();
      updateStopButton();
    }
    els.input.focus();
  });

  // Don't wait out a long backoff once the browser says the network is back.
  window.addEventListener("online", () => {
    if (retryTimer !== null) {
      clearTimeout(retryTimer);
      retryDelay = RETRY_MIN_MS;
      connect();
    }
  });
  window.addEventListener("offline", () => { if (!ready) setStatus("offline"); });

  updateComposer();
  connect();
})();
