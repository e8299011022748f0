// A small markdown renderer for model output, which is untrusted: every piece of text becomes a DOM text node
// (textContent), never HTML. Fenced code blocks (with a copy button), inline code, bold, italic, headings,
// bullet and numbered lists, paragraphs. An unclosed fence (a reply still streaming) renders as code.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// `code`, **bold** / __bold__, *italic* / _italic_ ; anything else is text
const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=[^\s*])([\s\S]*?[^\s*])\*|\b_(?=\S)([\s\S]*?\S)_\b/g;

export function renderInline(text, parent) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
    if (m[2] !== undefined) parent.append(el("code", null, m[2]));
    else {
      const node = el(m[3] !== undefined || m[4] !== undefined ? "strong" : "em");
      renderInline(m[3] ?? m[4] ?? m[5] ?? m[6], node);
      parent.append(node);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
  return parent;
}

function codeBlock(lang, code) {
  const wrap = el("div", "code");
  const bar = el("div", "code-bar");
  bar.append(el("span", null, lang || "code"));
  const copy = el("button", "copy", "Copy");
  copy.type = "button";
  copy.addEventListener("click", () => {
    const done = () => { copy.textContent = "Copied"; setTimeout(() => { copy.textContent = "Copy"; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(code).then(done, () => {});
    else {  // plain http on another host: no clipboard API
      const area = el("textarea");
      area.value = code;
      document.body.append(area);
      area.select();
      try { document.execCommand("copy"); done(); } finally { area.remove(); }
    }
  });
  bar.append(copy);
  const pre = el("pre");
  pre.append(el("code", null, code));
  wrap.append(bar, pre);
  return wrap;
}

const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBER = /^\s*(\d+)[.)]\s+(.*)$/;
const HEADING = /^(#{1,6})\s+(.*)$/;

function renderBlocks(text, out) {
  const lines = text.split("\n");
  let para = [];
  let list = null;
  const flushPara = () => {
    if (!para.length) return;
    const p = el("p");
    para.forEach((line, i) => {
      if (i) p.append(el("br"));
      renderInline(line, p);
    });
    out.append(p);
    para = [];
  };
  for (const line of lines) {
    const bullet = BULLET.exec(line);
    const number = bullet ? null : NUMBER.exec(line);
    const heading = HEADING.exec(line);
    if (bullet || number) {
      flushPara();
      const tag = bullet ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = el(tag);
        if (number && number[1] !== "1") list.start = Number(number[1]);
        out.append(list);
      }
      list.append(renderInline(bullet ? bullet[1] : number[2], el("li")));
    } else if (heading) {
      flushPara();
      list = null;
      out.append(renderInline(heading[2], el(`h${Math.min(heading[1].length + 2, 6)}`)));
    } else if (!line.trim()) {
      flushPara();
      list = null;
    } else if (list && /^\s{2,}\S/.test(line)) {  // a continuation line of the last item
      const item = list.lastChild;
      item.append(document.createTextNode(" "));
      renderInline(line.trim(), item);
    } else {
      list = null;
      para.push(line);
    }
  }
  flushPara();
}

// Returns a DocumentFragment; `text` is never parsed as HTML.
export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const fence = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)[^\n]*\n/gm;
  let pos = 0;
  for (;;) {
    fence.lastIndex = pos;
    const open = fence.exec(text);
    if (!open) break;
    renderBlocks(text.slice(pos, open.index), out);
    const start = open.index + open[0].length;
    const close = new RegExp(`^\\s*${open[2][0] === "`" ? "`" : "~"}{${open[2].length},}\\s*$`, "m");
    const rest = text.slice(start);
    const end = close.exec(rest);
    const code = end ? rest.slice(0, end.index) : rest;
    out.append(codeBlock(open[3], code.replace(/\n$/, "")));
    if (!end) return out;
    pos = start + end.index + end[0].length;
  }
  renderBlocks(text.slice(pos), out);
  return out;
}
