// The public API, and nothing else: JSON calls with the bearer token, the error
// envelope turned into an ApiError, and the reply stream read with fetch (EventSource
// cannot send an Authorization header).

/** An API answer that was not 2xx: `message` is the envelope's, fit to show. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** `config.json` next to the page: `api_url` and `stream_url`, empty for this origin. */
export async function loadConfig() {
  const response = await fetch("config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`config.json could not be loaded (${response.status})`);
  const config = await response.json();
  const base = (url) => String(url || "").replace(/\/+$/, "");
  const api = base(config.api_url);
  return { api, stream: base(config.stream_url) || api };
}

export class Api {
  constructor(config, token) {
    this.config = config;
    this.token = token;
    this.onUnauthorized = () => {};
  }

  headers(extra = {}) {
    const h = { ...extra };
    if (this.token) h.authorization = `Bearer ${this.token}`;
    return h;
  }

  /**
   * Calls `method path` with an optional JSON body; resolves to the 2xx Response (its
   * body unread). Anything else rejects with an ApiError from the error envelope.
   */
  async request(method, path, body, extraHeaders = {}, base = this.config.api) {
    const init = { method, headers: this.headers(extraHeaders) };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(base + path, init);
    } catch {
      throw new ApiError(0, "network_error", "The server could not be reached. Check your connection and try again.");
    }
    if (response.ok) return response;
    const parsed = parseJson(await response.text());
    const error = parsed && parsed.error;
    const retryAfter = Number(response.headers.get("retry-after")) || null;
    const apiError = new ApiError(
      response.status,
      (error && error.code) || "http_error",
      (error && error.message) || `The server answered ${response.status} ${response.statusText}.`,
      retryAfter,
    );
    // A wrong code (deleting the account) is a 401 too, but the session is still good.
    if (response.status === 401 && this.token && apiError.code !== "invalid_otp") this.onUnauthorized(apiError);
    throw apiError;
  }

  /** Calls `method path` with an optional JSON body; resolves to `{body, headers}`. */
  async call(method, path, body, extraHeaders = {}) {
    const response = await this.request(method, path, body, extraHeaders);
    return { body: parseJson(await response.text()), headers: response.headers };
  }

  get(path) { return this.call("GET", path).then((r) => r.body); }
  post(path, body, headers) { return this.call("POST", path, body, headers).then((r) => r.body); }
  patch(path, body) { return this.call("PATCH", path, body).then((r) => r.body); }
  del(path, body) { return this.call("DELETE", path, body).then((r) => r.body); }

  // ---------- conversation controls ----------

  /** A new reply to the newest user message (the old reply is replaced): 202 `{message}`. */
  regenerate(chatroomId, messageId) {
    return this.post(`/chatroom/${chatroomId}/messages/${messageId}/regenerate`, undefined,
      { "idempotency-key": idempotencyKey() });
  }

  /** New text for the newest user message; its reply is written again: 202 `{message}`. */
  editMessage(chatroomId, messageId, content) {
    return this.patch(`/chatroom/${chatroomId}/messages/${messageId}`, { content });
  }

  /** Any of `{name, instructions, model}` (null clears): 200 `{chatroom}`. */
  updateChatroom(chatroomId, fields) {
    return this.patch(`/chatroom/${chatroomId}`, fields);
  }

  /** `{default, models: [{id, pro_only}]}`: what a chatroom may choose. */
  models() { return this.get("/models"); }

  /** `{results: [...], next_cursor}` over the caller's own messages. */
  search(q, cursor) {
    const params = new URLSearchParams({ q });
    if (cursor) params.set("cursor", cursor);
    return this.get(`/search?${params}`);
  }

  me() { return this.get("/user/me"); }

  /** A sign-in code for `email` (the account deletion's confirmation too): `{message, expires_in, otp?}`. */
  sendOtp(email) { return this.post("/auth/send-otp", { email }); }

  /** The account's data as one JSON file: `{blob, filename}`. */
  async exportData() {
    // Served where replies stream (on AWS the stream function's URL, which streams the
    // document instead of buffering it, so an export is not held to API Gateway's 6 MB).
    const response = await this.request("GET", "/user/export", undefined, {}, this.config.stream);
    const disposition = response.headers.get("content-disposition") || "";
    const match = disposition.match(/filename="?([^";]+)"?/i);
    return { blob: await response.blob(), filename: (match && match[1]) || "chatroom-export.json" };
  }

  /** Deletes the account (confirmed by a code); every token is dead afterwards. */
  deleteAccount(otp) { return this.del("/user/me", { otp }); }

  /**
   * Follows a reply's stream. Resolves to the `done` body, or to null when the stream
   * ended without one (a deadline, a failed reply, a broken stream: the caller long-polls). Rejects with an ApiError
   * with code `stream_unsupported` when this deployment has no stream route.
   */
  async stream(chatroomId, messageId, { onDelta, onReset, signal }) {
    const url = `${this.config.stream}/chatroom/${chatroomId}/messages/${messageId}/stream`;
    let lastId = null;
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const headers = this.headers({ accept: "text/event-stream" });
      if (lastId) headers["last-event-id"] = lastId;
      let response;
      try {
        response = await fetch(url, { headers, signal });
      } catch (e) {
        if (signal && signal.aborted) throw e;
        continue; // a dropped connection: resume from the last event id
      }
      const type = response.headers.get("content-type") || "";
      if (response.status === 404 || response.status === 405 || (response.ok && !type.startsWith("text/event-stream"))) {
        // No such route here (or someone else's message: the long-poll will say 404 too).
        await response.body?.cancel();
        throw new ApiError(response.status, "stream_unsupported", "streaming is not available");
      }
      if (!response.ok) {
        let envelope = null;
        try { envelope = (await response.json()).error; } catch { envelope = null; }
        throw new ApiError(response.status, envelope?.code || "http_error",
          envelope?.message || `The server answered ${response.status}.`);
      }
      let done = null;
      for await (const event of sseEvents(response.body)) {
        if (event.id) lastId = event.id;
        if (event.event === "delta") onDelta(JSON.parse(event.data).text || "");
        else if (event.event === "reset") onReset();
        else if (event.event === "done") { done = JSON.parse(event.data); break; }
        // A failed reply (`reply_failed`) or a broken stream: the message's stored state
        // (failed with its reason, or still on its way) comes from the long-poll.
        else if (event.event === "error") return null;
      }
      if (done) return done;
      if (!lastId) return null;
    }
    return null;
  }
}

function parseJson(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export function idempotencyKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

/** Server-sent events from a byte stream: yields `{event, data, id}`. */
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = { event: "message", data: "", id: null };
        const data = [];
        for (const line of raw.split("\n")) {
          if (!line || line.startsWith(":")) continue; // heartbeat comments
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event.event = val;
          else if (field === "data") data.push(val);
          else if (field === "id") event.id = val;
        }
        if (data.length === 0 && event.event === "message") continue;
        event.data = data.join("\n");
        yield event;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
