// The receiver's inspector: plain JavaScript, no dependencies. Every call is an ordinary fetch to this
// receiver's /v1 API with the token in the Authorization header (never in a URL or a cookie).
"use strict";

const TOKEN_KEY = "receiver.apiToken";
const POLL_MS = 1000; // new receipts and jobs must show within 2 s
const LIST_LIMIT = 50;

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let timer = null;
let polling = false; // one poll at a time: a poll asked for meanwhile runs right after
let pollAgain = false;
let lastJobSig = "";
let publicUrl = ""; // the receiver's public URL as the server knows it (/v1/stats), for `Copy as curl`
let mirroring = false; // whether outputs get mirrored at all (else stored_url stays null: not "mirroring…")
let providers = []; // the receiver's providers in listing order, [{name, webhooks}], as /v1/stats says
let view = 0; // bumped on sign-in, sign-out and navigation: answers for an older view are dropped
const current = (seen) => seen === view && token !== null;

class Unauthorized extends Error {}

// ---- small DOM helpers (text only: nothing received is ever parsed as HTML) -------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

const time = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "—");
const httpUrl = (url) => typeof url === "string" && /^https?:\/\//i.test(url);
// Ids made close in time share a long time-based start: the tail is what tells them apart, so it is bold
// and always visible; the start may be cut. The text (accessible name, copy) stays the whole id.
const ID_TAIL = 8;
function idParts(id) {
  const cut = Math.max(0, id.length - ID_TAIL);
  return [el("span", { class: "id-head", text: id.slice(0, cut) }), el("b", { class: "id-tail", text: id.slice(cut) })];
}
// (aria-label: the parts are flex items, which a screen reader would read as two words)
const jobLink = (id) => el("a", { href: "#/jobs/" + encodeURIComponent(id), class: "mono id", title: id, "aria-label": id },
  ...idParts(id));
const shortId = (id) => el("span", { class: "mono id", title: id, "aria-label": id }, ...idParts(id));
const count = (n) => Number(n).toLocaleString("en-US");
const badge = (word, text) => el("span", { class: "badge " + word, text: text || word });

// Each broker sink: its state, how far behind the event log it is, and why it is failing.
function renderSinks(sinks) {
  $("g-sinks-row").hidden = sinks.length === 0;
  $("g-sinks").replaceChildren(...sinks.map((sink) => {
    const line = el("div", { class: "sink", "aria-label": "Sink " + sink.name });
    line.append(badge(sink.state), " ", el("span", { class: "clip-text", text: sink.name, title: sink.url || "" }),
      " ", el("small", { text: "lag " + sink.lag + (sink.last_event_id ? ", at event " + sink.last_event_id : "") }));
    if (sink.last_error) line.append(el("small", { class: "sink-error", text: " " + sink.last_error }));
    return line;
  }));
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

// Keyed list update: reuse unchanged rows, insert new ones in place, so focus and open <details> survive.
function sync(container, items, key, sig, render) {
  const old = new Map();
  for (const child of container.children) old.set(child.dataset.key, child);
  items.forEach((item, i) => {
    const k = String(key(item));
    const s = sig(item);
    let node = old.get(k);
    if (!node || node.dataset.sig !== s) {
      const fresh = render(item);
      fresh.dataset.key = k;
      fresh.dataset.sig = s;
      if (node) node.replaceWith(fresh);
      node = fresh;
    }
    old.delete(k);
    if (container.children[i] !== node) container.insertBefore(node, container.children[i] || null);
  });
  for (const stale of old.values()) stale.remove();
}

// ---- paged lists ------------------------------------------------------------------------------
// The newest page is re-read on every poll (live); older pages, once loaded (`More`, or scrolling to it),
// are kept below it until the filters change.

function pagedList(name) {
  return { name, first: [], firstCursor: null, extra: [], cursor: null, extraLoaded: false, anchor: null,
    total: null, exact: true, loading: false };
}

const MAX_GAP_PAGES = 10;

// The newest rows: the first page, and once older pages are kept, every row down to where they start
// (`anchor`, the cursor they were read from), so rows arriving meanwhile leave no gap above them. A gap
// too large to fill drops the older pages instead.
async function readNewest(list, path, key) {
  const page = await json(path);
  let items = page[key];
  let cursor = page.next_cursor;
  const above = (c) => c && list.extraLoaded && Number(c) > Number(list.anchor);
  for (let hops = 0; above(cursor) && hops < MAX_GAP_PAGES; hops += 1) {
    const more = await json(path + "&cursor=" + encodeURIComponent(cursor));
    items = items.concat(more[key]);
    cursor = more.next_cursor;
  }
  if (above(cursor)) resetList(list);
  return { page, items, cursor };
}

function keepNewest(list, found) {
  Object.assign(list, { first: found.items, firstCursor: found.cursor, total: found.page.total ?? null,
    exact: found.page.total_exact !== false });
}
const lists = { jobs: pagedList("jobs"), receipts: pagedList("receipts"), refusals: pagedList("refusals") };

function resetList(list) {
  Object.assign(list, pagedList(list.name));
}

function nextCursor(list) {
  return list.extraLoaded ? list.cursor : list.firstCursor;
}

function rowsOf(list, key) {
  const seen = new Set(list.first.map(key));
  return list.first.concat(list.extra.filter((item) => !seen.has(key(item))));
}

function totalNote(list, shown, noun) {
  if (list.total === null) return "";
  const total = count(list.total) + (list.exact ? "" : "+");
  return "Showing " + count(shown) + " of " + total + " " + noun;
}

// ---- API -------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { Accept: "application/json", Authorization: "Bearer " + token, ...(options.headers || {}) };
  const res = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
  if (res.status === 401) throw new Unauthorized();
  return res;
}

