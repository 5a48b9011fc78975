// seqdistill explorer: renders the run data embedded in the page's JSON block "data" (see seqdistill/viewer/page.py).
// Sample text is untrusted: this script never uses innerHTML, outerHTML, insertAdjacentHTML or
// document.write; every string from the data becomes a text node (el.append(string)) or an attribute
// value, and the only links it makes are in-page "#/..." routes.
(() => {
  "use strict";
  const D = JSON.parse(document.getElementById("data").textContent);
  const app = document.getElementById("app");
  const tabs = document.getElementById("tabs");
  const PAGE = 50; // cards rendered at a time; "show more" adds the next page
  const ROWS = 200; // held-out rows rendered at a time
  const SVGNS = "http://www.w3.org/2000/svg";
  const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + "%");
  const num = (v) => (v === null || v === undefined ? "?" : Number(v).toLocaleString("en"));

  // ---- DOM helpers ----------------------------------------------------------------------------------------------
  function safeHref(v) {
    const s = String(v);
    return s.startsWith("#") ? s : "#"; // only in-page routes, whatever the caller passed
  }
  function put(el, props, kids) {
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.setAttribute("class", v);
      else if (k === "href") el.setAttribute("href", safeHref(v));
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "style") Object.assign(el.style, v); // CSSOM: allowed by the CSP, unlike style=""
      else if (k === "text") el.textContent = String(v);
      else el.setAttribute(k, String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid)); // a string becomes a text node: never parsed as HTML
    }
    return el;
  }
  const h = (tag, props, ...kids) => put(document.createElement(tag), props, kids);
  const s = (tag, props, ...kids) => put(document.createElementNS(SVGNS, tag), props, kids);
  const route = (view, params) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
    const qs = q.toString();
    return "#/" + view + (qs ? "?" + qs : "");
  };
  const link = (text, view, params, cls) => h("a", { href: route(view, params), class: cls }, text);
  const clip = (t, n) => (t.length > n ? t.slice(0, n - 1) + "…" : t);

  // ---- indexes --------------------------------------------------------------------------------------------------
  const samples = D.samples;
  const prompts = D.prompts;
  const byPrompt = new Map(); // prompt id -> its teacher cards in the page
  for (const c of samples) {
    if (!byPrompt.has(c.prompt_id)) byPrompt.set(c.prompt_id, []);
    byPrompt.get(c.prompt_id).push(c);
  }
  const models = D.evals; // [{key, label, model, total, answers}]
  const answersOf = new Map(); // prompt id -> {model key -> [answers]}
  for (const m of models) {
    for (const a of m.answers) {
      if (!answersOf.has(a.prompt_id)) answersOf.set(a.prompt_id, {});
      const per = answersOf.get(a.prompt_id);
      (per[m.key] = per[m.key] || []).push(a);
    }
  }
  const heldout = [...answersOf.keys()].sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
  const rules = Object.keys(D.counts.rejected);
  const userText = (pid) => {
    const msgs = (prompts[pid] || {}).prompt || [];
    const users = msgs.filter((m) => m.role === "user");
    return (users.length ? users[users.length - 1] : msgs[msgs.length - 1] || { content: "" }).content;
  };
  let hay = null; // lower-cased searchable text per card, built on the first search
  const haystack = (c) => {
    if (!hay) hay = new Map();
    if (!hay.has(c)) {
      const p = prompts[c.prompt_id] || {};
      hay.set(c, [c.id, c.prompt_id, userText(c.prompt_id), p.reference, c.text, c.reasoning, c.answer, c.reason]
        .filter(Boolean).join("\n").toLowerCase());
    }
    return hay.get(c);
  };

  // A prompt's verdict for one model: the most common verdict of its answers, ties to the worse one.
  const RANK = { wrong: 3, unverifiable: 2, correct: 1, null: 0 };
  function verdictOf(pid, key) {
    const list = ((answersOf.get(pid) || {})[key]) || [];
    if (!list.length) return undefined;
    const n = {};
    for (const a of list) n[a.verdict] = (n[a.verdict] || 0) + 1;
    return Object.keys(n).sort((a, b) => n[b] - n[a] || RANK[b] - RANK[a])[0].replace("null", "") || null;
  }

  // ---- rendering untrusted text: reasoning, code fences, LaTeX -----------------------------------------------------
  function splitThink(text) {
    // <think>…</think> blocks; a "</think>" with no opening tag before it closes a trace the prompt opened
    const parts = [];
    let i = 0;
    const close0 = text.indexOf("</think>");
    const open0 = text.indexOf("<think>");
    if (close0 >= 0 && (open0 < 0 || close0 < open0)) {
      parts.push({ think: true, text: text.slice(0, close0) });
      i = close0 + 8;
    }
    while (i < text.length) {
      const o = text.indexOf("<think>", i);
      if (o < 0) { parts.push({ think: false, text: text.slice(i) }); break; }
      if (o > i) parts.push({ think: false, text: text.slice(i, o) });
      const c = text.indexOf("</think>", o + 7);
      if (c < 0) { parts.push({ think: true, text: text.slice(o + 7), unclosed: true }); break; }
      parts.push({ think: true, text: text.slice(o + 7, c) });
      i = c + 8;
    }
    return parts;
  }

  function thinkBlock(text, label) {
    return h("details", { class: "think" },
      h("summary", null, `${label} (${text.length.toLocaleString("en")} characters)`), prose(text.trim()));
  }

  function renderText(text, reasoning) {
    const box = h("div", { class: "text" });
    if (reasoning) box.append(thinkBlock(reasoning, "reasoning"));
    for (const part of splitThink(text || "")) {
      if (part.think) box.append(thinkBlock(part.text, part.unclosed ? "reasoning (not closed)" : "reasoning"));
      else if (part.text.trim()) box.append(prose(part.text));
    }
    if (!box.childNodes.length) box.append(h("span", { class: "empty" }, "(empty completion)"));
    return box;
  }

  const FENCE = /```([^\n`]*)\n([\s\S]*?)(?:\n```|$)/g;
  function prose(text) {
    const box = h("div", { class: "prose" });
    let i = 0;
    for (const m of text.matchAll(FENCE)) {
      if (m.index > i) box.append(inline(text.slice(i, m.index)));
      box.append(h("div", { class: "code" }, m[1].trim() ? h("span", { class: "lang" }, m[1].trim()) : null,
        h("pre", null, h("code", null, m[2]))));
      i = m.index + m[0].length;
    }
    if (i < text.length) box.append(inline(text.slice(i)));
    return box;
  }

  // math in prose: $$…$$, \[…\], \(…\), $…$ (no space inside the dollars, no digit after: not "$5 and $6"),
  // and a bare \boxed{…}, which math answers write outside any delimiter
  const MATH = /\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]|\\\(([\s\S]+?)\\\)|\$(?!\s)([^$\n]+?)(?<!\s)\$(?!\d)|\\(?:boxed|fbox)\s*\{/g;
  function inline(text) {
    const out = h("span", { class: "inline" });
    let i = 0;
    MATH.lastIndex = 0;
    let m;
    while ((m = MATH.exec(text)) !== null) {
      let src = m[1] ?? m[2] ?? m[3] ?? m[4];
      let end = m.index + m[0].length;
      if (src === undefined) { // bare \boxed{: take up to its matching brace
        let depth = 1, j = end;
        while (j < text.length && depth) { depth += text[j] === "{" ? 1 : text[j] === "}" ? -1 : 0; j++; }
        if (depth) continue;
        src = text.slice(m.index, j);
        end = j;
        MATH.lastIndex = j;
      }
      if (m.index > i) out.append(text.slice(i, m.index));
      if (/^\\(?:boxed|fbox)\s*\{\s*\}$/.test(src)) out.append(src); // an empty box reads better as written
      else out.append(tex(src, m[1] !== undefined || m[2] !== undefined, text.slice(m.index, end)));
      i = end;
    }
    if (i < text.length) out.append(text.slice(i));
    return out;
  }

  // A readable plain rendering of LaTeX, not a typesetter: \frac{a}{b} -> a/b, \sqrt{x} -> √(x), x^{2} -> x²
  // (as <sup>), \boxed{x} -> x in a box, symbols and Greek letters as Unicode, unknown commands as written.
  const SYM = {
    times: "×", cdot: "·", div: "÷", pm: "±", mp: "∓", le: "≤", leq: "≤", ge: "≥", geq: "≥", ne: "≠", neq: "≠",
    approx: "≈", equiv: "≡", sim: "∼", infty: "∞", to: "→", rightarrow: "→", leftarrow: "←", Rightarrow: "⇒",
    implies: "⇒", iff: "⇔", ldots: "…", cdots: "⋯", dots: "…", in: "∈", notin: "∉", subset: "⊂", subseteq: "⊆",
    cup: "∪", cap: "∩", forall: "∀", exists: "∃", partial: "∂", sum: "∑", prod: "∏", int: "∫", circ: "∘",
    angle: "∠", perp: "⊥", parallel: "∥", neg: "¬", land: "∧", lor: "∨", mid: "∣", lfloor: "⌊", rfloor: "⌋",
    lceil: "⌈", rceil: "⌉", langle: "⟨", rangle: "⟩", prime: "′", degree: "°", therefore: "∴",
    alpha: "α", beta: "β", gamma: "γ", delta: "δ", epsilon: "ε", varepsilon: "ε", zeta: "ζ", eta: "η", theta: "θ",
    iota: "ι", kappa: "κ", lambda: "λ", mu: "μ", nu: "ν", xi: "ξ", pi: "π", rho: "ρ", sigma: "σ", tau: "τ",
    phi: "φ", varphi: "φ", chi: "χ", psi: "ψ", omega: "ω", Gamma: "Γ", Delta: "Δ", Theta: "Θ", Lambda: "Λ",
    Xi: "Ξ", Pi: "Π", Sigma: "Σ", Phi: "Φ", Psi: "Ψ", Omega: "Ω",
    log: "log", ln: "ln", sin: "sin", cos: "cos", tan: "tan", exp: "exp", max: "max", min: "min", lim: "lim",
    gcd: "gcd", mod: "mod", bmod: "mod", quad: "\u2003", qquad: "\u2003\u2003",
    ",": "\u2009", ";": " ", ":": " ", "!": "", " ": " ", "%": "%", $: "$", "{": "{", "}": "}", "#": "#", "&": "&",
    _: "_", "\\": "\n", left: "", right: "", displaystyle: "", big: "", Big: "", bigl: "", bigr: "", Bigl: "",
    Bigr: "", limits: "", nolimits: "",
  };
  const WRAP = new Set(["text", "mathrm", "textbf", "mathbf", "textit", "mathit", "operatorname", "mathbb",
    "mathcal", "mbox", "hbox", "textrm", "mathsf", "texttt", "emph", "bar", "hat", "vec", "tilde", "dot",
    "overline", "underline", "widehat", "overrightarrow"]);
  const MAX_DEPTH = 40;
  const MAX_TEX = 4000;

  function tex(src, display, raw) {
    const el = h("span", { class: display ? "math display" : "math", title: raw });
    if (src.length > MAX_TEX) return put(el, null, [src]);
    try {
      const p = { src, i: 0 };
      put(el, null, [seq(p, 0, false)]);
    } catch (e) { // too deep: show it as written
      el.textContent = src;
    }
    return el;
  }
  function seq(p, depth, inGroup) {
    if (depth > MAX_DEPTH) throw new Error("too deep");
    const out = [];
    let buf = "";
    const flush = () => { if (buf) { out.push(buf); buf = ""; } };
    while (p.i < p.src.length) {
      const ch = p.src[p.i];
      if (ch === "}") { if (inGroup) { p.i++; break; } buf += ch; p.i++; continue; }
      if (ch === "{") { p.i++; flush(); out.push(h("span", null, seq(p, depth + 1, true))); continue; }
      if (ch === "^" || ch === "_") { p.i++; flush(); out.push(h(ch === "^" ? "sup" : "sub", null, arg(p, depth))); continue; }
      if (ch === "\\") { flush(); out.push(command(p, depth)); continue; }
      if (ch === "&") { buf += " "; p.i++; continue; }
      buf += ch;
      p.i++;
    }
    flush();
    return out;
  }
  function arg(p, depth) {
    while (p.src[p.i] === " ") p.i++;
    const ch = p.src[p.i];
    if (ch === undefined) return [];
    if (ch === "{") { p.i++; return seq(p, depth + 1, true); }
    if (ch === "\\") return [command(p, depth + 1)];
    p.i++;
    return [ch];
  }
  const plain = (nodes) => h("span", null, nodes).textContent;
  const paren = (nodes) => (/^[\w.′]+$/.test(plain(nodes)) ? nodes : ["(", ...nodes, ")"]);
  function command(p, depth) {
    const m = /^\\([A-Za-z]+|.)/.exec(p.src.slice(p.i, p.i + 40));
    if (!m) { p.i++; return "\\"; }
    p.i += m[0].length;
    const name = m[1];
    if (name === "frac" || name === "dfrac" || name === "tfrac") {
      const a = arg(p, depth), b = arg(p, depth);
      return h("span", { class: "frac" }, paren(a), "/", paren(b));
    }
    if (name === "sqrt") {
      let index = null;
      if (p.src[p.i] === "[") { const j = p.src.indexOf("]", p.i); if (j > 0) { index = p.src.slice(p.i + 1, j); p.i = j + 1; } }
      return h("span", null, index ? h("sup", null, index) : null, "√", paren(arg(p, depth)));
    }
    if (name === "boxed" || name === "fbox") return h("span", { class: "boxed" }, arg(p, depth));
    if (name === "begin" || name === "end") { arg(p, depth); return name === "end" ? "\n" : ""; }
    if (WRAP.has(name)) return h("span", { class: name === "overline" || name === "bar" ? "over" : null }, arg(p, depth));
    if (Object.prototype.hasOwnProperty.call(SYM, name)) return SYM[name];
    return "\\" + name;
  }

  // ---- shared pieces ------------------------------------------------------------------------------------------
  function badge(verdict) {
    const v = verdict || "no verdict";
    return h("span", { class: "verdict v-" + v.replace(" ", "-") }, v);
  }
  function sourceToggle(target, raw) {
    let shown = false;
    let saved = null;
    return h("button", { class: "src-toggle", type: "button", onclick: (e) => {
      shown = !shown;
      e.target.textContent = shown ? "rendered" : "source";
      if (shown) { saved = [...target.childNodes]; target.replaceChildren(h("pre", { class: "raw" }, raw)); }
      else target.replaceChildren(...saved);
    } }, "source");
  }

  function card(c) {
    const p = prompts[c.prompt_id] || {};
    const st = p.stats || {};
    const body = renderText(c.text, c.reasoning);
    const raw = (c.reasoning ? "[reasoning_content]\n" + c.reasoning + "\n[content]\n" : "") + c.text;
    return h("article", { class: "card " + c.cat, "data-id": c.id, "data-cat": c.cat, "data-rule": c.rule || "" },
      h("div", { class: "head" },
        h("span", { class: "badge " + c.cat }, c.cat === "kept" ? "kept" : "rejected: " + c.rule),
        badge(c.verdict),
        link("prompt " + c.prompt_id, "prompt", { id: c.prompt_id }, "plink"),
        h("span", null, "sample " + c.index),
        st.pass_rate !== null && st.pass_rate !== undefined ? h("span", null, "pass rate " + pct(st.pass_rate)) : null,
        h("span", null, `${c.length} ${unitShort}`),
        c.finish && c.finish !== "stop" ? h("span", { class: "warn" }, "finish: " + c.finish) : null,
        h("span", { class: "src", title: "file:line of the full record" }, c.src),
        sourceToggle(body, raw)),
      c.reason ? h("div", { class: "reason" }, h("b", null, "reason: "), c.reason) : null,
      h("div", { class: "answers" }, h("b", null, "answer: "), h("code", null, c.answer ?? (c.verdict ? "(none extracted)" : "(not checked)")),
        h("b", null, "  reference: "), h("code", null, p.reference ?? "(none)")),
      h("details", { class: "prompt" }, h("summary", null, "prompt: " + clip(userText(c.prompt_id), 140)),
        messages(p.prompt || [])),
      body,
      c.clipped ? h("div", { class: "warn" }, `clipped at ${num(D.meta.max_text)} characters: the full text is at ${c.src}`) : null);
  }
  const unitShort = /^tokens/.test(D.meta.unit) ? "tokens" : "words";

  function messages(list) {
    return h("div", { class: "messages" }, list.map((m) => h("div", { class: "msg" },
      h("span", { class: "role" }, m.role), renderText(m.content, null))));
  }

  function pager(items, render, size, container) {
    let shown = 0;
    const more = h("button", { class: "more", type: "button" });
    const step = () => {
      const next = items.slice(shown, shown + size);
      container.append(...next.map(render));
      shown += next.length;
      more.textContent = `show ${Math.min(size, items.length - shown)} more (${items.length - shown} left)`;
      more.hidden = shown >= items.length;
    };
    more.addEventListener("click", step);
    step();
    return more;
  }

  // ---- the samples view ---------------------------------------------------------------------------------------
  const FILTERS = ["cat", "rule", "reason", "verdict", "prompt", "pmin", "pmax", "lmin", "lmax", "q"];
  function matches(c, f) {
    if (f.cat && c.cat !== f.cat) return false;
    if (f.rule && c.rule !== f.rule) return false;
    if (f.reason && c.reason_group !== f.reason) return false;
    if (f.verdict && (c.verdict || "none") !== f.verdict) return false;
    if (f.prompt && !c.prompt_id.includes(f.prompt)) return false;
    const pr = ((prompts[c.prompt_id] || {}).stats || {}).pass_rate;
    if (f.pmin !== "" && f.pmin !== undefined && !(pr >= Number(f.pmin))) return false;
    if (f.pmax !== "" && f.pmax !== undefined && !(pr <= Number(f.pmax))) return false;
    if (f.lmin !== "" && f.lmin !== undefined && c.length < Number(f.lmin)) return false;
    if (f.lmax !== "" && f.lmax !== undefined && c.length > Number(f.lmax)) return false;
    if (f.q && !haystack(c).includes(f.q.toLowerCase())) return false;
    return true;
  }

  function select(name, value, options) {
    const el = h("select", { name });
    for (const [v, label] of options) {
      const o = h("option", { value: v }, label);
      if (v === value) o.selected = true;
      el.append(o);
    }
    return el;
  }
  function field(label, control) { return h("label", null, h("span", null, label), control); }
  function input(name, value, attrs) { const el = h("input", { name, ...attrs }); el.value = value || ""; return el; }

  function samplesView(f) {
    const rejectedTotal = rules.reduce((n, r) => n + D.counts.rejected[r], 0);
    const reasons = new Map();
    for (const c of samples) if (c.reason_group && (!f.rule || c.rule === f.rule)) reasons.set(c.reason_group, (reasons.get(c.reason_group) || 0) + 1);
    const form = h("form", { id: "filters", onsubmit: (e) => e.preventDefault() },
      field("samples", select("cat", f.cat, [["", "all"], ["kept", "kept"], ["rejected", "rejected"]])),
      field("rule", select("rule", f.rule, [["", "any"], ...rules.map((r) => [r, `${r} (${num(D.counts.rejected[r])})`])])),
      field("reason", select("reason", f.reason, [["", "any"], ...[...reasons].sort((a, b) => b[1] - a[1]).slice(0, 100)
        .map(([r, n]) => [r, `${clip(r, 60)} (${n})`])])),
      field("verdict", select("verdict", f.verdict, [["", "any"], ["correct", "correct"], ["wrong", "wrong"],
        ["unverifiable", "unverifiable"], ["none", "no check"]])),
      field("prompt id", input("prompt", f.prompt, { size: 10 })),
      field("pass rate", h("span", null, input("pmin", f.pmin, { type: "number", step: "0.05", min: 0, max: 1, placeholder: "min" }),
        "–", input("pmax", f.pmax, { type: "number", step: "0.05", min: 0, max: 1, placeholder: "max" }))),
      field(`length (${unitShort})`, h("span", null, input("lmin", f.lmin, { type: "number", min: 0, placeholder: "min" }),
        "–", input("lmax", f.lmax, { type: "number", min: 0, placeholder: "max" }))),
      field("search", input("q", f.q, { type: "search", size: 24, placeholder: "text, answer, reason, id" })));
    let timer = null;
    const update = () => {
      if (!form.isConnected) return; // a debounced update after the user has moved on to another view
      const next = {};
      for (const k of FILTERS) next[k] = form.elements[k].value;
      if (next.rule && !f.rule && !next.cat) next.cat = "rejected";
      history.replaceState(null, "", route("samples", next));
      render();
    };
    form.addEventListener("change", update);
    form.addEventListener("input", (e) => {
      if (e.target.name !== "q" && e.target.name !== "prompt") return;
      clearTimeout(timer);
      timer = setTimeout(update, 200);
    });
    const hits = samples.filter((c) => matches(c, f));
    const list = h("div", { id: "cards" });
    const whole = D.counts.kept + rejectedTotal;
    let scope = `The page holds ${num(samples.length)} of the run's ${num(whole)} teacher samples`;
    if (f.rule) {
      const inPage = samples.filter((c) => c.rule === f.rule).length;
      scope = `The page holds ${num(inPage)} of the ${num(D.counts.rejected[f.rule])} samples dropped by ${f.rule}`;
    } else if (f.cat === "kept") {
      scope = `The page holds ${num(samples.filter((c) => c.cat === "kept").length)} of the ${num(D.counts.kept)} kept samples`;
    }
    const capped = samples.length < whole ? ` (at most ${num(D.counts.max_samples)} per category, chosen by hash)` : "";
    return [form,
      h("p", { id: "count" }, h("b", null, `${num(hits.length)} match`), `. ${scope}${capped}.`),
      list, pager(hits, card, PAGE, list)];
  }

  // ---- one prompt ---------------------------------------------------------------------------------------------
  function promptView(pid) {
    const p = prompts[pid];
    if (!p) return [h("p", { class: "missing" }, "This prompt is not in the page (it may be beyond the cap of samples embedded per category).")];
    const st = p.stats;
    const cards = byPrompt.get(pid) || [];
    const out = [h("h2", null, "Prompt ", h("code", null, pid)), messages(p.prompt)];
    if (p.teacher_prompt) out.push(h("details", { class: "prompt" }, h("summary", null, "the teacher's prompt (it differs from the student's)"), messages(p.teacher_prompt)));
    out.push(h("p", null, h("b", null, "reference: "), h("code", null, p.reference ?? "(none)")));
    if (st) {
      out.push(h("p", { id: "prompt-stats" }, `Teacher: ${st.samples} samples, ${st.kept} kept, ${st.rejected} rejected; `,
        h("b", null, "pass rate " + pct(st.pass_rate)), ` (${st.correct} correct, ${st.wrong} wrong, ${st.unverifiable} unverifiable)`,
        cards.length < st.samples ? `; ${cards.length} of them are in the page` : ""));
    }
    const ans = answersOf.get(pid);
    if (ans) {
      out.push(h("h3", null, "Answers of the evaluated models"));
      out.push(h("div", { class: "sbs", style: { gridTemplateColumns: `repeat(${models.length}, minmax(12rem, 1fr))` } },
        models.map((m) => h("div", { class: "col", "data-model": m.key },
          h("div", { class: "colhead" }, h("b", null, m.label), h("div", { class: "model" }, m.model)),
          (ans[m.key] || []).length ? ans[m.key].map(answerBox) : h("p", { class: "missing" }, "no answer in the page")))));
    }
    if (cards.length) {
      out.push(h("h3", null, `Teacher samples (${cards.length})`));
      out.push(h("div", { id: "cards" }, cards.map(card)));
    }
    return out;
  }
  function answerBox(a) {
    const body = renderText(a.text, a.reasoning);
    return h("div", { class: "answer", "data-verdict": a.verdict || "" },
      h("div", { class: "head" }, badge(a.verdict), h("span", null, "answer: "), h("code", null, a.answer ?? "(none extracted)"),
        h("span", { class: "src" }, a.src), sourceToggle(body, a.text)),
      a.reason ? h("div", { class: "reason" }, a.reason) : null, body);
  }

  // ---- held-out prompts: each model's verdict side by side -----------------------------------------------------------
  const has = (k) => models.some((m) => m.key === k);
  const PRESETS = [
    ["", "all held-out prompts", {}],
    ["after_wrong", "student after wrong (or unverifiable)", { wrong: "student_after" }],
    ["after_fixed", "student after right where before was wrong", { right: "student_after", wrong: "student_before" }],
    ["after_broke", "student after wrong where before was right", { right: "student_before", wrong: "student_after" }],
    ["teacher_right_after_wrong", "teacher right, student after wrong", { right: "teacher", wrong: "student_after" }],
  ];
  function heldoutView(f) {
    const preset = (PRESETS.find((x) => x[0] === f.show) || PRESETS[0])[2];
    const right = (f.right || preset.right || "").split(",").filter(Boolean);
    const wrong = (f.wrong || preset.wrong || "").split(",").filter(Boolean);
    const q = (f.q || "").toLowerCase();
    const rows = heldout.filter((pid) => right.every((k) => verdictOf(pid, k) === "correct")
      && wrong.every((k) => verdictOf(pid, k) !== undefined && verdictOf(pid, k) !== "correct")
      && (!q || (pid + "\n" + userText(pid) + "\n" + ((prompts[pid] || {}).reference || "") + "\n" +
        models.flatMap((m) => ((answersOf.get(pid) || {})[m.key] || []).map((a) => a.text)).join("\n")).toLowerCase().includes(q)));
    const form = h("form", { id: "filters", onsubmit: (e) => e.preventDefault() },
      field("show", select("show", f.show || "", PRESETS.filter(([k, , c]) => !k || [...Object.values(c)].every(has)).map(([k, l]) => [k, l]))),
      field("search", input("q", f.q, { type: "search", size: 24 })));
    let timer = null;
    const update = () => {
      if (!form.isConnected) return; // a debounced update after the user has moved on to another view
      const show = form.elements.show.value;
      const kept = show === (f.show || ""); // a bar's model filter (right=/wrong=) lasts until another is chosen
      history.replaceState(null, "", route("heldout", { show, q: form.elements.q.value,
        right: kept ? f.right : "", wrong: kept ? f.wrong : "" }));
      render();
    };
    form.addEventListener("change", update);
    form.addEventListener("input", (e) => {
      if (e.target.name !== "q") return; // a select reports "change" too: update once, not twice
      clearTimeout(timer);
      timer = setTimeout(update, 200);
    });
    const head = h("tr", null, h("th", null, "prompt"), h("th", null, "question"), h("th", null, "reference"),
      models.map((m) => h("th", null, m.label)));
    const body = h("tbody");
    const row = (pid) => h("tr", { "data-prompt": pid },
      h("td", null, link(pid, "prompt", { id: pid })), h("td", null, clip(userText(pid), 120)),
      h("td", null, h("code", null, (prompts[pid] || {}).reference ?? "")),
      models.map((m) => {
        const a = ((answersOf.get(pid) || {})[m.key] || [])[0];
        const v = verdictOf(pid, m.key);
        return h("td", { class: "v-" + (v || "none"), "data-model": m.key }, v === undefined ? "" : [mark(v), " ", h("code", null, a.answer ?? "–")]);
      }));
    const cond = [...right.map((k) => `${label(k)} right`), ...wrong.map((k) => `${label(k)} wrong or unverifiable`)].join(", ");
    const totals = models.map((m) => `${m.label} ${num(m.answers.length)} of ${num(m.total)}`).join("; ");
    return [form,
      h("p", { id: "count" }, h("b", null, `${num(rows.length)} of ${num(heldout.length)} held-out prompts`),
        cond ? ` where ${cond}` : "", `. Answers in the page: ${totals}.`),
      h("table", { class: "heldout" }, h("thead", null, head), body), pager(rows, row, ROWS, body)];
  }
  const label = (k) => (models.find((m) => m.key === k) || { label: k }).label;
  const mark = (v) => h("span", { class: "mark", title: v || "no verdict" }, v === "correct" ? "✓" : v === "wrong" ? "✗" : "?");

  // ---- overview: the report's figures, each bar a link to its samples ------------------------------------------------
  function overview() {
    const out = [];
    for (const p of D.problems) out.push(h("p", { class: "missing" }, p));
    out.push(h("p", null, `Run ${D.meta.run_dir}: ${num(D.counts.prompts)} training prompts, ${num(D.counts.kept)} kept and `,
      `${num(rules.reduce((n, r) => n + D.counts.rejected[r], 0))} rejected samples, ${num(heldout.length)} held-out prompts in the page. `,
      link("Browse the samples", "samples", {}), " · ", link("Held-out answers", "heldout", {})));
    out.push(h("section", { id: "funnel" }, h("h2", null, "Filter funnel"), D.funnel ? funnel(D.funnel) : missing("no filter report")));
    out.push(h("section", { id: "lengths" }, h("h2", null, "Completion lengths of the kept samples"), D.lengths ? lengths(D.lengths) : missing("no kept samples")));
    out.push(h("section", { id: "loss" }, h("h2", null, "Training loss"), D.loss ? loss(D.loss) : missing("no training report with a loss history")));
    out.push(h("section", { id: "accuracy" }, h("h2", null, "Held-out accuracy"), D.accuracy.length ? accuracy(D.accuracy) : missing("no eval results in summary.json")));
    return out;
  }
  const missing = (why) => h("p", { class: "missing" }, "not available: " + why);

  function funnel(fn) {
    const max = Math.max(1, ...fn.rows.map((r) => r.dropped || 0));
    const table = h("table", { class: "funnel" }, h("thead", null, h("tr", null,
      ["rule", "in", "dropped", "", "kept"].map((t) => h("th", null, t)))));
    const body = h("tbody");
    for (const r of fn.rows) {
      const to = route("samples", { cat: "rejected", rule: r.rule });
      body.append(h("tr", { "data-rule": r.rule, class: r.dropped ? "clickable" : null },
        h("td", null, r.dropped ? h("a", { href: to }, r.rule) : r.rule), h("td", { class: "num" }, num(r.in)),
        h("td", { class: "num" }, num(r.dropped)),
        h("td", { class: "barcell" }, h("a", { href: to, class: "bar", title: `${r.dropped} dropped by ${r.rule}: show them`, style: { width: (100 * (r.dropped || 0) / max) + "%" } })),
        h("td", { class: "num" }, num(r.kept))));
    }
    body.append(h("tr", { "data-rule": "", class: "clickable" }, h("td", null, link("kept", "samples", { cat: "kept" })),
      h("td"), h("td"), h("td"), h("td", { class: "num" }, num(fn.kept))));
    table.append(body);
    const checks = Object.entries(fn.check).filter(([k]) => k !== "name");
    return [h("p", null, `${num(fn.total)} samples in, ${num(fn.kept)} kept. Click a rule for the samples it dropped.`), table,
      checks.length ? h("p", null, `Answer check ${fn.check.name || ""}: `, checks.map(([k, v]) => `${k} ${v}`).join(", ")) : null];
  }

  function barChart(bars, opts) {
    // bars: [{label, sub, value, href, title, ci: [lo, hi]}]; values in [0, opts.max]
    const W = Math.max(480, Math.min(960, bars.length * (opts.barWidth || 60) + 80)), H = 260, L = 50, B = opts.rotate ? 60 : 40, T = 20;
    const max = opts.max || Math.max(1, ...bars.map((b) => b.value));
    const bw = (W - L - 10) / bars.length;
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart", role: "img", "aria-label": opts.title });
    for (const t of opts.ticks) {
      svg.append(s("line", { x1: L, x2: W - 5, y1: y(t), y2: y(t), class: "grid" }),
        s("text", { x: L - 6, y: y(t) + 4, class: "tick", "text-anchor": "end" }, opts.fmt(t)));
    }
    bars.forEach((b, i) => {
      const x = L + i * bw + bw * 0.12, w = bw * 0.76;
      const g = s("a", { href: b.href, class: "barlink", "data-label": b.label },
        s("title", null, b.title),
        s("rect", { x, y: y(b.value), width: Math.max(1, w), height: Math.max(0, y(0) - y(b.value)), class: "bar" }));
      if (b.ci) {
        const cx = x + w / 2;
        g.append(s("line", { x1: cx, x2: cx, y1: y(b.ci[0]), y2: y(b.ci[1]), class: "ci" }),
          s("line", { x1: cx - 6, x2: cx + 6, y1: y(b.ci[0]), y2: y(b.ci[0]), class: "ci" }),
          s("line", { x1: cx - 6, x2: cx + 6, y1: y(b.ci[1]), y2: y(b.ci[1]), class: "ci" }));
      }
      if (opts.valueLabels) g.append(s("text", { x: x + w / 2, y: y(b.ci ? Math.max(b.ci[1], b.value) : b.value) - 5, "text-anchor": "middle", class: "val" }, opts.fmt(b.value)));
      if (!opts.sparseLabels || i % Math.ceil(bars.length / 12) === 0) {
        g.append(s("text", { x: x + w / 2, y: H - B + 16, "text-anchor": "middle", class: "tick" }, b.label));
        if (b.sub) g.append(s("text", { x: x + w / 2, y: H - B + 30, "text-anchor": "middle", class: "tick sub" }, clip(b.sub, 28)));
      }
      svg.append(g);
    });
    if (opts.xlabel) svg.append(s("text", { x: (W + L) / 2, y: H - 4, "text-anchor": "middle", class: "axis" }, opts.xlabel));
    return svg;
  }
  function niceTicks(max) {
    const step = Math.pow(10, Math.floor(Math.log10(Math.max(1, max / 4))));
    const k = [1, 2, 5, 10].find((m) => max / (m * step) <= 5) * step;
    const t = [];
    for (let v = 0; v <= max + 1e-9; v += k) t.push(v);
    return t;
  }

  function lengths(L) {
    const max = Math.max(...L.bins.map((b) => b[2]));
    const bars = L.bins.map(([lo, hi, n]) => ({
      label: lo === hi ? String(lo) : `${lo}`, value: n, href: route("samples", { cat: "kept", lmin: lo, lmax: hi }),
      title: `${n} kept samples of ${lo === hi ? lo : lo + "–" + hi} ${unitShort}: show them`,
    }));
    return [h("p", null, `${num(L.count)} kept completions in ${L.unit}; median ${L.median}. Click a bar for its samples.`),
      barChart(bars, { max, ticks: niceTicks(max), fmt: (v) => String(Math.round(v)), sparseLabels: true, barWidth: 18, xlabel: unitShort, title: "lengths" })];
  }

  function loss(Ls) {
    const W = 640, H = 240, L = 50, B = 36, T = 16, R = 20;
    const pts = Ls.points;
    const xs = pts.map((p) => p[0]), all = pts.map((p) => p[1]).concat(Ls.eval_loss ?? []);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), ymax = Math.max(...all) * 1.1 || 1;
    const x = (v) => L + (W - L - R) * (v - x0) / (x1 - x0), y = (v) => T + (H - T - B) * (1 - v / ymax);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart", role: "img", "aria-label": "training loss" });
    for (const t of niceTicks(ymax).filter((t) => t <= ymax)) {
      svg.append(s("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), class: "grid" }), s("text", { x: L - 6, y: y(t) + 4, "text-anchor": "end", class: "tick" }, String(+t.toFixed(3))));
    }
    svg.append(s("polyline", { points: pts.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), class: "line" }));
    for (const p of pts) svg.append(s("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, class: "dot" }, s("title", null, `step ${p[0]}: loss ${p[1]}`)));
    if (Ls.eval_loss !== null) svg.append(s("text", { x: x(x1), y: y(Ls.eval_loss) + 5, "text-anchor": "middle", class: "star" }, "★", s("title", null, `eval loss ${Ls.eval_loss}`)));
    svg.append(s("text", { x: L, y: H - 6, class: "tick" }, `step ${x0}`), s("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "tick" }, `step ${x1}`));
    return [h("p", null, `Training loss of ${Ls.model} at each logged step: ${pts[0][1].toFixed(3)} → ${pts[pts.length - 1][1].toFixed(3)}`,
      Ls.eval_loss !== null ? `; eval loss at the end ${Ls.eval_loss.toFixed(3)} (★).` : "."), svg];
  }

  function accuracy(acc) {
    const bars = acc.map((a) => ({ label: a.label, sub: a.model, value: a.accuracy, ci: a.ci,
      href: route("heldout", { wrong: a.key }), title: `${a.label}: ${pct(a.accuracy)}${a.ci ? ` (95% CI ${pct(a.ci[0])}–${pct(a.ci[1])})` : ""}; show the prompts it got wrong` }));
    const table = h("table", null, h("thead", null, h("tr", null, ["", "model", "samples", "correct", "wrong", "unverifiable", "accuracy", "95% CI"].map((t) => h("th", null, t)))),
      h("tbody", null, acc.map((a) => h("tr", null, h("td", null, link(a.label, "heldout", { wrong: a.key })), h("td", null, a.model),
        ["samples", "correct", "wrong", "unverifiable"].map((k) => h("td", { class: "num" }, num(a[k]))), h("td", { class: "num" }, pct(a.accuracy)),
        h("td", null, a.ci ? `${pct(a.ci[0])} – ${pct(a.ci[1])}${a.ci_method ? " (" + a.ci_method + ")" : ""}` : "-")))));
    const out = [h("p", null, "Share of held-out answers judged correct" + (acc.some((a) => a.ci) ? ", with 95% confidence intervals" : "") + ". Click a bar for the prompts that model got wrong."),
      barChart(bars, { max: 1, ticks: [0, 0.25, 0.5, 0.75, 1], fmt: (v) => Math.round(100 * v) + "%", valueLabels: true, barWidth: 150, title: "accuracy" }), table];
    if (D.comparisons.length) {
      const keys = [...new Set(D.comparisons.flatMap((c) => Object.keys(c)))];
      out.push(h("h3", null, "Paired comparisons"), h("table", { class: "comparisons" }, h("thead", null, h("tr", null, keys.map((k) => h("th", null, k)))),
        h("tbody", null, D.comparisons.map((c) => h("tr", null, keys.map((k) => h("td", null, c[k] ?? "")))))));
    }
    return out;
  }

  // ---- routing ----------------------------------------------------------------------------------------------------
  function parse() {
    const m = /^#\/([a-z]+)(?:\?(.*))?$/.exec(location.hash);
    const params = Object.fromEntries(new URLSearchParams(m ? m[2] || "" : ""));
    return { view: m ? m[1] : "overview", params };
  }
  function render() {
    const { view, params } = parse();
    const views = [["overview", "Overview"], ["samples", `Samples (${num(samples.length)})`], ["heldout", `Held-out answers (${num(heldout.length)})`]];
    tabs.replaceChildren(...views.map(([v, t]) => h("a", { href: route(v, {}), class: v === view ? "active" : null }, t)));
    let content;
    if (view === "samples") content = samplesView(params);
    else if (view === "prompt") content = promptView(params.id || "");
    else if (view === "heldout") content = heldoutView(params);
    else content = overview();
    app.replaceChildren(...[content].flat());
    document.documentElement.dataset.view = view; // for tests and styles: which view is shown
  }
  window.addEventListener("hashchange", () => { render(); window.scrollTo(0, 0); });
  render();
  document.documentElement.dataset.ready = "1";
})();
