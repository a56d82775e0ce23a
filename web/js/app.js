// The single-page client: sign-in by code, chatrooms, the conversation with streamed
// (or long-polled) replies, usage and billing. Plain DOM, no framework, no build step.
import { Api, ApiError, loadConfig } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "chatroom.token";
const PAGE = 30;

const state = {
  api: null,
  email: "",
  rooms: [],
  room: null, // the open chatroom
  cursor: null, // older history
  busy: false, // a reply is being waited for in the open room
  streaming: null, // {chatroomId, messageId} while a reply streams
  streamSupported: true, // until the deployment shows it has no stream route
  usage: null,
};

// ---------- errors: always a readable line, never a blank page ----------

function showError(error) {
  const text = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  $("error-text").textContent = text;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

/** Runs an action for a UI event, showing whatever it throws. */
function guarded(action) {
  return async (event) => {
    try {
      await action(event);
    } catch (error) {
      showError(error);
    }
  };
}

window.addEventListener("error", (event) => showError(event.message || "Something went wrong."));
window.addEventListener("unhandledrejection", (event) => showError(event.reason || "Something went wrong."));

// ---------- sign-in ----------

function showSignIn() {
  $("app-view").hidden = true;
  $("account").hidden = true;
  $("signin-view").hidden = false;
  $("email-form").hidden = false;
  $("code-form").hidden = true;
  $("email-input").focus();
}

async function sendCode(event) {
  event.preventDefault();
  clearError();
  const email = $("email-input").value.trim();
  if (!email || !email.includes("@")) throw new Error("Enter your e-mail address, like ada@example.com.");
  state.email = email;
  // A new address is signed up on the way; an existing one answers email_taken.
  try {
    await state.api.post("/auth/signup", { email });
  } catch (error) {
    if (!(error instanceof ApiError && error.code === "email_taken")) throw error;
  }
  const sent = await state.api.post("/auth/send-otp", { email });
  $("code-sent").textContent = `We sent a code to ${email}. It is valid for ${Math.round((sent.expires_in || 300) / 60)} minutes.`;
  const dev = $("dev-code");
  if (sent.otp) {
    // Local mode (OTP_DELIVERY=response): the API returns the code instead of e-mailing it.
    dev.replaceChildren("Local mode, no e-mail is sent. Your code: ", Object.assign(document.createElement("strong"), { textContent: sent.otp }));
    dev.hidden = false;
  } else {
    dev.hidden = true;
  }
  $("email-form").hidden = true;
  $("code-form").hidden = false;
  $("code-input").value = "";
  $("code-input").focus();
}

async function verifyCode(event) {
  event.preventDefault();
  clearError();
  const otp = $("code-input").value.trim();
  if (!/^\d{6}$/.test(otp)) throw new Error("The code is the 6 digits from the e-mail.");
  const body = await state.api.post("/auth/verify-otp", { email: state.email, otp });
  localStorage.setItem(TOKEN_KEY, body.access_token);
  state.api.token = body.access_token;
  await enterApp();
}

async function signOut() {
  clearError();
  const token = state.api.token;
  forgetSession();
  if (!token) return;
  // Revokes the token where the API has the route; an older API answers 404, and a token
  // that already stopped working answers 401: signed out either way.
  try {
    await new Api(state.api.config, token).post("/auth/logout");
  } catch (error) {
    if (!(error instanceof ApiError) || ![401, 404, 405].includes(error.status)) showError(error);
  }
}

function forgetSession() {
  localStorage.removeItem(TOKEN_KEY);
  state.api.token = null;
  Object.assign(state, { rooms: [], room: null, cursor: null, busy: false, streaming: null, usage: null });
  $("messages").replaceChildren();
  $("room-list").replaceChildren();
  showSignIn();
}

// ---------- usage and billing ----------

function timeOf(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** "14:00", "00:00 tomorrow" or "00:00 Fri": when the daily count starts again, in local time. */
function resetText(iso) {
  const when = new Date(iso);
  const today = new Date();
  const tomorrow = new Date(today.getFullYear(), today.getMonth(), today.getDate() + 1);
  if (when.toDateString() === today.toDateString()) return timeOf(iso);
  if (when.toDateString() === tomorrow.toDateString()) return `${timeOf(iso)} tomorrow`;
  return `${timeOf(iso)} ${when.toLocaleDateString([], { weekday: "short" })}`;
}

async function refreshUsage() {
  const status = await state.api.get("/subscription/status");
  state.usage = status;
  const usage = $("usage");
  const pro = status.tier === "pro";
  if (pro) {
    usage.textContent = "Pro";
  } else {
    const u = status.usage;
    usage.textContent = `${u.used_today} of ${u.daily_limit} messages today, resets at ${resetText(u.resets_at)}`;
  }
  $("upgrade").hidden = pro;
  $("manage-billing").hidden = !pro;
  if (!pro && status.usage.used_today < status.usage.daily_limit) $("cap-notice").hidden = true;
}

function billingError(error, what) {
  if (error instanceof ApiError && error.code === "billing_unavailable") {
    return new Error(`${what} is not available here: ${error.message.replace(/\.$/, "")}.`);
  }
  return error;
}

async function upgrade() {
  clearError();
  try {
    const body = await state.api.post("/subscribe/pro");
    window.location.assign(body.checkout_url);
  } catch (error) {
    throw billingError(error, "Upgrading");
  }
}

async function manageBilling() {
  clearError();
  try {
    const body = await state.api.post("/subscription/portal");
    window.location.assign(body.portal_url);
  } catch (error) {
    throw billingError(error, "Managing billing");
  }
}

function showCap(error) {
  const notice = $("cap-notice");
  const usage = state.usage?.usage;
  const resets = usage?.resets_at
    || (error.retryAfter ? new Date(Date.now() + error.retryAfter * 1000).toISOString() : null);
  const p = document.createElement("p");
  const used = usage ? `You have used all ${usage.daily_limit} messages for today.` : error.message;
  p.textContent = `${used} They reset at ${resets ? resetText(resets) : "midnight UTC"}. Pro has no daily limit.`;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "primary";
  button.textContent = "Upgrade to Pro";
  button.addEventListener("click", guarded(upgrade));
  notice.replaceChildren(p, button);
  notice.hidden = false;
}

// ---------- chatrooms ----------

async function loadRooms() {
  // A page at a time (100 by default) until next_cursor is null.
  let body = await state.api.get("/chatroom");
  const rooms = [...body.chatrooms];
  while (body.next_cursor) {
    body = await state.api.get(`/chatroom?cursor=${encodeURIComponent(body.next_cursor)}`);
    rooms.push(...body.chatrooms);
  }
  state.rooms = rooms;
  const open = state.room && state.rooms.find((r) => r.id === state.room.id);
  if (open) {
    state.room = open;
    $("chat-title").textContent = roomName(open); // a title the worker gave it
  }
  renderRooms();
}

function roomName(room) {
  return room.name || "New chat";
}

function renderRooms() {
  const list = $("room-list");
  list.replaceChildren(...state.rooms.map(roomItem));
  $("rooms-empty").hidden = state.rooms.length > 0;
}

function roomItem(room) {
  const li = document.createElement("li");
  li.dataset.testid = "chatroom-item";
  li.dataset.id = room.id;
  if (state.room && state.room.id === room.id) li.classList.add("active");
  const open = button(roomName(room), "room-open", () => openRoom(room.id));
  if (state.room && state.room.id === room.id) open.setAttribute("aria-current", "true");
  const rename = button("Rename", "small", () => startRename(li, room));
  rename.setAttribute("aria-label", `Rename ${roomName(room)}`);
  const remove = button("Delete", "small", () => confirmDelete(li, room));
  remove.setAttribute("aria-label", `Delete ${roomName(room)}`);
  li.append(open, rename, remove);
  return li;
}

function button(text, className, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (className) b.className = className;
  b.addEventListener("click", guarded(action));
  return b;
}

function startRename(li, room) {
  const form = document.createElement("form");
  const input = document.createElement("input");
  input.value = room.name || "";
  input.maxLength = 100;
  input.setAttribute("aria-label", "New name");
  form.append(input, Object.assign(document.createElement("button"), { type: "submit", className: "small primary", textContent: "Save" }));
  form.addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    const body = await state.api.patch(`/chatroom/${room.id}`, { name: input.value });
    Object.assign(room, body.chatroom);
    if (state.room && state.room.id === room.id) {
      state.room = body.chatroom;
      $("chat-title").textContent = roomName(body.chatroom);
    }
    renderRooms();
  }));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") renderRooms();
  });
  li.replaceChildren(form);
  input.focus();
  input.select();
}

