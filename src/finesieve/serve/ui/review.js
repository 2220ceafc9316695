// The reviewer's page: take the next queued item, show what the model saw and decided, record the person's
// decision, and move on. Keys: t take, v violation, n not a violation, 1-9 category, u undo, s skip, ? help.
// One request at a time: keys pressed while one is in flight are ignored, so a double press cannot decide twice.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const { api, el, clear, say, fmtScore, fmtAge } = finesieve;

  let current = null; // the item on screen, leased to this reviewer
  let shownAt = 0; // performance.now() when it was shown: the age ticks from item.age_s
  let lastDecidedId = null; // what `u` undoes
  let busy = false;

  function setBusy(value) {
    busy = value;
    for (const id of ["take", "idle-undo", "btn-violation", "btn-ok", "btn-skip", "btn-undo"]) $(id).disabled = value;
    document.body.setAttribute("aria-busy", value ? "true" : "false");
  }

  // Run one API step; a lost session goes to the login page, anything else is said in the status line.
  async function step(work) {
    if (busy) return;
    setBusy(true);
    try {
      await work();
    } catch (err) {
      if (err.status === 401) {
        window.location.assign("/ui/login?next=/ui/");
        return;
      }
      say(err.message, true);
    } finally {
      setBusy(false);
      // Steps finished so far: lets a test (or a curious reviewer) see that a key press was handled.
      document.body.dataset.steps = String(Number(document.body.dataset.steps || 0) + 1);
    }
  }

  function showIdle(text) {
    current = null;
    $("item").classList.add("hidden");
    $("item").removeAttribute("data-item-id");
    $("item").removeAttribute("data-message-id");
    $("idle").classList.remove("hidden");
    $("idle-text").textContent = text;
    document.body.dataset.state = "idle";
  }

  function fillScores(table, scores) {
    const body = table.tBodies[0];
    clear(body);
    const entries = Object.entries(scores || {});
    if (!entries.length) {
      const row = el("tr");
      row.appendChild(el("td", "none", { colspan: "2", class: "muted" }));
      body.appendChild(row);
    }
    for (const [name, score] of entries) {
      const row = el("tr");
      row.appendChild(el("th", name, { scope: "row" }));
      row.appendChild(el("td", fmtScore(score), { class: "num" }));
      body.appendChild(row);
    }
  }

  function fillCategories(item) {
    const box = $("categories");
    for (const node of Array.from(box.querySelectorAll("label"))) node.remove();
    const categories = item.categories || [];
    const chosen = item.decided_category || (item.message && item.message.category);
    const selected = categories.includes(chosen) ? chosen : categories[0];
    categories.slice(0, 9).forEach((name, i) => {
      const label = el("label");
      const input = el("input", null, { type: "radio", name: "category", value: name, id: `category-${i + 1}` });
      input.checked = name === selected;
      label.appendChild(input);
      label.appendChild(el("kbd", String(i + 1)));
      label.appendChild(el("span", name));
      box.appendChild(label);
    });
  }

  function showItem(item) {
    current = item;
    shownAt = performance.now();
    const m = item.message || { text: null, model: "–", rules_fired: [], model_version: "" }; // null only if the row is gone
    $("idle").classList.add("hidden");
    $("item").classList.remove("hidden");
    $("item").dataset.itemId = String(item.item_id);
    $("item").dataset.messageId = item.message_id;
    document.body.dataset.state = "item";
    $("item-id").textContent = `#${item.item_id}`;
    const reason = $("item-reason");
    reason.textContent = item.reason;
    reason.className = `badge ${item.reason}`;
    // The redacted text, as text: markup in a message is shown, never run.
    $("message-text").textContent = m.text === null || m.text === undefined ? "(text deleted: retention period passed)" : m.text;
    $("item-action").textContent = m.action || "–";
    $("item-category").textContent = m.category || "–";
    $("item-score").textContent = fmtScore(m.score);
    $("item-stage").textContent = m.decided_by || "–";
    $("item-rules").textContent = (m.rules_fired || []).length ? m.rules_fired.join(", ") : "none";
    // The version is the run's name @ the sha256 of its manifest: 12 hex digits tell runs apart, the title has all.
    const [runName, digest] = String(m.model_version).split("@");
    $("item-model").textContent = `${m.model} (${runName}@${(digest || "").slice(0, 12)})`;
    $("item-model").title = m.model_version;
    $("item-failure").textContent = m.failure || "";
    $("item-failure").classList.toggle("hidden", !m.failure);
    $("item-failure-label").classList.toggle("hidden", !m.failure);
    fillScores($("category-scores"), m.category_scores);
    fillScores($("stage-scores"), m.stage_scores);
    fillCategories(item);
    $("note").value = item.note || "";
    tickAge();
  }

  function tickAge() {
    if (current) $("item-age").textContent = fmtAge(current.age_s + (performance.now() - shownAt) / 1000);
  }

  // Lease the next item (the API hands back the one this reviewer already holds, if any) and show it.
  async function takeNext() {
    const answer = await api("POST", "/v1/review/next");
    if (answer === null) {
      showIdle("The queue is empty: nothing left to review.");
      say("The queue is empty.");
      return null;
    }
    showItem(answer.item);
    return answer.item;
  }

  function selectedCategory() {
    const checked = document.querySelector('#categories input[name="category"]:checked');
    return checked ? checked.value : null;
  }

  async function decide(violation) {
    if (!current) return;
    const item = current;
    const note = $("note").value.trim();
    const body = { violation, category: violation ? selectedCategory() : null, note: note || null };
    try {
      await api("POST", `/v1/review/items/${item.item_id}/decision`, body);
    } catch (err) {
      if (err.status !== 409) throw err;
      say(`Item #${item.item_id} was no longer yours (its lease ran out); taking the next one.`, true);
      await takeNext();
      return;
    }
    lastDecidedId = item.item_id;
    say(`Item #${item.item_id}: ${violation ? "violation" : "not a violation"}. Press u to undo.`);
    await takeNext();
  }

  async function undo() {
    if (lastDecidedId === null) {
      say("Nothing to undo in this session.", true);
      return;
    }
    const onScreen = current;
    const answer = await api("POST", `/v1/review/items/${lastDecidedId}/undo`);
    lastDecidedId = null;
    showItem(answer.item);
    say(`Decision on item #${answer.item.item_id} undone: decide it again.`);
    // The item that was on screen goes back to the queue for whoever comes next (this reviewer included).
    if (onScreen && onScreen.item_id !== answer.item.item_id) {
      await api("POST", `/v1/review/items/${onScreen.item_id}/release`);
    }
  }

  async function skip() {
    if (!current) return;
    const skipped = current;
    await api("POST", `/v1/review/items/${skipped.item_id}/release`);
    const next = await takeNext();
    say(
      next && next.item_id === skipped.item_id
        ? `Item #${skipped.item_id} is back in the queue, and still first in line: it came straight back.`
        : `Item #${skipped.item_id} skipped: it is back in the queue.`,
    );
  }

  function toggleHelp() {
    const help = $("help");
    if (help.open) help.close();
    else help.showModal();
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const typing = target instanceof HTMLElement && (target.matches("textarea, input[type=text], input[type=password], select") || target.isContentEditable);
    if (typing) {
      if (event.key === "Escape") target.blur();
      return;
    }
    if ($("help").open && event.key !== "?") return; // the dialog handles Esc itself
    const key = event.key;
    if (key === "?") toggleHelp();
    else if (key === "t" && !current) step(takeNext);
    else if (key === "v" && current) step(() => decide(true));
    else if (key === "n" && current) step(() => decide(false));
    else if (key === "u") step(undo);
    else if (key === "s" && current) step(skip);
    else if (/^[1-9]$/.test(key) && current) {
      const input = $(`category-${key}`);
      if (input) {
        input.checked = true;
        say(`Category: ${input.value}`);
      }
    } else return;
    event.preventDefault();
  }

  async function start() {
    const session = await finesieve.requireUser();
    finesieve.showUser(session);
    $("take").addEventListener("click", () => step(takeNext));
    $("idle-undo").addEventListener("click", () => step(undo));
    $("btn-violation").addEventListener("click", () => step(() => decide(true)));
    $("btn-ok").addEventListener("click", () => step(() => decide(false)));
    $("btn-skip").addEventListener("click", () => step(skip));
    $("btn-undo").addEventListener("click", () => step(undo));
    $("btn-help").addEventListener("click", toggleHelp);
    document.addEventListener("keydown", onKey);
    window.setInterval(tickAge, 1000);
    showIdle("Take the next item from the queue to review it.");
    document.body.dataset.ready = "true";
  }

  start().catch((err) => say(`Could not start: ${err.message}`, true));
})();
