// The receiver's inspector: plain JavaScript, no dependencies. Every call is an ordinary fetch to this
// receiver's /v1 API with the token in the Authorization header (never in a URL or a cookie).
"use strict";

const TOKEN_KEY = "receiver.apiToken";
const PROVIDERS = ["pixazo", "runware", "apiframe", "lumenfall", "oxen"];
const WEBHOOK_PROVIDERS = ["pixazo", "runware", "apiframe", "lumenfall"];
const POLL_MS = 1000; // new receipts and jobs must show within 2 s
const LIST_LIMIT = 50;

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY);
let timer = null;
let polling = false; // one poll at a time: a poll asked for meanwhile runs right after
let pollAgain = false;
let lastJobSig = "";
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
const jobLink = (id) => el("a", { href: "#/jobs/" + encodeURIComponent(id), text: id, class: "mono", title: id });
const badge = (word) => el("span", { class: "badge " + word, text: word });

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
    await json("/v1/stats");
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

async function refreshGlance(seen) {
  const stats = await json("/v1/stats");
  if (!current(seen)) return;
  $("g-store").replaceChildren(badge(stats.store_state || "?"), " ",
    el("span", { class: "clip-text", text: stats.store || "", title: stats.store || "" }));
  $("g-oxen").replaceChildren(badge(stats.oxen_stream || "?"));
  if (stats.oxen_stream_error) $("g-oxen").append(el("small", { text: " " + stats.oxen_stream_error }));
  const backlog = stats.delivery_backlog || {};
  $("g-backlog").textContent = backlog.count
    ? backlog.count + " waiting, oldest " + age(backlog.oldest_age_s) : "0 waiting";
  const counts = stats.jobs || {};
  $("g-jobs").textContent = ["pending", "succeeded", "failed", "cancelled"]
    .map((s) => (counts[s] || 0) + " " + s).join(" · ");
}

// ---- jobs list and search --------------------------------------------------------------------