async function json(path) {
  const res = await api(path);
  if (!res.ok) throw new Error(path.split("?")[0] + " answered " + res.status);
  return res.json();
}

const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  return q.toString();
};

// ---- sign-in ---------------------------------------------------------------------------------

function showSignedIn(on) {
  $("signin").hidden = on;
  $("app").hidden = !on;
  $("sign-out").hidden = !on;
  $("live").hidden = !on;
}

function signOut(message) {
  token = null;
  view += 1;
  for (const list of Object.values(lists)) resetList(list);
  clearPicked();
  $("refusal-list").replaceChildren();
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  $("job-list").tBodies[0].replaceChildren();
  $("receipt-list").replaceChildren();
  clearJobView();
  showSignedIn(false);
  $("signin-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

async function signIn(candidate) {
  token = candidate;
  view += 1;
  $("signin-error").textContent = "";
  try {
    knowProviders(await json("/v1/stats"));
  } catch (err) {
    const message = err instanceof Unauthorized
      ? "That API token was refused (401 Unauthorized). Check it with `receiver info` and try again."
      : "Could not reach the receiver: " + err.message;
    signOut(message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, candidate);
  showSignedIn(true);
  route();
}

// ---- at a glance -----------------------------------------------------------------------------

// The provider filters list what the receiver knows (its registry, as /v1/stats says), keeping a choice made.
function knowProviders(stats) {
  const known = Array.isArray(stats.providers) ? stats.providers : [];
  if (JSON.stringify(known) === JSON.stringify(providers)) return;
  providers = known;
  for (const select of document.querySelectorAll("select[data-providers]")) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "Any" }), ...providers.map((p) => el("option", { text: p.name })));
    select.value = providers.some((p) => p.name === chosen) ? chosen : "";
  }
}

async function refreshGlance(seen) {
  const stats = await json("/v1/stats");
  if (!current(seen)) return;
  knowProviders(stats);
  publicUrl = stats.public_url || location.origin;
  mirroring = Boolean(stats.mirroring);
  $("g-store").replaceChildren(badge(stats.store_state || "?"), " ",
    el("span", { class: "clip-text", text: stats.store || "", title: stats.store || "" }));
  $("g-oxen").replaceChildren(badge(stats.oxen_stream || "?"));
  if (stats.oxen_stream_error) $("g-oxen").append(el("small", { text: " " + stats.oxen_stream_error }));
  renderSinks(stats.sinks || []);
  const backlog = stats.delivery_backlog || {};
  $("g-backlog").textContent = backlog.count
    ? backlog.count + " waiting, oldest " + age(backlog.oldest_age_s) : "0 waiting";
  const counts = stats.jobs || {};
  $("g-jobs").textContent = ["pending", "succeeded", "failed", "cancelled"]
    .map((s) => (counts[s] || 0) + " " + s).join(" · ");
}

// ---- jobs list and search --------------------------------------------------------------------

