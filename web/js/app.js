// The single-page client: sign-in by code, chatrooms, the conversation with streamed
// (or long-polled) replies, regenerate and edit, per-chat instructions and model, search,
// usage and billing, export and account deletion. Plain DOM, no framework, no build step.
import { Api, ApiError, idempotencyKey, loadConfig } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "chatroom.token";
const PAGE = 30;

const state = {
  api: null,
  email: "",
  rooms: [],
  roomsChanged: 0, // bumped by every change made here to `rooms` (see loadRooms)
  room: null, // the open chatroom
  cursor: null, // older history
  busy: false, // a reply is being waited for in the open room
  streaming: null, // {chatroomId, messageId} while a reply streams
  streamSupported: true, // until the deployment shows it has no stream route
  usage: null,
  stick: true, // the history follows new text (the reader has not scrolled up)
  editing: null, // {li, message} while the newest user message is being edited
  models: null, // GET /models, once per session
  search: null, // {q, cursor} of the results shown
};

/** Each message element's API message (its raw text for Copy and Edit). */
const messageData = new WeakMap();

// ---------- errors: always a readable line, never a blank page ----------

function showError(error) {
  const text = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  $("error-text").textContent = text;
  $("error").hidden = false;
  // A modal dialog keeps the rest of the page out of reach: say it there too.
  if ($("delete-dialog").open) {
    $("delete-error").textContent = text;
    $("delete-error").hidden = false;
  }
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
  $("delete-error").hidden = true;
  $("delete-error").textContent = "";
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
  Object.assign(state, {
    rooms: [], room: null, cursor: null, busy: false, streaming: null, usage: null,
    editing: null, models: null, search: null, email: "",
  });
  $("messages").replaceChildren();
  $("room-list").replaceChildren();
  $("search-input").value = "";
  closeSearch();
  closeSettings();
  closeMenu();
  if ($("delete-dialog").open) $("delete-dialog").close();
  $("signin-notice").hidden = true;
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
  let rooms;
  // A list asked for before a chatroom was created, renamed or deleted here may not show
  // that change: ask again rather than undo it (New chat clicked just after sign-in).
  for (let asked = -1; asked !== state.roomsChanged; ) {
    asked = state.roomsChanged;
    // A page at a time (100 by default) until next_cursor is null.
    let body = await state.api.get("/chatroom");
    rooms = [...body.chatrooms];
    while (body.next_cursor) {
      body = await state.api.get(`/chatroom?cursor=${encodeURIComponent(body.next_cursor)}`);
      rooms.push(...body.chatrooms);
    }
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
    state.roomsChanged += 1;
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
    state.roomsChanged += 1;
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
  state.roomsChanged += 1;
  await openRoom(body.chatroom.id);
}

function closeRoom() {
  state.room = null;
  state.editing = null;
  $("chat-title").textContent = "Choose or start a chat";
  $("messages").replaceChildren();
  $("composer").hidden = true;
  $("older").hidden = true;
  $("chat-settings").hidden = true;
  closeSettings();
  showSettingsSummary();
  $("app-view").classList.remove("in-chat");
}

async function openRoom(id) {
  clearError();
  const body = await state.api.get(`/chatroom/${id}`);
  state.room = body.chatroom;
  state.rooms = state.rooms.map((r) => (r.id === id ? body.chatroom : r)); // its latest name
  state.cursor = body.next_cursor;
  state.editing = null;
  closeSettings();
  $("messages").replaceChildren(...body.messages.map(messageItem));
  setBusy(false);
  // A reply still streaming in another chatroom keeps going, but its Stop is not shown here.
  $("stop").hidden = !(state.streaming && state.streaming.chatroomId === id);
  $("chat-title").textContent = roomName(body.chatroom);
  $("older").hidden = !state.cursor;
  $("composer").hidden = false;
  $("chat-settings").hidden = false;
  showSettingsSummary();
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
  const actions = document.createElement("div");
  actions.className = "actions";
  li.append(who, body, mark, actions);
  updateMessage(li, message);
  return li;
}

/** Shows `message` (an API message) in `li`: text, role, status and its mark. */
function updateMessage(li, message) {
  const model = message.role === "model";
  li.dataset.role = message.role;
  li.dataset.id = message.id;
  messageData.set(li, message);
  const [who, body, mark, actions] = li.children;
  who.textContent = model ? "Assistant" : message.edited_at ? "You (edited)" : "You";
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
  actions.replaceChildren();
  if (model && status !== "streaming") {
    const copy = button("Copy", "small", () => copyReply(li, copy));
    copy.dataset.testid = "copy-reply";
    copy.setAttribute("aria-label", "Copy this reply");
    actions.append(copy);
  }
}

/** The newest exchange of the open chatroom: `{userLi, replyLi}` (either may be null). */
function latestExchange() {
  const items = [...$("messages").children];
  let userLi = null;
  for (let i = items.length - 1; i >= 0; i -= 1) {
    if (items[i].dataset.role === "user") {
      userLi = items[i];
      break;
    }
  }
  const replyLi = userLi && userLi.nextElementSibling && userLi.nextElementSibling.dataset.role === "model"
    ? userLi.nextElementSibling : null;
  return { userLi, replyLi };
}

/**
 * Regenerate (on the newest reply) and Edit (on the newest user message): only there,
 * and only while no reply of this chatroom is being written.
 */
function refreshLatestControls() {
  for (const b of $("messages").querySelectorAll('[data-testid="regenerate"], [data-testid="edit-message"]')) b.remove();
  if (!state.room) return;
  const { userLi, replyLi } = latestExchange();
  if (!userLi) return;
  const message = messageData.get(userLi);
  const streamingHere = state.streaming && state.streaming.chatroomId === state.room.id;
  const writing = state.busy || streamingHere || !message || message.status === "pending"
    || (replyLi && (replyLi.dataset.status === "streaming" || replyLi.dataset.id.startsWith("pending-")));
  if (writing) return;
  if (!(state.editing && state.editing.li === userLi)) {
    const edit = button("Edit", "small", () => startEdit(userLi));
    edit.dataset.testid = "edit-message";
    edit.setAttribute("aria-label", "Edit your last message");
    userLi.querySelector(".actions").append(edit);
  }
  const again = button("Regenerate", "small", () => regenerate(userLi));
  again.dataset.testid = "regenerate";
  again.setAttribute("aria-label", "Write the last reply again");
  (replyLi || userLi).querySelector(".actions").append(again);
  followEnd(); // the buttons add a line at the end
}

/** Copies a reply's raw text (its Markdown) and says so on the button. */
async function copyReply(li, copyButton) {
  const text = (messageData.get(li) || {}).content || "";
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard API");
    await navigator.clipboard.writeText(text);
  } catch {
    // Older browsers, or a page without clipboard access: a hidden textarea and the
    // copy command.
    const area = document.createElement("textarea");
    area.value = text;
    area.readOnly = true;
    area.className = "clipboard-helper";
    area.setAttribute("aria-hidden", "true");
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    copyButton.focus();
    if (!copied) throw new Error("The reply could not be copied: select its text and copy it instead.");
  }
  copyButton.textContent = "Copied";
  clearTimeout(copyButton.resetTimer);
  copyButton.resetTimer = setTimeout(() => { copyButton.textContent = "Copy"; }, 2000);
}

