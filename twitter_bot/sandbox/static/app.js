// twitter-bot sandbox page: renders the sandbox's state and its live events (SSE).
"use strict";

const TYPING_MS = 8000;
const STEP_LABELS = {
  accepted: "accepted",
  queued: "queued",
  read: "read",
  typing: "typing",
  gateway: "gateway",
  media: "media",
  sent: "sent",
  echo: "echo",
  "x-refused": "X refused",
};

const state = {
  user: null,
  bots: [],
  conversations: {},
  trips: new Map(),
  info: {},
  crc: null,
  current: null,
  typingUntil: {},
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function botById(userId) {
  return state.bots.find((bot) => bot.user_id === userId);
}

function initials(name) {
  const parts = name.split(/[^A-Za-z0-9]+/).filter(Boolean);
  return ((parts[0] || "?")[0] + (parts[1] ? parts[1][0] : "")).toUpperCase();
}

function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

function avatar(bot, node = el("div", { class: "avatar" })) {
  node.textContent = initials(bot.bot_id);
  node.style.background = `hsl(${hue(bot.bot_id)} 70% 45%)`;
  return node;
}

function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// -- rendering -------------------------------------------------------------------------

function renderBots() {
  const list = $("bots");
  list.replaceChildren();
  for (const bot of state.bots) {
    const messages = state.conversations[bot.user_id] || [];
    const last = messages[messages.length - 1];
    const item = el("li", { class: "bot" + (bot.user_id === state.current ? " selected" : ""), "data-user-id": bot.user_id }, [
      avatar(bot),
      el("div", {}, [
        el("div", { class: "name", text: bot.bot_id }),
        el("div", { class: "preview", text: last ? last.text || "📷 media" : `user id ${bot.user_id}` }),
      ]),
    ]);
    item.addEventListener("click", () => select(bot.user_id));
    list.append(item);
  }
}

function messageNode(message) {
  const mine = message.from === "user";
  const node = el("li", { class: `msg ${mine ? "user" : "bot"}`, "data-id": message.id || "" });
  if (message.media) {
    const isVideo = message.media.category === "dm_video" || message.media.type.startsWith("video/");
    node.append(isVideo
      ? el("video", { src: message.media.url, controls: true })
      : el("img", { src: message.media.url, alt: "media from the bot" }));
  }
  if (message.text) node.append(el("div", { class: "bubble", text: message.text }));
  if (mine && message.payload) node.append(el("div", { class: "tapped", text: `tapped option · payload "${message.payload}"` }));
  const meta = [clock(message.at)];
  if (!mine && message.api) meta.push(`DM API v${message.api}`);
  node.append(el("div", { class: "meta", text: meta.join(" · ") }));
  return node;
}

function typingNode() {
  return el("li", { class: "msg bot typing", id: "typing", "aria-label": "typing" }, [
    el("div", { class: "bubble" }, [el("span", { class: "dot" }), el("span", { class: "dot" }), el("span", { class: "dot" })]),
  ]);
}

function renderConversation() {
  const bot = botById(state.current);
  const list = $("messages");
  list.replaceChildren();
  $("text").disabled = $("send").disabled = !bot;
  if (!bot) {
    $("head-name").textContent = "Pick a bot";
    $("head-handle").textContent = "";
    list.append(el("li", { class: "empty", text: "Pick a bot account on the left to start a conversation." }));
    renderQuickReplies([]);
    return;
  }
  avatar(bot, $("head-avatar"));
  $("head-name").textContent = bot.bot_id;
  $("head-handle").textContent = `X user id ${bot.user_id} · you are ${state.user ? state.user.name : "?"}`;
  const messages = state.conversations[bot.user_id] || [];
  if (!messages.length) {
    list.append(el("li", { class: "empty", text: 'Say something. The echo bot answers "echo: …"; try "menu", "picture", "slow" or "help".' }));
  }
  for (const message of messages) list.append(messageNode(message));
  if ((state.typingUntil[bot.user_id] || 0) > Date.now()) list.append(typingNode());
  const last = messages[messages.length - 1];
  renderQuickReplies(last && last.from === "bot" ? last.quick_replies || [] : []);
  list.scrollTop = list.scrollHeight;
}

function renderQuickReplies(options) {
  const box = $("quick-replies");
  box.replaceChildren();
  for (const option of options) {
    const button = el("button", { type: "button", class: "quick-reply", "data-payload": option.metadata || "" }, [
      document.createTextNode(option.label),
      option.description ? el("small", { text: option.description }) : null,
    ]);
    button.addEventListener("click", () => send(option.label, option.metadata || ""));
    box.append(button);
  }
}

function tripNode(trip) {
  const bot = botById(trip.bot_user_id);
  const steps = el("ol", { class: "steps" });
  for (const step of trip.steps) {
    steps.append(el("li", { class: "step" + (step.ok ? "" : " bad"), "data-step": step.name }, [
      el("span", { class: "mark", text: step.ok ? "✓" : "✗" }),
      el("span", { class: "label", text: STEP_LABELS[step.name] || step.name }),
      el("span", { class: "detail", text: step.detail }),
      el("span", { class: "ms", text: `+${Math.round(step.ms)} ms` }),
    ]));
  }
  return el("li", { class: "trip", "data-event-id": trip.event_id }, [
    el("div", { class: "trip-title", text: `“${trip.text}” → ${bot ? bot.bot_id : trip.bot_user_id}` }),
    el("div", { class: "trip-id", text: `event ${trip.event_id} · ${clock(trip.started_at)}` }),
    steps,
  ]);
}

function renderTrips() {
  const list = $("trips");
  list.replaceChildren();
  const trips = [...state.trips.values()].reverse();
  if (!trips.length) list.append(el("li", { class: "empty", text: "Each message you send shows its trip here." }));
  for (const trip of trips) list.append(tripNode(trip));
}

function renderStatus() {
  const crc = $("crc");
  if (state.crc) {
    crc.textContent = `CRC ${state.crc.ok ? "✓" : "✗"} ${clock(state.crc.at)} (${state.crc.ms} ms)`;
    crc.title = state.crc.detail;
    crc.className = "pill " + (state.crc.ok ? "ok" : "bad");
  }
  const info = $("info");
  info.replaceChildren();
  const rows = [
    ["daemon", state.info.daemon_url],
    ["webhook", state.info.webhook_url],
    ["X stand-in", state.info.x_url],
    ["bot", state.info.gateway],
    ["queue", state.info.queue],
    ["DM API", state.info.dm_api],
  ];
  for (const [name, value] of rows) if (value) info.append(el("dt", { text: name }), el("dd", { text: value }));
}

function render() {
  renderBots();
  renderConversation();
  renderTrips();
  renderStatus();
}

// -- actions ---------------------------------------------------------------------------

function select(userId) {
  state.current = userId;
  history.replaceState(null, "", `#${userId}`);
  renderBots();
  renderConversation();
  $("text").focus();
}

async function send(text, quickReply = null) {
  if (!state.current || !text) return;
  const response = await fetch("/api/messages", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ bot_user_id: state.current, text, quick_reply: quickReply }),
  });
  if (!response.ok) alert(`The sandbox refused the message: ${await response.text()}`);
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  input.value = "";
  send(text);
});