function jobFilters() {
  return { provider: $("job-provider").value, status: $("job-status").value, prefix: $("search").value.trim() };
}

function jobRow(job) {
  return el("tr", {},
    el("td", { text: time(job.created_at), class: "nowrap" }),
    el("td", { class: "clip" }, jobLink(job.id)),
    el("td", { text: job.provider }),
    el("td", { class: "clip" }, el("span", { text: job.provider_job_id, class: "mono", title: job.provider_job_id })),
    el("td", {}, badge(job.status)),
    el("td", {}, badge(job.delivery_status)));
}

function renderJobs() {
  const list = lists.jobs;
  const jobs = rowsOf(list, (j) => j.id);
  sync($("job-list").tBodies[0], jobs, (j) => j.id, (j) => JSON.stringify(j), jobRow);
  const searching = Boolean($("search").value.trim());
  $("jobs-note").textContent = jobs.length ? totalNote(list, jobs.length, searching ? "found" : "jobs")
    : (searching ? "No job whose id or provider job id starts with that." : "No jobs yet.");
  $("jobs-more").hidden = !nextCursor(list);
}

async function refreshJobs(seen) {
  const found = await readNewest(lists.jobs, LOADERS.jobs.path(), "jobs");
  if (!current(seen)) return;
  keepNewest(lists.jobs, found);
  renderJobs();
}

const LOADERS = {
  jobs: { path: () => "/v1/jobs?" + query({ ...jobFilters(), limit: LIST_LIMIT }), key: "jobs", render: () => renderJobs() },
  receipts: { path: () => "/v1/receipts?" + query({ ...receiptFilters(), limit: LIST_LIMIT }), key: "receipts",
    render: () => renderReceipts() },
  refusals: { path: () => "/v1/refusals?" + query({ limit: LIST_LIMIT }), key: "refusals", render: () => renderRefusals() },
};

async function loadMore(name) {
  const list = lists[name];
  const cursor = nextCursor(list);
  if (list.loading || !cursor || !token) return;
  list.loading = true;
  const seen = view;
  const button = $(name + "-more");
  button.textContent = "Loading…";
  try {
    const page = await json(LOADERS[name].path() + "&cursor=" + encodeURIComponent(cursor));
    if (!current(seen)) return;
    list.extra = list.extra.concat(page[LOADERS[name].key]);
    list.cursor = page.next_cursor;
    if (!list.extraLoaded) list.anchor = cursor;
    list.extraLoaded = true;
    LOADERS[name].render();
  } catch (err) {
    if (err instanceof Unauthorized) return signOut("The API token is no longer accepted. Sign in again.");
    $("live").textContent = "Not updating: " + err.message;
  } finally {
    list.loading = false;
    button.textContent = "More";
  }
}

// ---- receipts --------------------------------------------------------------------------------

function heredoc(body) {
  let tag = "EOF";
  while (body.split("\n").includes(tag)) tag += "_";
  return [tag, body.endsWith("\n") ? body : body + "\n"];
}

