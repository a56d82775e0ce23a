// A fake of the Gemini API for the browser tests: the shapes of generateContent and
// streamGenerateContent?alt=sse, with delays between frames so that a client can be
// seen rendering a reply while it is still being written. What it answers depends on
// words in the last user turn:
//   "title" request      → a short title at once
//   "inject"             → Markdown with HTML in it (must show as text)
//   "blocked"            → a safety block of the prompt
//   "fail"               → 400 the first time a text is seen (the message ends failed), then an answer
//   "slow"               → a long reply, one word every 250 ms (for stop)
//   "quick"              → a short reply at once
//   "again"              → "Answer number N." (N counts the requests for that text: a
//                          regenerated reply differs from the first), 3 frames 250 ms apart
//   "which model"        → the model of the request's URL and the chatroom's instructions
//   anything else        → a Markdown reply in 6 frames, 250 ms apart
// Any model name in the path (/v1beta/models/{model}:method) is answered; `log.models`
// records each reply's model.
import http from "node:http";

export const DEFAULT_FRAMES = ["Oslo has ", "**museums**, ", "fjords ", "and `code`.\n\n", "- Vigeland park\n", "- the Opera house"];
export const SLOW_WORDS = Array.from({ length: 60 }, (_, i) => `word${i + 1} `);
export const INJECTION = 'Look: <img src=x onerror="window.__injected=1"> and <script>window.__injected=2</script> **bold** [js](javascript:window.__injected=3)';

export async function startFakeGemini(port = 0) {
  const failedOnce = new Set();
  const asked = new Map();
  const log = { lastFrameAt: 0, requests: 0, models: [] };

  const plan = (text, model, instructions) => {
    if (text.startsWith("Write a title")) return { frames: ["Browser test chat"], gap: 0, title: true };
    if (text.includes("inject")) return { frames: [INJECTION], gap: 0 };
    if (text.includes("blocked")) return { blocked: true };
    if (text.includes("fail") && !failedOnce.has(text)) {
      failedOnce.add(text);
      return { status: 400 };
    }
    if (text.includes("slow")) return { frames: SLOW_WORDS, gap: 250 };
    if (text.includes("quick")) return { frames: ["Quick answer."], gap: 0 };
    if (text.includes("again")) {
      const n = (asked.get(text) || 0) + 1;
      asked.set(text, n);
      return { frames: ["Answer ", "number ", `${n}.`], gap: 250 };
    }
    if (text.includes("which model")) {
      return { frames: [`Model: ${model}; instructions: ${instructions || "none"}`], gap: 0 };
    }
    return { frames: DEFAULT_FRAMES, gap: 250 };
  };

  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (chunk) => { raw += chunk; });
    req.on("end", async () => {
      log.requests += 1;
      let text = "";
      let instructions = "";
      const model = decodeURIComponent((req.url.match(/\/models\/([^:/?]+)/) || [])[1] || "unknown");
      try {
        const body = JSON.parse(raw);
        const users = (body.contents || []).filter((c) => c.role === "user");
        text = users.length ? users[users.length - 1].parts.map((p) => p.text || "").join("") : "";
        // The service's system prompt, then the chatroom's instructions (their last line).
        const system = body.systemInstruction?.parts || [];
        if (system.length > 1) instructions = String(system[system.length - 1].text || "").split("\n").pop();
      } catch {
        res.writeHead(400, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { code: 400, status: "INVALID_ARGUMENT", message: "bad JSON" } }));
        return;
      }
      const p = plan(text, model, instructions);
      if (!p.title) log.models.push(model);
      const streaming = req.url.includes(":streamGenerateContent");
      if (p.status) {
        res.writeHead(p.status, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { code: p.status, status: "INVALID_ARGUMENT", message: "the fake refuses this prompt once" } }));
        return;
      }
      const usage = { promptTokenCount: 5, candidatesTokenCount: 5, totalTokenCount: 10 };
      if (p.blocked) {
        const blocked = { promptFeedback: { blockReason: "SAFETY" }, usageMetadata: usage };
        if (streaming) {
          res.writeHead(200, { "content-type": "text/event-stream" });
          res.end(`data: ${JSON.stringify(blocked)}\r\n\r\n`);
        } else {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify(blocked));
        }
        return;
      }
      const frame = (t, last) => ({
        candidates: [{ content: { role: "model", parts: [{ text: t }] }, ...(last ? { finishReason: "STOP" } : {}) }],
        ...(last ? { usageMetadata: usage } : {}),
      });
      if (streaming) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        for (let i = 0; i < p.frames.length; i += 1) {
          if (i > 0 && p.gap) await sleep(p.gap);
          if (res.destroyed) return; // the worker stopped reading (cancel)
          res.write(`data: ${JSON.stringify(frame(p.frames[i], i === p.frames.length - 1))}\r\n\r\n`);
          if (!p.title) log.lastFrameAt = Date.now(); // when the last frame of a reply left
        }
        res.end();
      } else {
        await sleep(p.gap * (p.frames.length - 1));
        if (!p.title) log.lastFrameAt = Date.now();
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(frame(p.frames.join(""), true)));
      }
    });
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    log,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