function confirmDelete(li, room) {
  const text = document.createElement("span");
  text.className = "room-open";
  text.textContent = `Delete “${roomName(room)}”?`;
  const yes = button("Delete", "small primary", async () => {
    await state.api.del(`/chatroom/${room.id}`);
    state.rooms = state.rooms.filter((r) => r.id !== room.id);
    if (state.room && state.room.id === room.id) closeRoom();
    renderRooms();
  });
  li.replaceChildren(text, yes, button("Cancel", "small", renderRooms));
  yes.focus();
}

async function newRoom() {
  clearError();
  const body = await state.api.post("/chatroom", {});
  state.rooms.unshift(body.chatroom);
  await openRoom(body.chatroom.id);
}

function closeRoom() {
  state.room = null;
  $("chat-title").textContent = "Choose or start a chat";
  $("messages").replaceChildren();
  $("composer").hidden = true;
  $("older").hidden = true;
  $("app-view").classList.remove("in-chat");
}

async function openRoom(id) {
  clearError();
  const body = await state.api.get(`/chatroom/${id}`);
  state.room = body.chatroom;
  state.rooms = state.rooms.map((r) => (r.id === id ? body.chatroom : r)); // its latest name
  state.cursor = body.next_cursor;
  setBusy(false);
  // A reply still streaming in another chatroom keeps going, but its Stop is not shown here.
  $("stop").hidden = !(state.streaming && state.streaming.chatroomId === id);
  $("chat-title").textContent = roomName(body.chatroom);
  $("messages").replaceChildren(...body.messages.map(messageItem));
  $("older").hidden = !state.cursor;
  $("composer").hidden = false;
  $("app-view").classList.add("in-chat");
  renderRooms();
  scrollToEnd();
  $("message-input").focus();
  // A reply still on its way (the page was reloaded mid-reply): follow it.
  const last = body.messages[body.messages.length - 1];
  if (last && last.role === "user" && last.status === "pending") {
    followReply(state.room.id, last, findMessage(last.id)).catch(showError);
  }
}

