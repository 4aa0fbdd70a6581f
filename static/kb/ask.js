// The ask page: sends the question, streams the answer in as it is written, then
// turns [n] markers into links to the cited passages. All text goes in as text nodes.
(function () {
  "use strict";
  const form = document.getElementById("ask-form");
  const list = document.getElementById("exchanges");
  const template = document.getElementById("exchange-template");
  const csrf = () => document.querySelector("input[name=csrfmiddlewaretoken]").value;

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text) node.textContent = text;
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  }

  function where(item) {
    return item.document_title + (item.page ? ", page " + item.page : "");
  }

  // The answer with each [n] as a link to source n's passage.
  function renderAnswer(target, text, citations) {
    const urls = new Map(citations.map((c) => [String(c.n), c.url]));
    target.replaceChildren();
    text.split(/\[(\d{1,3})\]/).forEach((piece, i) => {
      if (i % 2 === 0) target.append(piece);
      else if (urls.has(piece)) target.append(el("a", "[" + piece + "]", { href: urls.get(piece), class: "cite", "aria-label": "source " + piece }));
      else target.append("[" + piece + "]");
    });
  }

  function renderSources(node, citations) {
    const list = node.querySelector(".sources");
    citations.forEach((c) => {
      const item = el("li", "", { value: c.n });
      item.append(el("a", where(c), { href: c.url }), el("blockquote", c.quote));
      list.append(item);
    });
    list.hidden = node.querySelector(".sources-title").hidden = citations.length === 0;
  }

  function renderPassages(node, passages) {
    if (!passages.length) return;
    const box = node.querySelector(".closest");
    passages.forEach((p) => {
      const item = el("li");
      item.append(el("a", where(p), { href: p.url }), el("blockquote", p.text));
      box.querySelector("ol").append(item);
    });
    box.hidden = false;
  }

  function notice(node, text) {
    node.querySelector(".notices").append(el("p", text, { class: "notice", role: "alert" }));
  }

  function addToSidebar(id, title) {
    let list = document.querySelector(".sidebar ul");
    if (!list) {
      list = el("ul");
      const none = document.querySelector(".sidebar p.muted");
      if (none) none.replaceWith(list); else document.querySelector(".sidebar").append(list);
    }
    const item = el("li");
    item.append(el("a", title, { href: "/conversations/" + id, "aria-current": "page" }));
    list.prepend(item);
  }

  function parse(raw) {
    let event = "message", data = "";
    raw.split("\n").forEach((line) => {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    });
    return { event: event, data: data ? JSON.parse(data) : null };
  }

  async function ask(event) {
    event.preventDefault();
    const body = new FormData(form);
    const question = String(body.get("question") || "").trim();
    if (!question) return;
    const node = template.content.firstElementChild.cloneNode(true);
    const answer = node.querySelector(".answer");
    const state = node.querySelector(".state");
    node.querySelector(".question").textContent = question;
    list.append(node);
    state.textContent = "Searching your documents…";
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    form.question.value = "";
    let text = "", tokens = 0, citations = [];
    const handle = ({ event, data }) => {
      if (event === "token") {
        text += data;
        tokens += 1;
        node.dataset.tokens = tokens;
        answer.textContent = text;
        state.textContent = "Answering…";
      } else if (event === "queued") {
        const n = data.ahead;
        state.textContent = (n === 1 ? "1 question" : n + " questions") + " ahead of yours: waiting for the model…";
      } else if (event === "passages") {
        renderPassages(node, data);
      } else if (event === "unavailable" || event === "error") {
        notice(node, data.detail + " The closest passages are below.");
      } else if (event === "citations") {
        citations = data;
      } else if (event === "done") {
        renderAnswer(answer, data.answer, citations);
        renderSources(node, citations);
        if (data.refused) notice(node, "The documents you may read do not answer this.");
        else if (data.unsupported_sentences > 0) {
          const n = data.unsupported_sentences;
          notice(node, n + (n === 1 ? " sentence cites" : " sentences cite") + " no source: check it against the documents.");
        }
      } else if (event === "private") {
        notice(node, "Private question: not kept in your conversations.");
      } else if (event === "saved") {
        if (!form.conversation.value) addToSidebar(data.conversation_id, question);
        form.conversation.value = data.conversation_id;
        const feedback = node.querySelector(".feedback");
        feedback.action = "/answers/" + data.query_id + "/feedback";
        feedback.hidden = false;
        node.dataset.queryId = data.query_id;
        history.replaceState(null, "", "/conversations/" + data.conversation_id);
      }
    };
    try {
      const response = await fetch(form.action, {
        method: "POST", body: body, headers: { "X-CSRFToken": csrf(), Accept: "text/event-stream" },
      });
      if (!response.ok) {
        const failure = await response.json().catch(() => ({}));
        notice(node, failure.detail || "Something went wrong (" + response.status + ").");
        if (failure.passages) renderPassages(node, failure.passages);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          handle(parse(buffer.slice(0, cut)));
          buffer = buffer.slice(cut + 2);
        }
      }
    } catch (error) {
      notice(node, "The connection was lost before the answer was complete.");
    } finally {
      state.textContent = "";
      answer.setAttribute("aria-busy", "false");
      button.disabled = false;
      form.question.focus();
    }
  }

  async function feedback(event) {
    const target = event.target.closest(".feedback");
    if (!target) return;
    event.preventDefault();
    const body = new FormData(target);
    if (event.submitter) body.set(event.submitter.name, event.submitter.value);
    const state = target.querySelector(".feedback-state");
    const response = await fetch(target.action, { method: "POST", body: body, headers: { Accept: "application/json" } });
    const reply = await response.json().catch(() => ({}));
    state.textContent = reply.detail || "Could not save the feedback.";
  }

  if (form) form.addEventListener("submit", ask);
  if (form) form.question.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  document.addEventListener("submit", (e) => { if (e.target.classList.contains("feedback")) feedback(e); });
})();