/** Removes the replies shown after `userLi` (a regenerate or an edit replaces them). */
function dropRepliesAfter(userLi) {
  while (userLi.nextElementSibling && userLi.nextElementSibling.dataset.role === "model") {
    userLi.nextElementSibling.remove();
  }
}

/** Asks the API again for a reply to the newest user message, and follows it. */
async function regenerate(userLi) {
  const room = state.room;
  const message = messageData.get(userLi);
  if (!room || !message || state.busy) return;
  clearError();
  cancelEdit();
  await askAgain(userLi, () => state.api.regenerate(room.id, message.id));
}

/**
 * The part regenerate and edit share: `request` asks the API (202 `{message}`); then the
 * old reply goes and the new one is followed as after a send. A daily-cap refusal shows
 * the cap notice; the 409s are said in words.
 */
async function askAgain(li, request) {
  const room = state.room;
  setBusy(true);
  try {
    let accepted;
    try {
      accepted = (await request()).message;
    } catch (error) {
      if (await capRefused(error)) return;
      throw conversationError(error);
    }
    cancelEdit();
    if (!state.room || state.room.id !== room.id || !li.isConnected) return;
    dropRepliesAfter(li);
    updateMessage(li, accepted);
    scrollToEnd();
    refreshUsage().catch(showError);
    await followReply(room.id, accepted, li);
  } finally {
    setBusy(false);
  }
}

/** A daily-cap refusal (429 `daily_limit_reached`): usage refreshed, the notice shown. */
async function capRefused(error) {
  if (!(error instanceof ApiError && error.code === "daily_limit_reached")) return false;
  await refreshUsage().catch(() => {});
  showCap(error);
  return true;
}