async function loadOlder() {
  if (!state.room || !state.cursor) return;
  const history = $("history");
  const before = history.scrollHeight - history.scrollTop;
  const body = await state.api.get(
    `/chatroom/${state.room.id}/messages?before=${encodeURIComponent(state.cursor)}&limit=${PAGE}`,
  );
  state.cursor = body.next_cursor;
  $("messages").prepend(...body.messages.map(messageItem));
  $("older").hidden = !state.cursor;
  history.scrollTop = history.scrollHeight - before; // keep the reader's place
}

// ---------- messages ----------

function messageItem(message) {
  const li = document.createElement("li");
  li.className = "message";
  li.dataset.testid = "message";
  li.dataset.id = message.id;
  const who = document.createElement("span");
  who.className = "who";
  const body = document.createElement("div");
  body.className = "body";
  const mark = document.createElement("span");
  mark.className = "mark";
  li.append(who, body, mark);
  updateMessage(li, message);
  return li;
}

/** Shows `message` (an API message) in `li`: text, role, status and its mark. */
function updateMessage(li, message) {
  const model = message.role === "model";
  li.dataset.role = message.role;
  li.dataset.id = message.id;
  const [who, body, mark] = li.children;
  who.textContent = model ? "Assistant" : "You";
  if (model) renderMarkdown(body, message.content);
  else body.textContent = message.content; // the user's own words, shown as typed
  let status = message.status;
  mark.replaceChildren();
  if (model && message.finish_reason === "cancelled") {
    status = "cancelled";
    mark.textContent = "Stopped: the reply was cut short.";
  } else if (model && message.finish_reason === "MAX_TOKENS") {
    mark.textContent = "The reply reached its length limit.";
  } else if (status === "failed") {
    mark.append(`Not answered${message.failure_reason ? `: ${message.failure_reason}` : ""}. `);
    mark.append(button("Retry", "small", () => retry(li, message)));
    mark.lastChild.dataset.testid = "retry";
  } else if (status === "blocked") {
    mark.textContent = "Blocked: the model's safety rules refused this message.";
  } else if (status === "pending") {
    mark.textContent = "Waiting for the reply…";
  }
  li.dataset.status = status;
}

function findMessage(id) {
  return $("messages").querySelector(`li[data-id="${CSS.escape(id)}"]`);
}

function scrollToEnd() {
  const history = $("history");
  history.scrollTop = history.scrollHeight;
}

function setBusy(busy) {
  state.busy = busy;
  $("send-message").disabled = busy;
}

async function send(event) {
  event?.preventDefault();
  clearError();
  const input = $("message-input");
  const content = input.value.trim();
  if (!content || state.busy || !state.room) return;
  setBusy(true);
  try {
    await sendContent(content, () => { input.value = ""; });
  } finally {
    setBusy(false);
  }
}

async function sendContent(content, onAccepted) {
  const room = state.room;
  let message;
  try {
    const key = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
    message = (await state.api.post(`/chatroom/${room.id}/message`, { content }, { "idempotency-key": key })).message;
  } catch (error) {
    if (error instanceof ApiError && error.code === "daily_limit_reached") {
      await refreshUsage().catch(() => {});
      showCap(error);
      return;
    }
    throw error;
  }
  onAccepted();
  const li = messageItem(message);
  $("messages").append(li);
  scrollToEnd();
  refreshUsage().catch(showError);
  await followReply(room.id, message, li);
}