async function searchJobs(text, filters) {
  const keep = (j) => (!filters.provider || j.provider === filters.provider)
    && (!filters.status || j.status === filters.status);
  if (text.startsWith("job_")) {
    const res = await api("/v1/jobs/" + encodeURIComponent(text));
    if (res.ok) return [await res.json()].filter(keep);
    if (res.status !== 404) throw new Error("/v1/jobs/{id} answered " + res.status);
  }
  return (await json("/v1/jobs?" + query({ ...filters, provider_job_id: text, limit: LIST_LIMIT }))).jobs;
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

async function refreshJobs(seen) {
  const filters = { provider: $("job-provider").value, status: $("job-status").value };
  const text = $("search").value.trim();
  const jobs = text ? await searchJobs(text, filters)
    : (await json("/v1/jobs?" + query({ ...filters, limit: LIST_LIMIT }))).jobs;
  if (!current(seen)) return;
  sync($("job-list").tBodies[0], jobs, (j) => j.id, (j) => JSON.stringify(j), jobRow);
  $("jobs-note").textContent = jobs.length ? (text ? jobs.length + " found" : "")
    : (text ? "No job with that id or provider job id." : "No jobs yet.");
}

// ---- receipts --------------------------------------------------------------------------------

function heredoc(body) {
  let tag = "EOF";
  while (body.split("\n").includes(tag)) tag += "_";
  return [tag, body.endsWith("\n") ? body : body + "\n"];
}

// A shell command replaying a receipt against a local receiver; the webhook token stays a variable.
function curlFor(r) {
  const url = "'http://127.0.0.1:8000/webhooks/" + r.provider + "?token='\"$RECEIVER_WEBHOOK_TOKEN\"";
  const post = "curl -X POST " + url + " -H 'Content-Type: application/json' --data-binary @-";
  const [tag, text] = r.body_base64 ? heredoc(r.body_base64) : heredoc(r.body);
  const head = r.body_base64 ? "base64 -d <<'" + tag + "' | " + post : post + " <<'" + tag + "'";
  return head + "\n" + text + tag + "\n";
}

function receiptItem(r) {
  const jobs = (r.job_ids || []).map((id) => [jobLink(id), " "]).flat();
  const body = el("div", { class: "receipt-body" },
    jobs.length ? el("p", {}, "Jobs: ", ...jobs) : null,
    r.error ? el("p", { class: "error", text: "Error: " + r.error }) : null,
    el("pre", { class: "code", text: pretty(r.body), "aria-label": "Raw body of receipt " + r.id }));
  if (r.source === "webhook" && WEBHOOK_PROVIDERS.includes(r.provider)) {
    const out = el("pre", { class: "code curl", hidden: true, "aria-label": "curl command for receipt " + r.id });
    const note = el("span", { role: "status", class: "muted" });
    const button = el("button", { type: "button", text: "Copy as curl" });
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
  return el("details", { class: "receipt" },
    el("summary", {},
      el("span", { class: "nowrap", text: time(r.received_at) }), " ",
      el("strong", { text: r.provider }), " ", el("span", { class: "muted", text: r.source }), " ",
      badge(r.outcome), " ", el("span", { class: "mono", text: ids })),
    body);
}

async function refreshReceipts(seen) {
  const filters = { provider: $("receipt-provider").value, outcome: $("receipt-outcome").value };
  const receipts = (await json("/v1/receipts?" + query({ ...filters, limit: LIST_LIMIT }))).receipts;
  if (!current(seen)) return;
  sync($("receipt-list"), receipts, (r) => r.id, (r) => String(r.id), receiptItem);
  $("receipts-note").textContent = receipts.length ? "" : "No inbound messages yet.";
}

// ---- one job ---------------------------------------------------------------------------------

function outputFigure(output, i) {
  const src = output.stored_url || output.url;
  const type = output.media_type || "";
  const caption = [type || "unknown type", output.bytes ? output.bytes + " bytes" : "",
    output.stored_url ? "mirrored" : "",
    output.mirror_error ? "not mirrored: " + output.mirror_error : ""].filter(Boolean).join(" · ");
  const media = type.startsWith("video/")
    ? el("video", { src, controls: true, preload: "metadata" })
    : el("img", { src, alt: "Output " + (i + 1), loading: "lazy" });
  const figcaption = el("figcaption", { text: caption });
  media.addEventListener("error", () => figcaption.append(" · could not be loaded"), { once: true });
  return el("figure", {}, httpUrl(src) ? el("a", { href: src, target: "_blank", rel: "noopener noreferrer" }, media) : media, figcaption);
}

function deliveryRow(d) {
  return el("tr", {},
    el("td", { text: time(d.at), class: "nowrap" }),
    el("td", { text: d.message_id || "—", class: "mono" }),
    el("td", { text: String(d.attempt) }),
    el("td", { text: d.status_code === null ? "—" : String(d.status_code) }),
    el("td", { text: d.error || "" }),
    el("td", { text: d.url, class: "mono" }));
}

async function refreshJob(id, seen) {
  const res = await api("/v1/jobs/" + encodeURIComponent(id));
  const job = res.ok ? await res.json() : null;
  if (!current(seen)) return;
  $("job-missing").textContent = res.status === 404 ? "No job " + id + "." : "";
  if (!job) return;
  const sig = JSON.stringify(job);
  if (sig !== lastJobSig) {
    lastJobSig = sig;
    $("job-title").textContent = "Job " + job.id;
    const fields = [["Status", badge(job.status)], ["Provider", job.provider],
      ["Provider job id", job.provider_job_id], ["Error", job.error || "—"],
      ["Delivery", badge(job.delivery_status)], ["Callback URL", job.callback_url || "(default)"],
      ["Created", time(job.created_at)], ["Completed", time(job.completed_at)]];
    $("job-fields").replaceChildren(...fields.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", {}, v))));
    $("job-metadata").textContent = JSON.stringify(job.metadata, null, 2);
    $("job-outputs").replaceChildren(...(job.outputs.length ? job.outputs.map(outputFigure)
      : [el("p", { class: "muted", text: "No outputs." })]));
  }
  const [deliveries, receipts] = await Promise.all([
    json("/v1/jobs/" + encodeURIComponent(id) + "/deliveries"),
    json("/v1/receipts?" + query({ job_id: id, limit: 500 }))]);
  if (!current(seen)) return;
  const rows = deliveries.deliveries;
  sync($("deliveries").tBodies[0], rows, (d) => JSON.stringify(d), (d) => JSON.stringify(d), deliveryRow);
  $("no-deliveries").hidden = rows.length > 0;
  $("deliveries").hidden = rows.length === 0;
  sync($("job-receipts"), receipts.receipts, (r) => r.id, (r) => String(r.id), receiptItem);
}

async function redeliver() {
  const id = currentJobId();
  const status = $("redeliver-status");
  status.textContent = "Sending…";
  try {
    const res = await api("/v1/jobs/" + encodeURIComponent(id) + "/redeliver", { method: "POST" });
    const body = await res.json().catch(() => ({}));
    status.textContent = res.ok ? (body.retried ? "Sending the waiting message now" : "Queued a new message") + (body.message_id ? " " + body.message_id : "") + "."
      : "Not sent: " + (body.message || res.status);
  } catch (err) {
    if (err instanceof Unauthorized) return signOut("The API token is no longer accepted. Sign in again.");
    status.textContent = "Not sent: " + err.message;
  }
}

// ---- routing and the poll loop ---------------------------------------------------------------

function currentJobId() {
  const match = location.hash.match(/^#\/jobs\/(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

function clearJobView() {
  lastJobSig = "";
  $("deliveries").tBodies[0].replaceChildren();
  for (const id of ["job-receipts", "job-outputs", "job-fields"]) $(id).replaceChildren();
  for (const id of ["job-metadata", "job-missing", "redeliver-status"]) $(id).textContent = "";
}

function route() {
  const id = currentJobId();
  view += 1;
  clearJobView();
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
        ...(id ? [refreshJob(id, seen)] : [refreshJobs(seen), refreshReceipts(seen)])]);
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
  for (const select of document.querySelectorAll("select[data-providers]")) {
    select.append(el("option", { value: "", text: "Any" }), ...PROVIDERS.map((p) => el("option", { text: p })));
  }
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value) signIn(value);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("redeliver").addEventListener("click", redeliver);
  const refilter = () => { view += 1; poll(); };
  for (const id of ["job-provider", "job-status", "receipt-provider", "receipt-outcome"]) {
    $(id).addEventListener("change", refilter);
  }
  $("search").addEventListener("input", refilter);
  for (const form of ["job-filters", "receipt-filters"]) {
    $(form).addEventListener("submit", (event) => { event.preventDefault(); refilter(); });
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