$("crc-now").addEventListener("click", () => fetch("/api/crc", { method: "POST" }));

// -- live events -----------------------------------------------------------------------

const handlers = {
  snapshot(event) {
    state.user = event.user;
    state.bots = event.bots;
    state.conversations = event.conversations;
    state.trips = new Map(event.trips.map((trip) => [trip.event_id, trip]));
    state.info = event.info;
    state.crc = event.crc;
    const wanted = location.hash.slice(1);
    if (!botById(state.current)) state.current = botById(wanted) ? wanted : (state.bots[0] || {}).user_id || null;
    render();
  },
  message(event) {
    (state.conversations[event.bot_user_id] ||= []).push(event.message);
    if (event.message.from === "bot") delete state.typingUntil[event.bot_user_id];
    renderBots();
    if (event.bot_user_id === state.current) renderConversation();
  },
  typing(event) {
    state.typingUntil[event.bot_user_id] = Date.now() + TYPING_MS;
    if (event.bot_user_id === state.current) renderConversation();
    setTimeout(() => event.bot_user_id === state.current && renderConversation(), TYPING_MS + 50);
  },
  trip(event) {
    state.trips.set(event.trip.event_id, event.trip);
    renderTrips();
  },
  crc(event) {
    state.crc = event.crc;
    renderStatus();
  },
};

const source = new EventSource("/api/events");
source.onopen = () => {
  $("connection").textContent = "live";
  $("connection").className = "pill ok";
};
source.onerror = () => {
  $("connection").textContent = "reconnecting…";
  $("connection").className = "pill bad";
};
source.onmessage = (message) => {
  const event = JSON.parse(message.data);
  const handle = handlers[event.type];
  if (handle) handle(event);
};