/** The 409s of regenerate and edit, said for this page. */
function conversationError(error) {
  if (error instanceof ApiError && error.code === "not_latest_message") {
    return new Error("Only the newest message can be edited or answered again. Reload the chat to see it.");
  }
  if (error instanceof ApiError && error.code === "reply_in_progress") {
    return new Error("The reply is still being written: wait for it (or stop it), then try again.");
  }
  return error;
}

/** An inline editor in place of the newest user message's text. */
function startEdit(li) {
  const message = messageData.get(li);
  if (!message || state.busy) return;
  cancelEdit();
  const form = document.createElement("form");
  form.className = "edit-form";
  const area = document.createElement("textarea");
  area.value = message.content;
  area.rows = 3;
  area.maxLength = 4000;
  area.dataset.testid = "edit-input";
  area.setAttribute("aria-label", "Edit your message");
  const save = Object.assign(document.createElement("button"), { type: "submit", className: "small primary", textContent: "Save and ask again" });
  save.dataset.testid = "edit-save";
  const cancel = button("Cancel", "small", () => cancelEdit());
  cancel.dataset.testid = "edit-cancel";
  const buttons = document.createElement("div");
  buttons.className = "panel-buttons";
  buttons.append(save, cancel);
  form.append(area, buttons);
  form.addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    await saveEdit(li, area.value);
  }));
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") cancelEdit();
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  li.classList.add("editing");
  li.append(form);
  state.editing = { li, message };
  refreshLatestControls();
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

function cancelEdit() {
  const editing = state.editing;
  if (!editing) return;
  state.editing = null;
  editing.li.classList.remove("editing");
  editing.li.querySelector(".edit-form")?.remove();
  refreshLatestControls();
}

/** PATCHes the newest user message with `text`; its reply is written again. */
async function saveEdit(li, text) {
  const room = state.room;
  const message = messageData.get(li);
  const content = text.trim();
  if (!room || !message || state.busy) return;
  clearError();
  if (!content) throw new Error("The message cannot be empty.");
  if (content === message.content) {
    cancelEdit();
    return;
  }
  await askAgain(li, () => state.api.editMessage(room.id, message.id, content));
}

function findMessage(id) {
  return $("messages").querySelector(`li[data-id="${CSS.escape(id)}"]`);
}

/** Shows the newest message, and follows new text again from now on. */
function scrollToEnd() {
  const history = $("history");
  history.scrollTop = history.scrollHeight;
  state.stick = true;
}

/** Keeps new text in view, unless the reader has scrolled up to read. */
function followEnd() {
  if (state.stick) scrollToEnd();
}

function nearEnd() {
  const h = $("history");
  return h.scrollHeight - h.scrollTop - h.clientHeight < 48;
}

function setBusy(busy) {
  state.busy = busy;
  $("send-message").disabled = busy;
  refreshLatestControls();
}

