// The web client in a real headless Chromium (Debian's package, driven by playwright-core),
// against the real local server (real PostgreSQL and Redis) whose Gemini is a local fake
// with delays. One browser for the whole file; a fresh context (and user) per test.
//
// Environment (scripts/web-test.sh sets it): WEB_TEST_SERVER (local-server binary),
// WEB_TEST_DATABASE_URL, WEB_TEST_REDIS_URL, WEB_TEST_PORT, WEB_TEST_DIR (web/),
// WEB_TEST_SCREENSHOTS (git-ignored folder), WEB_TEST_README_SHOT (optional: also write
// the README's screenshot there), CHROMIUM (default /usr/bin/chromium).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { DEFAULT_FRAMES, startFakeGemini } from "./fake-gemini.mjs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the browser tests through scripts/web-test.sh`);
  return value;
};

const PORT = env("WEB_TEST_PORT");
const BASE = `http://127.0.0.1:${PORT}`;
const SHOTS = env("WEB_TEST_SCREENSHOTS");
const STREAM_PATH = "/chatroom/{id}/messages/{message_id}/stream";
const CANCEL_PATH = "/chatroom/{id}/messages/{message_id}/cancel";
const TIMEOUT = 20_000;

let gemini;
let server;
let serverLog = "";
let browser;
let routes = {};
// Every console error and uncaught page error of every test: the run must have none,
// except the HTTP statuses a test provokes on purpose (listed per test).
const problems = [];

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  gemini = await startFakeGemini();
  server = spawn(env("WEB_TEST_SERVER"), [], {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: env("WEB_TEST_DATABASE_URL"),
      REDIS_URL: env("WEB_TEST_REDIS_URL"),
      REDIS_KEY_PREFIX: `web${process.pid}:`,
      JWT_SECRET_KEY: randomBytes(48).toString("base64"),
      OTP_DELIVERY: "response",
      GOOGLE_API_KEY: "fake-key",
      GEMINI_BASE_URL: gemini.url,
      GEMINI_RETRY_BUDGET_SECONDS: "2",
      BASIC_DAILY_LIMIT: "5",
      // A model a Basic user may not choose, for the chat settings test.
      GEMINI_MODEL: "gemini-2.5-flash",
      GEMINI_MODELS: "gemini-2.5-flash,gemini-2.5-pro",
      GEMINI_PRO_ONLY_MODELS: "gemini-2.5-pro",
      // Deleting the account asks for a fresh code seconds after the sign-in's one.
      OTP_MIN_INTERVAL_SECONDS: "0",
      LOCAL_ADDR: `127.0.0.1:${PORT}`,
      WEB_DIR: env("WEB_TEST_DIR"),
      RUST_LOG: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  server.stdout.on("data", (d) => { serverLog += d; });
  server.stderr.on("data", (d) => { serverLog += d; });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (server.exitCode !== null) throw new Error(`the local server exited: ${serverLog}`);
    try {
      const r = await fetch(`${BASE}/openapi.json`);
      if (r.ok) {
        routes = (await r.json()).paths;
        break;
      }
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`the local server did not answer: ${serverLog}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // No network but loopback: nothing that phones home.
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  await gemini?.close();
  if (problems.length) console.log(`console problems seen:\n${problems.map((p) => p.text).join("\n")}`);
});

const streams = () => Boolean(routes[STREAM_PATH]) && Boolean(routes[CANCEL_PATH]);

/** A fresh browser context with the console watched; `expected` lists HTTP statuses this test provokes. */
async function newPage(t, { width = 1280, height = 800, expected = [] } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const images = [];
  page.on("request", (r) => { if (r.resourceType() === "image") images.push(r.url()); });
  page.on("pageerror", (e) => problems.push({ test: t.name, text: `page error: ${e.message}` }));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const text = m.text();
    const status = text.match(/status of (\d{3})/);
    if (status && expected.includes(Number(status[1]))) return; // provoked on purpose
    // An API without the stream route, or without sign-out's route: the client probes them.
    if (status && !streams() && Number(status[1]) === 404 && m.location().url.endsWith("/stream")) return;
    if (status && !routes["/auth/logout"] && Number(status[1]) === 404 && m.location().url.endsWith("/auth/logout")) return;
    problems.push({ test: t.name, text: `console error: ${text} (${m.location().url})` });
  });
  t.after(() => context.close());
  await page.goto(BASE + "/");
  return { page, images, context };
}

/** Runs `query` on the test database (as the history test does); its rows as text. */
function sql(query) {
  return execFileSync("psql", [env("WEB_TEST_DATABASE_URL"), "-qtA", "-v", "ON_ERROR_STOP=1", "-c", query], { encoding: "utf8" }).trim();
}

const lastReply = (page) => page.locator('[data-testid="message"][data-role="model"]').last();
const lastUser = (page) => page.locator('[data-testid="message"][data-role="user"]').last();

/** Whether `locator`'s box lies inside the window (and inside the history, when it is in one). */
async function inView(locator) {
  return locator.evaluate((el) => {
    const r = el.getBoundingClientRect();
    const h = el.closest("#history")?.getBoundingClientRect() || { top: 0, bottom: window.innerHeight };
    return r.height > 0 && r.top >= Math.max(0, h.top) - 1 && r.bottom <= Math.min(window.innerHeight, h.bottom) + 1;
  });
}

const tid = (page, id) => page.getByTestId(id);
let emails = 0;

async function signIn(page) {
  const email = `web-${process.pid}-${(emails += 1)}@example.com`;
  await tid(page, "email-input").fill(email);
  await tid(page, "send-code").click();
  const dev = tid(page, "dev-code");
  await dev.waitFor();
  const code = (await dev.textContent()).match(/\d{6}/)[0];
  await tid(page, "code-input").fill(code);
  await tid(page, "verify-code").click();
  await tid(page, "new-chatroom").waitFor();
  return email;
}

async function newChat(page) {
  const before = await tid(page, "chatroom-item").count();
  await tid(page, "new-chatroom").click();
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="chatroom-item"]').length === n + 1, before);
  await tid(page, "message-input").waitFor();
}

/** Types `text` and sends it with Enter; resolves to the locator of the reply to it. */
async function sendMessage(page, text) {
  const count = await page.locator('[data-testid="message"][data-role="user"]').count();
  await tid(page, "message-input").fill(text);
  await tid(page, "message-input").press("Enter");
  await page.waitForFunction(
    (n) => document.querySelectorAll('[data-testid="message"][data-role="user"]').length === n + 1, count,
  );
  return page.locator('[data-testid="message"][data-role="model"]').last();
}

async function waitForStatus(locator, status) {
  await locator.page().waitForFunction(
    ([el, s]) => el.dataset.status === s, [await locator.elementHandle(), status], { timeout: TIMEOUT },
  );
}

/** Records, in the page, every distinct text the streaming reply shows (with its time). */
async function watchRenders(page) {
  await page.evaluate(() => {
    window.__renders = [];
    new MutationObserver(() => {
      const reply = document.querySelector('[data-testid="message"][data-role="model"][data-status="streaming"] .body');
      if (!reply) return;
      const text = reply.textContent;
      const last = window.__renders[window.__renders.length - 1];
      if (text && (!last || last.text !== text)) window.__renders.push({ text, at: Date.now() });
    }).observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
  });
}

describe("web client", () => {
  test("sign in by code, manage chatrooms, chat, sign out", async (t) => {
    const { page } = await newPage(t);
    await signIn(page);
    await newChat(page);
    if (streams()) await watchRenders(page);
    const reply = await sendMessage(page, "What should I see in Oslo?");
    const user = page.locator('[data-testid="message"][data-role="user"]').last();
    await waitForStatus(reply, "complete");
    assert.equal(await user.getAttribute("data-status"), "answered");
    const finalText = DEFAULT_FRAMES.join("").replace(/\*\*|`/g, "").replace(/\n+- /g, "").replace(/\n/g, "");
    assert.equal((await reply.locator(".body").textContent()).replace(/\n/g, ""), finalText);
    // The Markdown became elements, not characters.
    assert.equal(await reply.locator(".body strong").textContent(), "museums");
    assert.equal(await reply.locator(".body li").count(), 2);

    if (streams()) {
      // At least two partial renders, each a growing prefix, before the fake's last frame.
      const renders = await page.evaluate(() => window.__renders);
      const beforeLast = renders.filter((r) => r.at < gemini.log.lastFrameAt);
      assert.ok(beforeLast.length >= 2, `partial renders before the fake's last frame: ${JSON.stringify(renders)}`);
      t.diagnostic(`${beforeLast.length} partial renders before the fake's last frame: ${JSON.stringify(beforeLast.map((r) => r.text))}`);
      for (const r of renders) {
        const shown = r.text.replace(/\n/g, "").trimEnd();
        assert.ok(finalText.startsWith(shown), `a partial render is not a prefix of the reply: ${JSON.stringify(r.text)}`);
      }
    }

    // The worker titles the chatroom; the list follows.
    await page.waitForFunction(() => document.querySelector('[data-testid="chatroom-item"] .room-open')?.textContent === "Browser test chat");
    // Rename, then a second chat to delete.
    const item = tid(page, "chatroom-item").first();
    await item.getByRole("button", { name: /^Rename/ }).click();
    await item.getByRole("textbox", { name: "New name" }).fill("Trip to Oslo");
    await item.getByRole("textbox", { name: "New name" }).press("Enter");
    await page.waitForFunction(() => document.getElementById("chat-title").textContent === "Trip to Oslo");
    await newChat(page);
    assert.equal(await tid(page, "chatroom-item").count(), 2);
    const fresh = tid(page, "chatroom-item").first();
    await fresh.getByRole("button", { name: /^Delete/ }).click();
    await fresh.getByRole("button", { name: "Delete", exact: true }).click();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="chatroom-item"]').length === 1);
    assert.equal(await tid(page, "chatroom-item").first().locator(".room-open").textContent(), "Trip to Oslo");

    // The history survives a reload (the token too), oldest first.
    await page.reload();
    await tid(page, "chatroom-item").first().locator(".room-open").click();
    await page.locator('[data-testid="message"]').nth(1).waitFor();
    assert.deepEqual(await page.locator('[data-testid="message"]').evaluateAll((els) => els.map((e) => e.dataset.role)), ["user", "model"]);

    await tid(page, "sign-out").click();
    await tid(page, "email-input").waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem("chatroom.token")), null);
  });

  test("stop mid-reply keeps the partial text, marked", async (t) => {
    if (!streams()) {
      t.skip("the API has no stream and cancel routes");
      return;
    }
    const { page } = await newPage(t);
    await signIn(page);
    await newChat(page);
    const reply = await sendMessage(page, "tell me something slow");
    await page.waitForFunction(() => {
      const body = document.querySelector('[data-testid="message"][data-role="model"][data-status="streaming"] .body');
      return body && body.textContent.includes("word3 ");
    });
    await tid(page, "stop").click();
    await waitForStatus(reply, "cancelled");
    const kept = await reply.locator(".body").textContent();
    assert.match(kept, /^word1 word2 word3 /);
    t.diagnostic(`kept after stop: ${JSON.stringify(kept)}`);
    assert.ok(!kept.includes("word60"), "the whole reply was not written");
    assert.match(await reply.locator(".mark").textContent(), /Stopped/);
    assert.ok(await tid(page, "stop").isHidden());
    // Stored as it was shown: after a reload the same partial text, still marked.
    await page.reload();
    await tid(page, "chatroom-item").first().locator(".room-open").click();
    const stored = page.locator('[data-testid="message"][data-role="model"]').last();
    await waitForStatus(stored, "cancelled");
    assert.equal(await stored.locator(".body").textContent(), kept);
  });

  test("where the API has no stream route, the reply arrives by long-poll", async (t) => {
    const { page } = await newPage(t, { expected: [404] });
    // A deployment without live replies: its stream path is an unknown route (404 envelope).
    let probes = 0;
    await page.route("**/stream", (route) => {
      probes += 1;
      return route.fulfill({
        status: 404,
        contentType: "application/json",
        body: JSON.stringify({ error: { code: "not_found", message: "no such route" } }),
      });
    });
    await signIn(page);
    await newChat(page);
    const reply = await sendMessage(page, "What should I see in Oslo?");
    await waitForStatus(reply, "complete");
    assert.equal(await reply.locator(".body strong").textContent(), "museums");
    assert.ok(await tid(page, "stop").isHidden());
    const second = await sendMessage(page, "quick follow-up");
    await waitForStatus(second, "complete");
    assert.equal(probes, 1, "the client asks for the stream once, then long-polls");
  });

  test("a Basic user's 6th message gets the cap message with the reset time", async (t) => {
    const { page } = await newPage(t, { expected: [429, 503] });
    await signIn(page);
    await newChat(page);
    const usage = tid(page, "usage");
    await page.waitForFunction(() => /0 of 5 messages today, resets at \S/.test(document.querySelector('[data-testid="usage"]').textContent));
    for (let n = 1; n <= 5; n += 1) {
      const reply = await sendMessage(page, `quick question ${n}`);
      await waitForStatus(reply, "complete");
      await page.waitForFunction((k) => document.querySelector('[data-testid="usage"]').textContent.startsWith(`${k} of 5 messages today`), n);
    }
    await tid(page, "message-input").fill("quick question 6");
    await tid(page, "send-message").click();
    const notice = page.locator("#cap-notice");
    await notice.waitFor();
    const text = await notice.textContent();
    assert.match(text, /used all 5 messages for today\. They reset at \d{1,2}:\d{2}( [AP]M)?( tomorrow)?\./, text);
    // The time shown is the API's resets_at, in the browser's time zone.
    const resetsAt = await page.evaluate(async () => {
      const r = await fetch("/subscription/status", { headers: { authorization: `Bearer ${localStorage.getItem("chatroom.token")}` } });
      const body = await r.json();
      return new Date(body.usage.resets_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    });
    assert.ok(text.includes(`reset at ${resetsAt}`), `${text} / ${resetsAt}`);
    assert.ok(await notice.getByRole("button", { name: "Upgrade to Pro" }).isVisible());
    assert.match(await usage.textContent(), /^5 of 5 messages today, resets at /);
    assert.equal(await page.locator('[data-testid="message"][data-role="user"]').count(), 5, "the refused message is not shown as sent");
    assert.equal(await tid(page, "message-input").inputValue(), "quick question 6", "the refused text is kept");
    // Billing is not configured on this server: the button explains instead of failing.
    await tid(page, "upgrade").click();
    await tid(page, "error").waitFor();
    assert.match(await page.locator("#error-text").textContent(), /^Upgrading is not available here: billing is not configured/);
  });

  test("Markdown with HTML renders as text; failed and blocked messages are marked; retry", async (t) => {
    const { page, images } = await newPage(t);
    await signIn(page);
    await newChat(page);
    const reply = await sendMessage(page, "inject some HTML");
    await waitForStatus(reply, "complete");
    const body = reply.locator(".body");
    assert.match(await body.textContent(), /<img src=x onerror="window.__injected=1"> and <script>window.__injected=2<\/script>/);
    assert.equal(await body.locator("img, script").count(), 0);
    assert.equal(await body.locator("strong").textContent(), "bold");
    assert.equal(await body.locator("a").count(), 0, "a javascript: link stays text");
    assert.equal(await page.evaluate(() => window.__injected), undefined);
    assert.deepEqual(images, []);

    await sendMessage(page, "this one will fail");
    const failed = page.locator('[data-testid="message"][data-role="user"]').last();
    await waitForStatus(failed, "failed");
    await failed.getByTestId("retry").click();
    const retried = page.locator('[data-testid="message"][data-role="model"]').last();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="message"][data-role="user"]').length === 3);
    await waitForStatus(retried, "complete");
    assert.equal(await page.locator('[data-testid="message"][data-role="user"]').last().getAttribute("data-status"), "answered");

    await sendMessage(page, "something blocked");
    const blocked = page.locator('[data-testid="message"][data-role="user"]').last();
    await waitForStatus(blocked, "blocked");
    assert.match(await blocked.locator(".mark").textContent(), /Blocked/);
  });

  test("history pages back with Load older messages", async (t) => {
    const { page } = await newPage(t);
    await signIn(page);
    await newChat(page);
    const room = await tid(page, "chatroom-item").first().getAttribute("data-id");
    // 60 earlier messages, written straight into the database (cheaper than 60 sends).
    execFileSync("psql", [env("WEB_TEST_DATABASE_URL"), "-qtA", "-v", "ON_ERROR_STOP=1", "-c", `
      INSERT INTO messages (id, chatroom_id, user_id, role, content, status, created_at)
      SELECT gen_random_uuid(), c.id, c.user_id, 'user', 'old message ' || g, 'answered',
             now() - interval '1 hour' + g * interval '1 second'
      FROM chatrooms c, generate_series(1, 60) g WHERE c.id = '${room}'`]);
    await page.reload();
    await tid(page, "chatroom-item").first().locator(".room-open").click();
    const messages = page.locator('[data-testid="message"]');
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="message"]').length > 0);
    const first = await messages.count();
    assert.ok(first < 60, `the first page holds ${first} messages`);
    assert.equal(await messages.last().locator(".body").textContent(), "old message 60");
    const older = page.getByRole("button", { name: "Load older messages" });
    await older.click();
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="message"]').length > n, first);
    while (await older.isVisible()) {
      const n = await messages.count();
      await older.click();
      await page.waitForFunction((k) => document.querySelectorAll('[data-testid="message"]').length > k, n);
    }
    assert.equal(await messages.count(), 60);
    assert.equal(await messages.first().locator(".body").textContent(), "old message 1");
  });

  test("keyboard only, and every control has a name for screen readers", async (t) => {
    const { page } = await newPage(t);
    // The e-mail field gets the focus; Enter submits each form, focus moves to the next field.
    await page.waitForFunction(() => document.activeElement?.dataset.testid === "email-input");
    await page.keyboard.type(`web-${process.pid}-kb@example.com`);
    await page.keyboard.press("Enter");
    await tid(page, "dev-code").waitFor();
    await page.waitForFunction(() => document.activeElement?.dataset.testid === "code-input");
    await page.keyboard.type((await tid(page, "dev-code").textContent()).match(/\d{6}/)[0]);
    await page.keyboard.press("Enter");
    await tid(page, "new-chatroom").waitFor();
    await tid(page, "new-chatroom").focus();
    await page.keyboard.press("Enter");
    await tid(page, "message-input").waitFor();
    assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), "message-input");
    // Shift+Enter is a new line, not a send.
    await page.keyboard.type("first line");
    await page.keyboard.press("Shift+Enter");
    await page.keyboard.type("second line");
    assert.equal(await tid(page, "message-input").inputValue(), "first line\nsecond line");
    assert.equal(await page.locator('[data-testid="message"]').count(), 0);
    await page.keyboard.press("Enter");
    const reply = page.locator('[data-testid="message"][data-role="model"]').last();
    await reply.waitFor();
    await waitForStatus(reply, "complete");
    assert.equal(await page.locator('[data-testid="message"][data-role="user"] .body').textContent(), "first line\nsecond line");
    // Tab reaches the chat list and the account buttons.
    const reached = new Set();
    for (let i = 0; i < 12; i += 1) {
      await page.keyboard.press("Tab");
      reached.add(await page.evaluate(() => document.activeElement.dataset.testid || document.activeElement.textContent.trim()));
    }
    for (const name of ["sign-out", "upgrade", "new-chatroom", "Rename"]) assert.ok(reached.has(name), `Tab never reached ${name}: ${[...reached]}`);
    const unnamed = await page.evaluate(() => [...document.querySelectorAll("button, input, textarea")]
      .filter((el) => el.offsetParent !== null)
      .filter((el) => !(el.labels?.length || el.getAttribute("aria-label") || el.textContent.trim()))
      .map((el) => el.outerHTML));
    assert.deepEqual(unnamed, []);
  });

  test("phone-width and desktop screenshots", async (t) => {
    const { page } = await newPage(t, { width: 390, height: 844 });
    await signIn(page);
    await newChat(page);
    const reply = await sendMessage(page, "What should I see in Oslo?");
    await waitForStatus(reply, "complete");
    await tid(page, "message-input").fill("And what should I eat?");
    // At 390 px nothing is wider than the screen, and the composer is on it.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
    assert.ok(await tid(page, "send-message").isVisible());
    // Nor taller than it: the composer stays on the screen, the history scrolls.
    const tall = await page.evaluate(() => document.scrollingElement.scrollHeight - window.innerHeight);
    assert.ok(tall <= 0, `the page is ${tall}px taller than the phone's screen`);
    assert.ok(await inView(tid(page, "send-message")));
    await page.screenshot({ path: path.join(SHOTS, "phone-chat.png") });
    await page.getByRole("button", { name: "Back to the chat list" }).click();
    assert.ok(await tid(page, "chatroom-item").first().isVisible());
    await page.screenshot({ path: path.join(SHOTS, "phone-list.png") });

    await page.setViewportSize({ width: 1280, height: 800 });
    await tid(page, "chatroom-item").first().locator(".room-open").click();
    await waitForStatus(page.locator('[data-testid="message"][data-role="model"]').last(), "complete");
    await tid(page, "message-input").fill("And what should I eat?");
    await page.evaluate(() => document.activeElement.blur());
    // The chat list's buttons fit its column.
    const spill = await page.evaluate(() => {
      const rooms = document.querySelector(".rooms");
      return rooms.scrollWidth - rooms.clientWidth;
    });
    assert.ok(spill <= 0, `the chat list is ${spill}px wider than its column`);
    const desktop = path.join(SHOTS, "desktop-chat.png");
    await page.screenshot({ path: desktop });
    if (process.env.WEB_TEST_README_SHOT) fs.copyFileSync(desktop, process.env.WEB_TEST_README_SHOT);
    for (const f of ["phone-chat.png", "phone-list.png", "desktop-chat.png"]) {
      assert.ok(fs.statSync(path.join(SHOTS, f)).size > 10_000, `${f} looks empty`);
    }
  });

  test("regenerate writes the newest reply again; edit changes the newest message and its reply", async (t) => {
    const { page } = await newPage(t);
    await signIn(page);
    await newChat(page);
    const first = await sendMessage(page, "quick first question");
    await waitForStatus(first, "complete");
    const reply = await sendMessage(page, "ask me again");
    // While the reply is being written, neither control is offered.
    await waitForStatus(reply, "streaming");
    assert.equal(await tid(page, "regenerate").count(), 0);
    assert.equal(await tid(page, "edit-message").count(), 0);
    await waitForStatus(reply, "complete");
    assert.equal(await reply.locator(".body").textContent(), "Answer number 1.");
    // Only on the newest exchange: Regenerate on its reply, Edit on its message.
    assert.equal(await tid(page, "regenerate").count(), 1);
    assert.equal(await tid(page, "edit-message").count(), 1);
    assert.equal(await reply.getByTestId("regenerate").count(), 1);
    assert.equal(await lastUser(page).getByTestId("edit-message").count(), 1);

    await reply.getByTestId("regenerate").click();
    await page.waitForFunction(() => {
      const replies = document.querySelectorAll('[data-testid="message"][data-role="model"]');
      const last = replies[replies.length - 1];
      return replies.length === 2 && last.dataset.status === "complete" && last.querySelector(".body").textContent === "Answer number 2.";
    });
    assert.equal(await page.locator('[data-testid="message"]').count(), 4, "the old reply was replaced, not added to");
    assert.equal(await lastUser(page).locator(".body").textContent(), "ask me again");
    // A regenerate counts like a send.
    await page.waitForFunction(() => document.querySelector('[data-testid="usage"]').textContent.startsWith("3 of 5 messages today"));

    // Edit, then Cancel: nothing changes.
    await lastUser(page).getByTestId("edit-message").click();
    assert.equal(await tid(page, "edit-input").inputValue(), "ask me again");
    await tid(page, "edit-input").fill("never sent");
    await tid(page, "edit-cancel").click();
    assert.equal(await tid(page, "edit-input").count(), 0);
    assert.equal(await lastUser(page).locator(".body").textContent(), "ask me again");
    // Edit and save: the message's text changes and a new reply is written for it.
    await lastUser(page).getByTestId("edit-message").click();
    await tid(page, "edit-input").fill("please answer again");
    await tid(page, "edit-save").click();
    await page.waitForFunction(() => {
      const replies = document.querySelectorAll('[data-testid="message"][data-role="model"]');
      const last = replies[replies.length - 1];
      return last.dataset.status === "complete" && last.querySelector(".body").textContent === "Answer number 1.";
    });
    assert.equal(await lastUser(page).locator(".body").textContent(), "please answer again");
    assert.equal(await lastUser(page).locator(".who").textContent(), "You (edited)");
    assert.equal(await page.locator('[data-testid="message"]').count(), 4);
    await page.waitForFunction(() => document.querySelector('[data-testid="usage"]').textContent.startsWith("4 of 5 messages today"));
    // Stored: the same after a reload.
    await page.reload();
    await tid(page, "chatroom-item").first().locator(".room-open").click();
    await page.locator('[data-testid="message"]').nth(3).waitFor();
    assert.deepEqual(await page.locator('[data-testid="message"] .body').allTextContents(),
      ["quick first question", "Quick answer.", "please answer again", "Answer number 1."]);
    assert.equal(await lastUser(page).locator(".who").textContent(), "You (edited)");
    assert.equal(await lastReply(page).getByTestId("regenerate").count(), 1);
  });

  test("instructions and model per chat: saved, kept after a reload, a Pro-only model refused for Basic", async (t) => {
    const { page } = await newPage(t, { expected: [403] });
    const email = await signIn(page);
    await newChat(page);
    await tid(page, "chat-settings").click();
    await tid(page, "instructions-input").waitFor();
    assert.equal(await tid(page, "chat-settings").getAttribute("aria-expanded"), "true");
    const options = await tid(page, "model-select").locator("option").evaluateAll((os) => os.map((o) => [o.value, o.textContent]));
    assert.deepEqual(options, [["", "Default (gemini-2.5-flash)"], ["gemini-2.5-pro", "gemini-2.5-pro (Pro)"]]);
    await tid(page, "instructions-input").fill("Answer like a pirate.");
    // A Basic user choosing the Pro-only model: a readable refusal, the panel stays open.
    await tid(page, "model-select").selectOption("gemini-2.5-pro");
    await tid(page, "chat-settings-save").click();
    await tid(page, "error").waitFor();
    assert.match(await page.locator("#error-text").textContent(), /^gemini-2\.5-pro is for Pro users only\. Choose another model, or upgrade to Pro/);
    assert.ok(await tid(page, "instructions-input").isVisible());
    await page.screenshot({ path: path.join(SHOTS, "chat-settings.png") });
    // The default model, with the instructions: saved.
    await tid(page, "model-select").selectOption("");
    await tid(page, "chat-settings-save").click();
    await page.locator("#settings-panel").waitFor({ state: "hidden" });
    assert.ok(await tid(page, "error").isHidden());
    assert.equal(await page.locator("#chat-meta").textContent(), "Instructions set");
    // The replies are asked with them.
    const reply = await sendMessage(page, "which model do you use?");
    await waitForStatus(reply, "complete");
    assert.equal(await reply.locator(".body").textContent(), "Model: gemini-2.5-flash; instructions: Answer like a pirate.");

    // After a reload, the panel shows what was saved.
    await page.reload();
    await tid(page, "chatroom-item").first().locator(".room-open").click();
    await tid(page, "chat-settings").click();
    await tid(page, "instructions-input").waitFor();
    assert.equal(await tid(page, "instructions-input").inputValue(), "Answer like a pirate.");
    assert.equal(await tid(page, "model-select").inputValue(), "");

    // A Pro user may choose it: the choice is kept and the replies come from it.
    sql(`UPDATE users SET tier = 'pro' WHERE email = '${email}'`);
    await tid(page, "model-select").selectOption("gemini-2.5-pro");
    await tid(page, "chat-settings-save").click();
    await page.locator("#settings-panel").waitFor({ state: "hidden" });
    await page.reload();
    await tid(page, "chatroom-item").first().locator(".room-open").click();
    await page.waitForFunction(() => document.getElementById("chat-meta").textContent === "Model: gemini-2.5-pro · Instructions set");
    await tid(page, "chat-settings").click();
    await tid(page, "model-select").waitFor();
    assert.equal(await tid(page, "model-select").inputValue(), "gemini-2.5-pro");
    assert.equal(await tid(page, "instructions-input").inputValue(), "Answer like a pirate.");
    await tid(page, "chat-settings").click();
    await page.locator("#settings-panel").waitFor({ state: "hidden" });
    const second = await sendMessage(page, "which model now?");
    await waitForStatus(second, "complete");
    assert.equal(await second.locator(".body").textContent(), "Model: gemini-2.5-pro; instructions: Answer like a pirate.");
    assert.equal(gemini.log.models[gemini.log.models.length - 1], "gemini-2.5-pro");
  });

  test("search finds messages; a result opens its chat at that message", async (t) => {
    const { page } = await newPage(t);
    await signIn(page);
    await newChat(page);
    const room = await tid(page, "chatroom-item").first().getAttribute("data-id");
    // An older chat: the match is its first message, 70 messages back (written straight
    // into the database, as in the history test).
    sql(`UPDATE chatrooms SET name = 'Fruit facts' WHERE id = '${room}';
      INSERT INTO messages (id, chatroom_id, user_id, role, content, status, created_at)
      SELECT gen_random_uuid(), c.id, c.user_id, 'user',
             CASE WHEN g = 1 THEN 'Where do kumquats grow best?' ELSE 'filler message ' || g END,
             'answered', now() - interval '1 hour' + g * interval '1 second'
      FROM chatrooms c, generate_series(1, 70) g WHERE c.id = '${room}'`);
    const target = sql(`SELECT id FROM messages WHERE chatroom_id = '${room}' AND content LIKE '%kumquats%'`);
    // The chat that is open when searching has a real exchange that matches too.
    await newChat(page);
    const reply = await sendMessage(page, "quick note: kumquats are small");
    await waitForStatus(reply, "complete");

    await tid(page, "search-input").fill("kumquats");
    await tid(page, "search-input").press("Enter");
    await tid(page, "search-result").first().waitFor();
    const results = tid(page, "search-result");
    assert.equal(await results.count(), 2);
    const hit = results.filter({ hasText: "Fruit facts" });
    assert.equal(await hit.count(), 1);
    assert.equal(await hit.getAttribute("data-message-id"), target);
    assert.equal(await hit.locator("mark").first().textContent(), "kumquats");
    assert.match(await hit.textContent(), /Where do kumquats grow best/);
    await page.screenshot({ path: path.join(SHOTS, "search-results.png") });
    await hit.click();
    await page.waitForFunction(() => document.getElementById("chat-title").textContent === "Fruit facts");
    const message = page.locator(`[data-testid="message"][data-id="${target}"]`);
    await message.waitFor();
    assert.equal(await message.locator(".body").textContent(), "Where do kumquats grow best?");
    assert.ok(await inView(message), "the message is scrolled into view");
    assert.match(await message.getAttribute("class"), /\bhit\b/);
    assert.equal(await page.locator('[data-testid="message"]').count(), 70, "older pages were loaded up to it");

    // Nothing found: said so.
    await tid(page, "search-input").fill("zanzibarxyz");
    await tid(page, "search-input").press("Enter");
    await page.waitForFunction(() => document.getElementById("search-status").textContent.startsWith("No message matches"));
    assert.equal(await results.count(), 0);
    await page.locator("#search-clear").click();
    assert.ok(await page.locator("#search-box").isHidden());
  });

  test("export downloads the account's data as JSON; a second one within 10 minutes is explained", async (t) => {
    const { page } = await newPage(t, { expected: [429] });
    const email = await signIn(page);
    await newChat(page);
    const reply = await sendMessage(page, "quick export check");
    await waitForStatus(reply, "complete");
    await tid(page, "account-menu").click();
    assert.equal(await tid(page, "account-menu").getAttribute("aria-expanded"), "true");
    const [download] = await Promise.all([page.waitForEvent("download"), tid(page, "export-data").click()]);
    assert.match(download.suggestedFilename(), /\.json$/);
    const data = JSON.parse(fs.readFileSync(await download.path(), "utf8"));
    assert.equal(data.account.email, email);
    assert.equal(data.chatrooms.length, 1);
    assert.deepEqual(data.chatrooms[0].messages.map((m) => [m.role, m.content]),
      [["user", "quick export check"], ["model", "Quick answer."]]);
    assert.ok(await tid(page, "export-data").isHidden(), "the menu closed");
    await tid(page, "account-menu").click();
    await tid(page, "export-data").click();
    await tid(page, "error").waitFor();
    assert.match(await page.locator("#error-text").textContent(), /^You can export your data once every 10 minutes\. Try again in (9|10) minutes\.$/);
  });

  test("delete the account: the dialog asks for a code, then the account is gone", async (t) => {
    const { page } = await newPage(t, { expected: [401] });
    const email = await signIn(page);
    await newChat(page);
    const token = await page.evaluate(() => localStorage.getItem("chatroom.token"));
    const me = (bearer) => fetch(`${BASE}/user/me`, { headers: { authorization: `Bearer ${bearer}` } });
    await tid(page, "account-menu").click();
    await tid(page, "delete-account").click();
    const dialog = page.locator("#delete-dialog");
    await dialog.waitFor();
    await page.waitForFunction((e) => document.getElementById("delete-email").textContent === e, email);
    // A wrong code: said in the dialog, and the session goes on.
    await tid(page, "delete-otp-input").fill("000000");
    await tid(page, "delete-confirm").click();
    await page.locator("#delete-error").waitFor();
    assert.match(await page.locator("#delete-error").textContent(), /code is wrong/);
    assert.equal(await page.evaluate(() => localStorage.getItem("chatroom.token")), token);
    await page.locator("#delete-cancel").click();
    await dialog.waitFor({ state: "hidden" });
    assert.equal((await me(token)).status, 200);
    assert.ok(await tid(page, "new-chatroom").isVisible());
    // With the code it sends: the account is deleted and the page signs out.
    await tid(page, "account-menu").click();
    await tid(page, "delete-account").click();
    await tid(page, "delete-send-code").click();
    const dev = tid(page, "delete-dev-code");
    await dev.waitFor();
    const code = (await dev.textContent()).match(/\d{6,}/)[0];
    await page.screenshot({ path: path.join(SHOTS, "delete-dialog.png") });
    await tid(page, "delete-otp-input").fill(code);
    await tid(page, "delete-confirm").click();
    await tid(page, "email-input").waitFor();
    assert.match(await page.locator("#signin-notice").textContent(), /account and all its chats have been deleted/);
    assert.ok(await dialog.isHidden());
    assert.ok(await tid(page, "new-chatroom").isHidden());
    assert.equal(await page.evaluate(() => localStorage.getItem("chatroom.token")), null);
    assert.equal((await me(token)).status, 401, "the old token is dead");
  });

  test("every reply has a Copy button that copies its raw text", async (t) => {
    const { page, context } = await newPage(t);
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
    await signIn(page);
    await newChat(page);
    const first = await sendMessage(page, "quick one");
    await waitForStatus(first, "complete");
    const second = await sendMessage(page, "What should I see in Oslo?");
    await waitForStatus(second, "streaming");
    assert.equal(await second.getByTestId("copy-reply").count(), 0, "no Copy while the reply is written");
    await waitForStatus(second, "complete");
    assert.equal(await tid(page, "copy-reply").count(), 2);
    assert.equal(await page.locator('[data-role="user"] [data-testid="copy-reply"]').count(), 0);
    const copied = async (b) => page.waitForFunction((el) => el.textContent === "Copied", await b.elementHandle());
    await second.getByTestId("copy-reply").click();
    await copied(second.getByTestId("copy-reply"));
    // The Markdown as written, not the rendered text.
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), DEFAULT_FRAMES.join(""));
    // Without the clipboard API's write: the hidden textarea and the copy command.
    await page.evaluate(() => { navigator.clipboard.writeText = () => Promise.reject(new DOMException("denied", "NotAllowedError")); });
    const firstCopy = page.locator('[data-testid="message"][data-role="model"]').first().getByTestId("copy-reply");
    await firstCopy.click();
    await copied(firstCopy);
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), "Quick answer.");
    assert.equal(await page.locator(".clipboard-helper").count(), 0);
  });

  test("layout at 1280×800: only the history scrolls, and it follows new text unless scrolled up", async (t) => {
    const { page } = await newPage(t);
    await signIn(page);
    await newChat(page);
    for (let n = 1; n <= 4; n += 1) {
      const reply = await sendMessage(page, `What should I see in Oslo on day ${n}?`);
      await waitForStatus(reply, "complete");
    }
    const measure = () => page.evaluate(() => {
      const h = document.getElementById("history");
      return { page: document.scrollingElement.scrollHeight, inner: innerHeight, height: h.scrollHeight, client: h.clientHeight, top: h.scrollTop };
    });
    let m = await measure();
    assert.ok(m.page <= m.inner, `the page is ${m.page}px tall in an ${m.inner}px window`);
    assert.ok(m.height > m.client + 100, `the history scrolls: ${JSON.stringify(m)}`);
    assert.ok(m.height - m.top - m.client < 4, `the newest reply is shown: ${JSON.stringify(m)}`);
    for (const [name, locator] of [
      ["Send", tid(page, "send-message")], ["the message box", tid(page, "message-input")],
      ["the header", page.locator(".topbar")], ["Sign out", tid(page, "sign-out")],
      ["New chat", tid(page, "new-chatroom")], ["the chat list", tid(page, "chatroom-item").first()],
      ["the chat title", page.locator("#chat-title")],
    ]) assert.ok(await inView(locator), `${name} is not within the window`);
    await page.evaluate(() => document.activeElement.blur());
    await page.screenshot({ path: path.join(SHOTS, "desktop-long-chat.png") });

    // Scrolled up (the mouse wheel), the reader keeps their place while the reply is written.
    const slow = await sendMessage(page, "tell me something slow");
    const shows = (word) => page.waitForFunction((w) => document.querySelector('[data-testid="message"][data-role="model"][data-status="streaming"] .body')?.textContent.includes(w), word);
    await shows("word3 ");
    await page.locator("#history").hover();
    await page.mouse.wheel(0, -100000);
    await page.waitForFunction(() => document.getElementById("history").scrollTop === 0);
    await shows("word12 ");
    m = await measure();
    assert.equal(m.top, 0, "the history stays where the reader scrolled");
    // Back at the end, it follows again.
    await page.mouse.wheel(0, 100000);
    await page.waitForFunction(() => { const h = document.getElementById("history"); return h.scrollHeight - h.scrollTop - h.clientHeight < 4; });
    const before = (await measure()).height;
    await page.waitForFunction((b) => document.getElementById("history").scrollHeight > b, before);
    await page.waitForTimeout(100); // a frame to paint and follow
    m = await measure();
    assert.ok(m.height - m.top - m.client < 4, `following the new text again: ${JSON.stringify(m)}`);
    await tid(page, "stop").click();
    await waitForStatus(slow, "cancelled");
    m = await measure();
    assert.ok(m.page <= m.inner, `the page is ${m.page}px tall in an ${m.inner}px window`);
    assert.ok(await inView(tid(page, "send-message")));
  });

  test("dark theme follows the system setting", async (t) => {
    const { page } = await newPage(t);
    await signIn(page);
    await newChat(page);
    const reply = await sendMessage(page, "What should I see in Oslo?");
    await waitForStatus(reply, "complete");
    const colors = () => page.evaluate(() => {
      const css = (el, p) => getComputedStyle(el)[p];
      const model = document.querySelector('[data-testid="message"][data-role="model"]');
      return { body: css(document.body, "backgroundColor"), text: css(document.body, "color"), reply: css(model, "backgroundColor") };
    });
    const luminance = (rgb) => {
      const [r, g, b] = rgb.match(/\d+/g).map(Number);
      return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
    };
    await page.emulateMedia({ colorScheme: "light" });
    const light = await colors();
    await page.emulateMedia({ colorScheme: "dark" });
    const dark = await colors();
    assert.notEqual(dark.body, light.body);
    assert.ok(luminance(light.body) > 0.8, `light background ${light.body}`);
    assert.ok(luminance(dark.body) < 0.2, `dark background ${dark.body}`);
    assert.ok(luminance(dark.text) > 0.7, `dark theme text ${dark.text}`);
    assert.ok(luminance(dark.reply) < 0.25, `dark theme reply ${dark.reply}`);
    await page.evaluate(() => document.activeElement.blur());
    await page.screenshot({ path: path.join(SHOTS, "desktop-dark.png") });
  });

  test("no console errors or page errors during the run", () => {
    assert.deepEqual(problems, []);
  });
});
