// Safe Markdown: a tiny whitelist renderer that builds DOM nodes and puts model text in
// them only as text (textContent / text nodes), so nothing a model writes is ever parsed
// as HTML: `<img src=x onerror=...>` shows as those characters and loads nothing.
// Supported: paragraphs, line breaks, # headings, - and 1. lists, ``` code blocks,
// `code`, **bold**, *italic*, [links](https://...) (http and https only). No images.

/** Renders `source` into `target`, replacing what it held. */
export function renderMarkdown(target, source) {
  const fragment = document.createDocumentFragment();
  for (const block of blocks(String(source ?? ""))) fragment.append(block);
  target.replaceChildren(fragment);
}

function el(tag, children = []) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

function* blocks(text) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*```(.*)$/);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of a reply still streaming)
      const code = el("code");
      code.textContent = body.join("\n");
      yield el("pre", [code]);
      continue;
    }
    const heading = line.match(/^(#{1,3})\s+(.*)$/);
    if (heading) {
      yield el(`h${heading[1].length + 2}`, inline(heading[2]));
      i += 1;
      continue;
    }
    const item = /^\s*([-*+]|\d{1,3}[.)])\s+/;
    if (item.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const list = el(ordered ? "ol" : "ul");
      while (i < lines.length && item.test(lines[i]) && /^\s*\d/.test(lines[i]) === ordered) {
        list.append(el("li", inline(lines[i].replace(item, ""))));
        i += 1;
      }
      yield list;
      continue;
    }
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    const para = [];
    while (
      i < lines.length && lines[i].trim() !== "" && !/^\s*```/.test(lines[i]) &&
      !/^#{1,3}\s/.test(lines[i]) && !item.test(lines[i])
    ) {
      para.push(lines[i++]);
    }
    const children = [];
    para.forEach((l, n) => {
      if (n > 0) children.push(el("br"));
      children.push(...inline(l));
    });
    yield el("p", children);
  }
}

// Inline spans, outermost first; whatever matches no rule stays a text node.
// (No `_emphasis_`: underscores inside identifiers such as snake_case are far more common.)
const INLINE = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\([^)\s]+\))/;

function inline(text) {
  const out = [];
  let rest = text;
  while (rest) {
    const m = rest.match(INLINE);
    if (!m) {
      out.push(document.createTextNode(rest));
      break;
    }
    if (m.index > 0) out.push(document.createTextNode(rest.slice(0, m.index)));
    const token = m[0];
    if (m[1]) {
      const code = el("code");
      code.textContent = token.slice(1, -1);
      out.push(code);
    } else if (m[2]) {
      out.push(el("strong", inline(token.slice(2, -2))));
    } else if (m[3]) {
      out.push(el("em", inline(token.slice(1, -1))));
    } else {
      out.push(link(token));
    }
    rest = rest.slice(m.index + token.length);
  }
  return out;
}

function link(token) {
  const [, label, href] = token.match(/^\[([^\]]+)\]\(([^)\s]+)\)$/);
  let url = null;
  try {
    url = new URL(href);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    return document.createTextNode(token);
  }
  const a = el("a", inline(label));
  a.href = url.href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}