async function send(event) {
  event?.preventDefault();
  clearError();
  const input = $("message-input");
  const content = input.value.trim();
  if (!content || state.busy || !state.room) return;
  if (state.editing) cancelEdit();
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
    message = (await state.api.post(`/chatroom/${room.id}/message`, { content }, { "idempotency-key": idempotencyKey() })).message;
  } catch (error) {
    if (await capRefused(error)) return;
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
  followEnd();
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
  followEnd();
  refreshLatestControls();
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
    followEnd();
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
    refreshLatestControls();
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

// ---------- the chatroom's instructions and model ----------

async function loadModels() {
  if (!state.models) state.models = await state.api.models();
  return state.models;
}

function closeSettings() {
  $("settings-panel").hidden = true;
  $("chat-settings").setAttribute("aria-expanded", "false");
}

async function toggleSettings() {
  if (!$("settings-panel").hidden) {
    closeSettings();
    return;
  }
  clearError();
  const room = state.room;
  if (!room) return;
  const models = await loadModels();
  if (state.room !== room) return;
  const select = $("model-select");
  const options = [new Option(`Default (${models.default})`, "")];
  for (const m of models.models) {
    if (m.id === models.default) continue; // the default's own option: null
    options.push(new Option(m.pro_only ? `${m.id} (Pro)` : m.id, m.id));
  }
  if (room.model && room.model !== models.default && !models.models.some((m) => m.id === room.model)) {
    options.push(new Option(`${room.model} (no longer offered)`, room.model));
  }
  select.replaceChildren(...options);
  select.value = room.model && room.model !== models.default ? room.model : "";
  $("instructions-input").value = room.instructions || "";
  $("settings-panel").hidden = false;
  $("chat-settings").setAttribute("aria-expanded", "true");
  $("instructions-input").focus();
}

async function saveSettings(event) {
  event.preventDefault();
  clearError();
  const room = state.room;
  if (!room) return;
  const instructions = $("instructions-input").value.trim();
  const model = $("model-select").value;
  let body;
  try {
    body = await state.api.updateChatroom(room.id, { instructions: instructions || null, model: model || null });
  } catch (error) {
    if (error instanceof ApiError && error.code === "pro_model_required") {
      throw new Error(`${model} is for Pro users only. Choose another model, or upgrade to Pro to use it.`);
    }
    throw error;
  }
  state.rooms = state.rooms.map((r) => (r.id === room.id ? body.chatroom : r));
  state.roomsChanged += 1;
  if (state.room && state.room.id === room.id) {
    state.room = body.chatroom;
    closeSettings();
    showSettingsSummary();
    $("chat-settings").focus();
  }
}

/** A short line under the title: the model and whether instructions are set. */
function showSettingsSummary() {
  const room = state.room;
  const line = $("chat-meta");
  if (!room || (!room.model && !room.instructions)) {
    line.hidden = true;
    line.textContent = "";
    return;
  }
  const parts = [];
  if (room.model) parts.push(`Model: ${room.model}`);
  if (room.instructions) parts.push("Instructions set");
  line.textContent = parts.join(" · ");
  line.hidden = false;
}

// ---------- search ----------

function closeSearch() {
  state.search = null;
  $("search-results").replaceChildren();
  $("search-status").textContent = "";
  $("search-more").hidden = true;
  $("search-box").hidden = true;
}

async function runSearch(event) {
  event?.preventDefault();
  clearError();
  const q = $("search-input").value.trim();
  if (!q) {
    closeSearch();
    return;
  }
  const page = await state.api.search(q);
  state.search = { q, cursor: page.next_cursor };
  $("search-results").replaceChildren(...page.results.map(searchItem));
  $("search-status").textContent = page.results.length
    ? `Messages matching “${q}”:`
    : `No message matches “${q}”.`;
  $("search-more").hidden = !page.next_cursor;
  $("search-box").hidden = false;
}

async function moreResults() {
  const search = state.search;
  if (!search || !search.cursor) return;
  const page = await state.api.search(search.q, search.cursor);
  if (state.search !== search) return;
  search.cursor = page.next_cursor;
  $("search-results").append(...page.results.map(searchItem));
  $("search-more").hidden = !page.next_cursor;
}

function searchItem(result) {
  const li = document.createElement("li");
  const open = button("", "search-hit", () => openResult(result));
  open.dataset.testid = "search-result";
  open.dataset.chatroomId = result.chatroom_id;
  open.dataset.messageId = result.message_id;
  const head = document.createElement("span");
  head.className = "search-where";
  const when = new Date(result.created_at);
  head.textContent = `${result.chatroom_name || "New chat"} · ${result.role === "model" ? "Assistant" : "You"} · ${when.toLocaleDateString()}`;
  const snippet = document.createElement("span");
  snippet.className = "search-snippet";
  // The API escapes the text and adds only <mark> around the matches.
  snippet.innerHTML = result.snippet_html;
  open.append(head, snippet);
  li.append(open);
  return li;
}

/** Opens a result's chatroom, with older pages loaded until its message is there. */
async function openResult(result) {
  await openRoom(result.chatroom_id);
  let li = findMessage(result.message_id);
  for (let pages = 0; !li && state.cursor && pages < 50; pages += 1) {
    await loadOlder();
    li = findMessage(result.message_id);
  }
  if (!li) throw new Error("That message is no longer in this chat.");
  for (const old of $("messages").querySelectorAll(".hit")) old.classList.remove("hit");
  li.classList.add("hit");
  li.scrollIntoView({ block: "center" });
  state.stick = nearEnd();
  setTimeout(() => li.classList.remove("hit"), 4000);
}

// ---------- the account menu: export and deletion ----------

function closeMenu() {
  $("account-items").hidden = true;
  $("account-menu").setAttribute("aria-expanded", "false");
}

function toggleMenu() {
  const open = $("account-items").hidden;
  $("account-items").hidden = !open;
  $("account-menu").setAttribute("aria-expanded", String(open));
  if (open) $("export-data").focus();
}

async function exportData() {
  closeMenu();
  clearError();
  let file;
  try {
    file = await state.api.exportData();
  } catch (error) {
    if (error instanceof ApiError && error.code === "export_rate_limited") {
      const minutes = Math.max(1, Math.ceil((error.retryAfter || 600) / 60));
      throw new Error(`You can export your data once every 10 minutes. Try again in ${minutes} minute${minutes === 1 ? "" : "s"}.`);
    }
    throw error;
  }
  const url = URL.createObjectURL(file.blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = file.filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function openDelete() {
  closeMenu();
  clearError();
  $("delete-otp-input").value = "";
  $("delete-sent").hidden = true;
  $("delete-dev-code").hidden = true;
  $("delete-email").textContent = state.email || "your address";
  $("delete-dialog").showModal();
  $("delete-send-code").focus();
  if (!state.email) {
    const me = await state.api.me();
    state.email = me.email;
    $("delete-email").textContent = me.email;
  }
}

async function sendDeleteCode() {
  clearError();
  if (!state.email) state.email = (await state.api.me()).email;
  const sent = await state.api.sendOtp(state.email);
  $("delete-sent").textContent = `We sent a code to ${state.email}. It is valid for ${Math.round((sent.expires_in || 300) / 60)} minutes.`;
  $("delete-sent").hidden = false;
  const dev = $("delete-dev-code");
  if (sent.otp) {
    dev.replaceChildren("Local mode, no e-mail is sent. Your code: ", Object.assign(document.createElement("strong"), { textContent: sent.otp }));
    dev.hidden = false;
  } else {
    dev.hidden = true;
  }
  $("delete-otp-input").focus();
}

async function confirmDeleteAccount(event) {
  event.preventDefault();
  clearError();
  const otp = $("delete-otp-input").value.trim();
  if (!/^\d{4,12}$/.test(otp)) throw new Error("Enter the code we sent you (its digits only).");
  try {
    await state.api.deleteAccount(otp);
  } catch (error) {
    if (error instanceof ApiError && error.code === "invalid_otp") {
      throw new Error("That code is wrong or has expired. Ask for a new one and try again.");
    }
    if (error instanceof ApiError && error.code === "billing_unavailable") {
      throw new Error("Your subscription could not be cancelled right now, so nothing was deleted. Try again in a few minutes.");
    }
    throw error;
  }
  // Every token is dead now: nothing else to revoke.
  forgetSession();
  const notice = $("signin-notice");
  notice.textContent = "Your account and all its chats have been deleted.";
  notice.hidden = false;
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
  $("chat-settings").addEventListener("click", guarded(toggleSettings));
  $("settings-panel").addEventListener("submit", guarded(saveSettings));
  $("chat-settings-cancel").addEventListener("click", () => { closeSettings(); $("chat-settings").focus(); });
  $("search-form").addEventListener("submit", guarded(runSearch));
  $("search-input").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      $("search-input").value = "";
      closeSearch();
    }
  });
  $("search-clear").addEventListener("click", () => {
    $("search-input").value = "";
    closeSearch();
    $("search-input").focus();
  });
  $("search-more").addEventListener("click", guarded(moreResults));
  $("account-menu").addEventListener("click", toggleMenu);
  $("export-data").addEventListener("click", guarded(exportData));
  $("delete-account").addEventListener("click", guarded(openDelete));
  $("delete-send-code").addEventListener("click", guarded(sendDeleteCode));
  $("delete-form").addEventListener("submit", guarded(confirmDeleteAccount));
  $("delete-cancel").addEventListener("click", () => $("delete-dialog").close());
  $("delete-dialog").addEventListener("close", clearError);
  document.addEventListener("click", (event) => {
    if (!$("account-items").hidden && !$("account-menu-wrap").contains(event.target)) closeMenu();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("account-items").hidden) {
      closeMenu();
      $("account-menu").focus();
    }
  });
  // New text is followed while the reader is at the end; scrolling up stops that, and
  // scrolling back down to the end starts it again.
  const history = $("history");
  let lastTop = 0;
  history.addEventListener("scroll", () => {
    const top = history.scrollTop;
    if (nearEnd()) state.stick = true;
    else if (top < lastTop) state.stick = false;
    lastTop = top;
  }, { passive: true });
  // The wheel says at once that the reader went up, before any scroll event.
  history.addEventListener("wheel", (event) => {
    if (event.deltaY < 0 && history.scrollTop > 0) state.stick = false;
  }, { passive: true });
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