async function retry(li, message) {
  if (state.busy) return;
  setBusy(true);
  try {
    await sendContent(message.content, () => {});
  } finally {
    setBusy(false);
  }
}

/** Waits for the reply to `message`: streamed when the API can, long-polled otherwise. */
async function followReply(chatroomId, message, userLi) {
  const replyLi = messageItem({ id: `pending-${message.id}`, role: "model", content: "", status: "streaming" });
  $("messages").append(replyLi);
  scrollToEnd();
  let result = null;
  if (state.streamSupported) {
    result = await streamReply(chatroomId, message, replyLi);
  }
  while (!result) {
    const body = await state.api.get(`/chatroom/${chatroomId}/messages/${message.id}?wait=20`);
    if (body.message.status !== "pending") result = body;
    if (!state.room || state.room.id !== chatroomId) return; // the user moved on
  }
  if (!replyLi.isConnected) return;
  updateMessage(userLi, result.message);
  if (result.reply) updateMessage(replyLi, result.reply);
  else replyLi.remove();
  scrollToEnd();
  // Not awaited: the composer is free again as soon as the reply is shown.
  refreshUsage().catch(showError);
  loadRooms() // activity order, and a title the worker gave the chatroom
    .then(() => {
      // The worker titles a new chatroom just after its first reply: look once more.
      if (state.rooms.some((r) => r.id === chatroomId && !r.name)) {
        setTimeout(() => { if (state.api.token) loadRooms().catch(showError); }, 3000);
      }
    })
    .catch(showError);
}

async function streamReply(chatroomId, message, replyLi) {
  let text = "";
  const body = replyLi.querySelector(".body");
  let frame = 0;
  const paint = () => {
    frame = 0;
    renderMarkdown(body, text);
    scrollToEnd();
  };
  state.streaming = { chatroomId, messageId: message.id };
  $("stop").hidden = false;
  try {
    return await state.api.stream(chatroomId, message.id, {
      onDelta: (delta) => {
        text += delta;
        if (!frame) frame = requestAnimationFrame(paint);
      },
      onReset: () => {
        text = "";
        if (!frame) frame = requestAnimationFrame(paint);
      },
    });
  } catch (error) {
    if (error instanceof ApiError && error.code === "stream_unsupported") {
      state.streamSupported = false;
      return null;
    }
    throw error;
  } finally {
    if (frame) cancelAnimationFrame(frame);
    state.streaming = null;
    $("stop").hidden = true;
  }
}

async function stop() {
  const current = state.streaming;
  if (!current) return;
  $("stop").disabled = true;
  try {
    await state.api.post(`/chatroom/${current.chatroomId}/messages/${current.messageId}/cancel`);
  } catch (error) {
    // Finished meanwhile: the stream's `done` shows the whole reply.
    if (!(error instanceof ApiError && error.code === "already_finished")) throw error;
  } finally {
    $("stop").disabled = false;
  }
}

// ---------- start ----------

async function enterApp() {
  $("signin-view").hidden = true;
  $("app-view").hidden = false;
  $("account").hidden = false;
  closeRoom();
  await Promise.all([loadRooms(), refreshUsage()]);
  if (state.rooms.length > 0 && window.matchMedia("(min-width: 800px)").matches) {
    await openRoom(state.rooms[0].id);
  }
}

function wire() {
  $("email-form").addEventListener("submit", guarded(sendCode));
  $("code-form").addEventListener("submit", guarded(verifyCode));
  $("change-email").addEventListener("click", () => showSignIn());
  $("sign-out").addEventListener("click", guarded(signOut));
  $("error-close").addEventListener("click", clearError);
  $("upgrade").addEventListener("click", guarded(upgrade));
  $("manage-billing").addEventListener("click", guarded(manageBilling));
  $("new-chatroom").addEventListener("click", guarded(newRoom));
  $("older").addEventListener("click", guarded(loadOlder));
  $("back").addEventListener("click", () => closeRoom());
  $("composer").addEventListener("submit", guarded(send));
  $("stop").addEventListener("click", guarded(stop));
  $("message-input").addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a new line (and Enter that confirms an IME choice is neither).
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      guarded(send)();
    }
  });
}

async function start() {
  wire();
  const config = await loadConfig();
  state.api = new Api(config, localStorage.getItem(TOKEN_KEY));
  state.api.onUnauthorized = () => {
    forgetSession();
    showError("Your session has ended. Sign in again.");
  };
  if (state.api.token) {
    await enterApp();
  } else {
    showSignIn();
  }
}

start().catch((error) => {
  showError(error);
  if (!state.api || !state.api.token) showSignIn();
});