const shellQuote = (text) => "'" + text.replace(/'/g, "'\\''") + "'";

// A shell command replaying a receipt against this receiver (its public URL); the token stays a variable.
function curlFor(r) {
  const base = (publicUrl || location.origin).replace(/\/+$/, "");
  const url = shellQuote(base + "/webhooks/" + r.provider + "?token=") + "\"$RECEIVER_WEBHOOK_TOKEN\"";
  const post = "curl -sS -X POST " + url + " -H 'Content-Type: application/json' --data-binary @-";
  const [tag, text] = r.body_base64 ? heredoc(r.body_base64) : heredoc(r.body);
  const head = r.body_base64 ? "base64 -d <<'" + tag + "' | " + post : post + " <<'" + tag + "'";
  return head + "\n" + text + tag + "\n";
}

function headerLines(headers) {
  return Object.keys(headers || {}).sort().map((k) => k + ": " + headers[k]).join("\n");
}

function receiptItem(r) {
  const jobs = (r.job_ids || []).map((id) => [jobLink(id), " "]).flat();
  const headers = headerLines(r.headers);
  const body = el("div", { class: "receipt-body" },
    jobs.length ? el("p", {}, "Jobs: ", ...jobs) : null,
    r.error ? el("p", { class: "error", text: "Error: " + r.error }) : null,
    el("pre", { class: "code", text: pretty(r.body), "aria-label": "Raw body of receipt " + r.id }),
    headers ? el("pre", { class: "code headers", text: headers, "aria-label": "Headers of receipt " + r.id }) : null);
  if (r.source === "webhook" && providers.some((p) => p.name === r.provider && p.webhooks)) {
    const out = el("pre", { class: "code curl", hidden: true, "aria-label": "curl command for receipt " + r.id });
    const note = el("span", { role: "status", class: "muted" });
    const button = el("button", { type: "button", text: "Copy as curl", class: "secondary" });
    button.addEventListener("click", async () => {
      out.textContent = curlFor(r);
      out.hidden = false;
      try {
        await navigator.clipboard.writeText(out.textContent);
        note.textContent = " Copied. Set RECEIVER_WEBHOOK_TOKEN first; signature headers are not included.";
      } catch {
        note.textContent = " Select the command below and copy it.";
      }
    });
    body.append(el("p", {}, button, note), out);
  }
  const ids = (r.provider_job_ids || []).join(", ");
  return el("details", { class: "receipt", id: "receipt-" + r.id },
    el("summary", {},
      pickBox("receipt", r.id, "Compare receipt " + r.id, receiptSides(r)),
      el("span", { class: "nowrap", text: time(r.received_at) }), " ",
      el("strong", { text: r.provider }), " ", el("span", { class: "muted", text: r.source }), " ",
      badge(r.outcome), " ", el("span", { class: "mono", text: ids })),
    body);
}

function receiptFilters() {
  return { provider: $("receipt-provider").value, outcome: $("receipt-outcome").value };
}

function renderReceipts() {
  const list = lists.receipts;
  const receipts = rowsOf(list, (r) => r.id);
  sync($("receipt-list"), receipts, (r) => r.id, (r) => String(r.id), receiptItem);
  $("receipts-note").textContent = receipts.length ? totalNote(list, receipts.length, "messages") : "No inbound messages yet.";
  $("receipts-more").hidden = !nextCursor(list);
  if (focusReceipt !== null) {
    const node = $("receipt-" + focusReceipt);
    if (node) {
      node.open = true;
      node.classList.add("flash");
      node.scrollIntoView({ block: "center" });
      focusReceipt = null;
    }
  }
}

async function refreshReceipts(seen) {
  const found = await readNewest(lists.receipts, LOADERS.receipts.path(), "receipts");
  if (!current(seen)) return;
  keepNewest(lists.receipts, found);
  renderReceipts();
}

// ---- refused requests ------------------------------------------------------------------------

let focusReceipt = null; // a receipt to open once the receipts list shows it (from a refusal's link)

const REASONS = { unknown_provider: "unknown provider", unauthorized: "wrong token", bad_signature: "bad signature",
  too_large: "too large", invalid_body: "invalid body" };

function showReceipt(r) {
  focusReceipt = r.receipt_id;
  $("receipt-outcome").value = "invalid";
  $("receipt-provider").value = providers.some((p) => p.name === r.provider) ? r.provider : "";
  resetList(lists.receipts);
  view += 1;
  poll();
}

function refusalItem(r) {
  const target = r.path + (r.query ? "?" + r.query : "");
  const size = r.body_truncated ? "first " + count(r.body.length) + " of " + count(r.body_bytes) + " bytes"
    : count(r.body_bytes) + " bytes";
  const body = el("div", { class: "receipt-body" },
    el("p", {}, el("code", { text: r.method + " " + target })),
    r.detail ? el("p", { class: "error", text: r.status + ": " + r.detail }) : null,
    el("pre", { class: "code headers", text: headerLines(r.headers), "aria-label": "Headers of refusal " + r.id }),
    el("p", { class: "muted", text: "Body (" + size + ")" }),
    el("pre", { class: "code", text: pretty(r.body), "aria-label": "Body of refusal " + r.id }));
  if (r.receipt_id !== null && r.receipt_id !== undefined) {
    const link = el("a", { href: "#receipt-" + r.receipt_id, text: "invalid receipt " + r.receipt_id });
    link.addEventListener("click", (event) => { event.preventDefault(); showReceipt(r); });
    body.append(el("p", {}, "Its body is kept whole as ", link, "."));
  }
  return el("details", { class: "receipt refusal" },
    el("summary", {},
      el("span", { class: "nowrap", text: time(r.received_at) }), " ",
      el("strong", { text: r.provider }), " ", badge(r.reason, REASONS[r.reason] || r.reason), " ",
      el("span", { class: "muted", text: String(r.status) })),
    body);
}

function renderRefusals() {
  const list = lists.refusals;
  const refusals = rowsOf(list, (r) => r.id);
  sync($("refusal-list"), refusals, (r) => r.id, (r) => String(r.id), refusalItem);
  $("refusals-note").textContent = refusals.length ? totalNote(list, refusals.length, "refused") : "No refused requests.";
  $("refusals-more").hidden = !nextCursor(list);
}

async function refreshRefusals(seen) {
  const found = await readNewest(lists.refusals, LOADERS.refusals.path(), "refusals");
  if (!current(seen)) return;
  keepNewest(lists.refusals, found);
  renderRefusals();
}

// ---- compare: any two receipts, or any two attempts, side by side ----------------------------

let picked = { kind: null, items: new Map() };

function clearPicked() {
  picked = { kind: null, items: new Map() };
  for (const box of document.querySelectorAll("input.pick")) box.checked = false;
  $("compare").hidden = true;
}

// A checkbox that picks an item for comparison (two of one kind); `sides` are its [title, text] parts.
function pickBox(kind, key, label, sides) {
  const box = el("input", { type: "checkbox", class: "pick", "aria-label": label, title: "Compare" });
  box.checked = picked.kind === kind && picked.items.has(String(key));
  box.addEventListener("click", (event) => event.stopPropagation()); // a pick does not open the item
  box.addEventListener("change", () => {
    if (box.checked) {
      if (picked.kind !== kind) clearPicked();
      box.checked = true;
      picked.kind = kind;
      picked.items.set(String(key), { label: label.replace(/^Compare /, ""), sides });
      while (picked.items.size > 2) picked.items.delete(picked.items.keys().next().value);
    } else {
      picked.items.delete(String(key));
    }
    for (const other of document.querySelectorAll("input.pick")) {
      if (other !== box && other.checked && !pickedLabel(other)) other.checked = false;
    }
    renderCompare();
  });
  return box;
}

function pickedLabel(box) {
  const name = (box.getAttribute("aria-label") || "").replace(/^Compare /, "");
  return [...picked.items.values()].some((item) => item.label === name);
}

function receiptSides(r) {
  return [["Headers", headerLines(r.headers)], ["Body", pretty(r.body_base64 || r.body)]];
}

function attemptSides(d) {
  const req = d.request || {};
  const res = d.response || {};
  return [["Sent headers", headerLines(req.headers)], ["Sent body", pretty(req.body || "")],
    ["Answer", d.response ? "HTTP " + res.status_code : (d.error || "no answer")],
    ["Answer headers", headerLines(res.headers)], ["Answer body", pretty(res.body || "")]];
}

// The longest common subsequence of two line lists, as same/del/add steps. Quadratic, so past a size
// the unchanged start and end are matched and the middle shown as replaced.
function diffLines(a, b) {
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start += 1;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA -= 1; endB -= 1; }
  const steps = a.slice(0, start).map((line) => ["same", line, line]);
  const midA = a.slice(start, endA);
  const midB = b.slice(start, endB);
  const n = midA.length;
  const m = midB.length;
  if (n * m > 4000000) {
    for (const line of midA) steps.push(["del", line, null]);
    for (const line of midB) steps.push(["add", null, line]);
  } else {
    const width = m + 1;
    const table = new Uint32Array((n + 1) * width);
    for (let i = n - 1; i >= 0; i -= 1) {
      for (let j = m - 1; j >= 0; j -= 1) {
        table[i * width + j] = midA[i] === midB[j] ? table[(i + 1) * width + j + 1] + 1
          : Math.max(table[(i + 1) * width + j], table[i * width + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && midA[i] === midB[j]) { steps.push(["same", midA[i], midB[j]]); i += 1; j += 1; }
      else if (j < m && (i === n || table[i * width + j + 1] >= table[(i + 1) * width + j])) { steps.push(["add", null, midB[j]]); j += 1; }
      else { steps.push(["del", midA[i], null]); i += 1; }
    }
  }
  for (let k = endA; k < a.length; k += 1) steps.push(["same", a[k], b[k - endA + endB]]);
  return steps;
}

// Side-by-side rows: a run of removed lines faces the run of added lines that replaces it.
function sideBySide(steps) {
  const rows = [];
  let k = 0;
  while (k < steps.length) {
    if (steps[k][0] === "same") { rows.push(["same", steps[k][1], steps[k][2]]); k += 1; continue; }
    const dels = [];
    const adds = [];
    while (k < steps.length && steps[k][0] !== "same") {
      if (steps[k][0] === "del") dels.push(steps[k][1]); else adds.push(steps[k][2]);
      k += 1;
    }
    for (let r = 0; r < Math.max(dels.length, adds.length); r += 1) {
      rows.push(["changed", r < dels.length ? dels[r] : null, r < adds.length ? adds[r] : null]);
    }
  }
  return rows;
}

function diffTable(title, left, right) {
  const rows = sideBySide(diffLines(left === "" ? [] : left.split("\n"), right === "" ? [] : right.split("\n")));
  const changed = rows.filter((row) => row[0] !== "same").length;
  const cell = (text, side) => el("td", { class: "code-cell " + (text === null ? "gap" : side), text: text === null ? "" : text });
  return el("div", { class: "diff-part" },
    el("h4", { text: title + (changed ? " · " + changed + " line" + (changed === 1 ? "" : "s") + " differ" : " · same") }),
    el("div", { class: "scroll" }, el("table", { class: "diff", "aria-label": title + " compared" },
      el("tbody", {}, ...rows.map(([kind, a, b]) => el("tr", { class: kind },
        cell(a, kind === "same" ? "same" : "del"), cell(b, kind === "same" ? "same" : "add")))))));
}

function renderCompare() {
  const items = [...picked.items.values()];
  if (items.length === 0) { $("compare").hidden = true; return; }
  $("compare").hidden = false;
  const noun = picked.kind === "receipt" ? "receipts" : "attempts";
  if (items.length < 2) {
    $("compare-title").textContent = "Compare " + noun;
    $("compare-hint").textContent = "Picked " + items[0].label + ": pick one more to compare.";
    $("compare-body").replaceChildren();
    return;
  }
  const [a, b] = items;
  $("compare-title").textContent = "Compare " + a.label + " with " + b.label;
  $("compare-hint").textContent = "Left: " + a.label + " · right: " + b.label + ". Changed lines are marked.";
  $("compare-body").replaceChildren(...a.sides.map(([title, text], i) => diffTable(title, text, b.sides[i][1])));
  $("compare").scrollIntoView({ block: "start" });
}

// ---- one job ---------------------------------------------------------------------------------

function outputFigure(output, i, job) {
  const src = output.stored_url || output.url;
  const type = output.media_type || "";
  // Mirroring is done once stored_url or mirror_error is set; until then a succeeded job's output is on its way.
  const inFlight = mirroring && job.status === "succeeded" && !output.stored_url && !output.mirror_error;
  const caption = [type || "unknown type", output.bytes ? count(output.bytes) + " bytes" : "",
    output.stored_url ? "mirrored" : "", inFlight ? "mirroring…" : "",
    output.mirror_error ? "not mirrored: " + output.mirror_error : ""].filter(Boolean).join(" · ");
  const media = type.startsWith("video/")
    ? el("video", { src, controls: true, preload: "metadata" })
    : el("img", { src, alt: "Output " + (i + 1), loading: "lazy" });
  const figcaption = el("figcaption", { text: caption });
  media.addEventListener("error", () => figcaption.append(" · could not be loaded"), { once: true });
  return el("figure", {}, httpUrl(src) ? el("a", { href: src, target: "_blank", rel: "noopener noreferrer" }, media) : media, figcaption);
}

function exchangePart(title, headers, body, note) {
  return el("div", { class: "exchange" },
    el("h4", { text: title }),
    note ? el("p", { class: "muted", text: note }) : null,
    el("pre", { class: "code headers", text: headerLines(headers) || "(none)", "aria-label": title + " headers" }),
    body === null || body === undefined ? null
      : el("pre", { class: "code", text: pretty(body) || "(empty body)", "aria-label": title + " body" }));
}

function attemptItem(d) {
  const outcome = d.status_code !== null && d.status_code >= 200 && d.status_code < 300 ? "delivered" : "failed";
  const key = d.message_id + "#" + d.attempt;
  const detail = el("div", { class: "receipt-body" }, el("p", { class: "mono", text: "POST " + d.url }));
  if (d.request) {
    detail.append(el("div", { class: "exchanges" },
      exchangePart("Sent", d.request.headers, d.request.body),
      d.response ? exchangePart("Came back: HTTP " + d.response.status_code, d.response.headers, d.response.body,
        "The first 4 KiB of the body.")
        : el("div", { class: "exchange" }, el("h4", { text: "Came back" }),
          el("p", { class: "error", text: d.error || "no answer" }))));
  } else {
    detail.append(el("p", { class: "muted", text: "Recorded before attempts kept what was sent." }));
  }
  return el("details", { class: "receipt attempt" },
    el("summary", {},
      pickBox("attempt", key, "Compare attempt " + d.attempt + " of " + d.message_id, attemptSides(d)),
      el("span", { class: "nowrap", text: time(d.at) }), " ",
      shortId(d.message_id), " ",
      el("span", { class: "muted", text: "attempt " + d.attempt }), " ",
      badge(outcome, d.status_code === null ? "no answer" : String(d.status_code)), " ",
      d.error ? el("span", { class: "error-text", text: d.error }) : null),
    detail);
}

const isoOf = (when) => (typeof when === "number" ? new Date(when * 1000).toISOString() : String(when));

function untilText(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  return Number.isNaN(seconds) ? "" : seconds <= 0 ? "due now" : "in " + age(seconds);
}

// Waiting messages: entries with `next_attempt_at` (the API lists each message waiting for a retry).
function showWaiting(job, entries) {
  const waiting = entries.filter((d) => d.next_attempt_at);
  const last = entries.filter((d) => d.attempt !== undefined && d.at).slice(-1)[0];
  const retrying = job.delivery_status === "pending" && last && !(last.status_code >= 200 && last.status_code < 300);
  $("waiting").hidden = !(waiting.length || retrying);
  if (waiting.length) {
    const next = waiting.map((d) => isoOf(d.next_attempt_at)).sort()[0];
    const retry = waiting.some((d) => d.attempt > 1);
    $("waiting-text").replaceChildren(retry ? "Waiting for a retry: next attempt at " : "Waiting to be sent: due at ",
      el("time", { datetime: next, text: time(next) }), " (" + untilText(next) + ").");
  } else if (retrying) {
    $("waiting-text").textContent = "Waiting for a retry of the last failed attempt.";
  }
}

async function refreshJob(id, seen) {
  const res = await api("/v1/jobs/" + encodeURIComponent(id));
  const job = res.ok ? await res.json() : null;
  if (!current(seen)) return;
  $("job-missing").textContent = res.status === 404 ? "No job " + id + "." : "";
  if (!job) return;
  const sig = JSON.stringify(job) + mirroring;
  if (sig !== lastJobSig) {
    lastJobSig = sig;
    $("job-title").textContent = "Job " + job.id;
    const fields = [["Status", badge(job.status)], ["Provider", job.provider],
      ["Provider job id", job.provider_job_id], ["Error", job.error || "—"],
      ["Delivery", badge(job.delivery_status)], ["Callback URL", job.callback_url || "(default)"],
      ["Created", time(job.created_at)], ["Completed", time(job.completed_at)]];
    $("job-fields").replaceChildren(...fields.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", {}, v))));
    $("job-metadata").textContent = JSON.stringify(job.metadata, null, 2);
    $("job-outputs").replaceChildren(...(job.outputs.length ? job.outputs.map((o, i) => outputFigure(o, i, job))
      : [el("p", { class: "muted", text: "No outputs." })]));
  }
  const [deliveries, receipts] = await Promise.all([
    json("/v1/jobs/" + encodeURIComponent(id) + "/deliveries"),
    json("/v1/receipts?" + query({ job_id: id, limit: 500 }))]);
  if (!current(seen)) return;
  const entries = deliveries.deliveries;
  // Attempts; an entry that only says when a waiting message is due is not one (unless it carries what was sent).
  const attempts = entries.filter((d) => d.request
    || (d.at && d.attempt !== undefined && "status_code" in d && !d.next_attempt_at));
  sync($("deliveries"), attempts, (d) => d.message_id + "#" + d.attempt, (d) => JSON.stringify(d), attemptItem);
  $("no-deliveries").hidden = attempts.length > 0;
  showWaiting(job, entries);
  sync($("job-receipts"), receipts.receipts, (r) => r.id, (r) => String(r.id), receiptItem);
}

async function postRedeliver(status, done) {
  const id = currentJobId();
  status.textContent = "Sending…";
  try {
    const res = await api("/v1/jobs/" + encodeURIComponent(id) + "/redeliver", { method: "POST" });
    const body = await res.json().catch(() => ({}));
    status.textContent = res.ok ? done(body) : "Not sent: " + (body.message || res.status);
    poll();
  } catch (err) {
    if (err instanceof Unauthorized) return signOut("The API token is no longer accepted. Sign in again.");
    status.textContent = "Not sent: " + err.message;
  }
}

const redeliver = () => postRedeliver($("redeliver-status"), (body) => (body.retried
  ? "Retrying the waiting message " : "Queued a new message ") + (body.message_id || "") + ".");
// Without a URL, redeliver makes a message waiting for a retry due now (same webhook-id).
const retryNow = () => postRedeliver($("retry-status"),
  (body) => (body.retried ? "Retrying " : "Sending ") + (body.message_id || "") + " now.");

// ---- routing and the poll loop ---------------------------------------------------------------

function currentJobId() {
  const match = location.hash.match(/^#\/jobs\/(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

function clearJobView() {
  lastJobSig = "";
  $("waiting").hidden = true;
  for (const id of ["deliveries", "job-receipts", "job-outputs", "job-fields"]) $(id).replaceChildren();
  for (const id of ["job-metadata", "job-missing", "redeliver-status", "retry-status"]) $(id).textContent = "";
}

function route() {
  const id = currentJobId();
  view += 1;
  clearJobView();
  if (picked.kind === "attempt") clearPicked();
  $("job-view").hidden = !id;
  $("lists").hidden = Boolean(id);
  if (id) {
    $("job-title").textContent = "Job " + id;
    $("job-title").setAttribute("tabindex", "-1");
    $("job-title").focus();
  }
  poll();
}

async function poll() {
  clearTimeout(timer);
  if (polling) { pollAgain = true; return; }
  if (!token) return;
  polling = true;
  pollAgain = false;
  try {
    if (!document.hidden) {
      const id = currentJobId();
      const seen = view;
      await Promise.all([refreshGlance(seen),
        ...(id ? [refreshJob(id, seen)] : [refreshJobs(seen), refreshReceipts(seen), refreshRefusals(seen)])]);
      $("live").textContent = "Live · updated " + new Date().toLocaleTimeString();
      $("live").classList.remove("stale");
    }
  } catch (err) {
    if (err instanceof Unauthorized) {
      polling = false;
      return signOut("The API token is no longer accepted. Sign in again.");
    }
    $("live").textContent = "Not updating: " + err.message;
    $("live").classList.add("stale");
  }
  polling = false;
  if (token) timer = setTimeout(poll, pollAgain ? 0 : POLL_MS);
}

function init() {
  for (const select of document.querySelectorAll("select[data-providers]")) select.append(el("option", { value: "", text: "Any" }));
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value) signIn(value);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("redeliver").addEventListener("click", redeliver);
  $("retry-now").addEventListener("click", retryNow);
  $("compare-close").addEventListener("click", clearPicked);
  const refilter = (name) => () => { resetList(lists[name]); view += 1; poll(); };
  for (const id of ["job-provider", "job-status", "search"]) $(id).addEventListener("input", refilter("jobs"));
  for (const id of ["receipt-provider", "receipt-outcome"]) $(id).addEventListener("input", refilter("receipts"));
  // Older rows load on `More`, or by themselves once the button scrolls into view.
  const reached = new IntersectionObserver((seen) => {
    for (const entry of seen) if (entry.isIntersecting) loadMore(entry.target.dataset.list);
  });
  for (const name of Object.keys(lists)) {
    const button = $(name + "-more");
    button.dataset.list = name;
    button.addEventListener("click", () => loadMore(name));
    reached.observe(button);
  }
  for (const form of ["job-filters", "receipt-filters"]) {
    $(form).addEventListener("submit", (event) => { event.preventDefault(); view += 1; poll(); });
  }
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", poll);
  if (token) {
    $("signin").hidden = true; // no sign-in form flashing while the kept token is checked
    signIn(token);
  } else {
    showSignedIn(false);
  }
}

init();
