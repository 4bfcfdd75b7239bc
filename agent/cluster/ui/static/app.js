// pullcheck's cluster dashboard. Plain modern JavaScript, no build step, nothing from elsewhere.
// Every text from the API (node names, images, registry errors) is put in the page as text
// (textContent, text nodes, attribute values): never parsed as HTML.
"use strict";

const TOKEN_KEY = "pullcheck.token"; // sessionStorage: this tab only
const PAGE_SIZES = [25, 50, 100, 200];
const POLL_MS = { overview: 15000, jobs: 2000, pods: 5000 };
const MAX_LINE = 8 * 1024 * 1024; // bytes of one NDJSON line before the stream is given up
const PROBES = ["dns", "tcp", "tls", "http", "token", "manifest"];
const PROBING = "probing…"; // a node's cells while /v1/connectivity is on its way
const NOT_KNOWN = "not known"; // ... and after it failed

// --- small DOM helpers ---------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** An element with attributes (strings, or booleans for presence) and children (nodes or text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace ``node``'s children (text, nodes, nested lists; null and false are left out). */
function put(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function setText(id, text) {
  $(id).textContent = text;
}

function ms(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(1)} ms`;
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function shortDigest(digest) {
  return digest ? digest.replace(/^sha256:/, "").slice(0, 12) : "";
}

/** The verdict word of an answer: "ok", its cause, or why it was refused. */
function verdict(entry) {
  if (entry.success) return "ok";
  return entry.cause || entry.refused || "unknown";
}

function verdictClass(word) {
  if (word === "ok" || word === "done") return "v-ok";
  if (word.startsWith("agent_") || word === "node_not_found") return "v-agent";
  if (["pending", "pulling", "running", "idle", "not probed", PROBING].includes(word)) return "v-wait";
  if (word === NOT_KNOWN) return "v-agent";
  return "v-fail";
}

function badge(word) {
  return el("span", { class: `verdict ${verdictClass(word)}` }, word);
}

// --- the token and the API -------------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, kind, message) {
    super(`HTTP ${status}${kind ? ` ${kind}` : ""}${message ? `: ${message}` : ""}`);
    this.status = status;
    this.kind = kind;
  }
}

let tokenWaiters = null; // the promise of a token being asked for (asked once at a time)

function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

/** Ask for the token (once, however many calls need it); resolves when one was entered. */
function askToken(message) {
  setText("token-error", message || "");
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
  $("token-input").value = "";
  $("token-input").focus();
  if (!tokenWaiters) {
    tokenWaiters = new Promise((resolve) => {
      $("token-form").addEventListener(
        "submit",
        (event) => {
          event.preventDefault();
          const token = $("token-input").value.trim();
          sessionStorage.setItem(TOKEN_KEY, token);
          $("token-input").value = "";
          dialog.close();
          tokenWaiters = null;
          resolve(token);
        },
        { once: true },
      );
    });
  }
  return tokenWaiters;
}

/** fetch() with the token; a 401 asks for the token again and retries. */
async function api(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const token = storedToken();
    if (token) headers.set("Authorization", `Bearer ${token}`);
    const response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
    if (response.status !== 401) return response;
    sessionStorage.removeItem(TOKEN_KEY);
    await askToken(token ? "That token was refused (HTTP 401): enter the current one." : "");
  }
}

async function failureOf(response) {
  let kind = "";
  let message = "";
  try {
    const body = await response.json();
    kind = typeof body.error === "string" ? body.error : "";
    message = typeof body.message === "string" ? body.message : "";
  } catch {
    message = response.statusText;
  }
  return new ApiFailure(response.status, kind, message);
}

async function getJson(path) {
  const response = await api(path);
  if (!response.ok) throw await failureOf(response);
  return response.json();
}

// --- paginated tables (1,000 nodes: only one page is in the DOM) ----------------------------

class Pager {
  constructor(tbody, pagerId, renderRow, { size = 50, columns = 1 } = {}) {
    this.tbody = tbody;
    this.renderRow = renderRow;
    this.rows = [];
    this.page = 0;
    this.size = size;
    this.columns = columns;
    this.empty = "nothing to show";
    const box = $(pagerId);
    const label = box.id;
    this.prev = el("button", { type: "button", "aria-label": "previous page", onclick: () => this.go(-1) }, "‹ Prev");
    this.next = el("button", { type: "button", "aria-label": "next page", onclick: () => this.go(1) }, "Next ›");
    this.where = el("span", { class: "muted", "aria-live": "polite" });
    this.sizer = el(
      "select",
      { "aria-label": "rows per page", id: `${label}-size`, onchange: () => this.resize() },
      PAGE_SIZES.map((n) => el("option", { value: n, selected: n === size }, `${n} per page`)),
    );
    put(box, this.prev, this.where, this.next, this.sizer);
  }

  set(rows, { keepPage = true } = {}) {
    this.rows = rows;
    if (!keepPage) this.page = 0;
    this.render();
  }

  go(step) {
    this.page += step;
    this.render();
  }

  resize() {
    this.size = Number(this.sizer.value) || 50;
    this.page = 0;
    this.render();
  }

  pages() {
    return Math.max(1, Math.ceil(this.rows.length / this.size));
  }

  render() {
    this.page = Math.min(Math.max(0, this.page), this.pages() - 1);
    const start = this.page * this.size;
    const shown = this.rows.slice(start, start + this.size);
    const fragment = document.createDocumentFragment();
    for (const row of shown) fragment.append(this.renderRow(row));
    if (!shown.length) {
      fragment.append(el("tr", {}, el("td", { colspan: this.columns, class: "muted" }, this.empty)));
    }
    put(this.tbody, fragment);
    const total = this.rows.length;
    this.where.textContent = total
      ? `${start + 1}–${start + shown.length} of ${total} · page ${this.page + 1} of ${this.pages()}`
      : "";
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= this.pages() - 1;
  }
}

// --- shared evidence rendering ---------------------------------------------------------------

function field(label, value) {
  if (value === "" || value === null || value === undefined) return null;
  return [el("dt", {}, label), el("dd", {}, value)];
}

function fields(...pairs) {
  return el("dl", { class: "fields" }, pairs.map(([label, value]) => field(label, value)));
}

/** The probes of one endpoint: dns → tcp → tls → http → token → manifest, timed, with phases. */
function probesTable(probes) {
  const rows = (probes || []).map((probe) =>
    el(
      "tr",
      { dataset: { probe: probe.probe } },
      el("th", { scope: "row" }, probe.probe),
      el("td", {}, badge(probe.success ? "ok" : probe.cause || "failed")),
      el("td", { class: "num" }, ms(probe.duration_ms)),
      el("td", {}, probe.target || ""),
      el(
        "td",
        {},
        (probe.phases || []).map((phase) =>
          el("span", { class: phase.ok ? "phase" : "phase bad" }, `${phase.name} ${ms(phase.duration_ms)}`),
        ),
        probe.error ? el("div", { class: "error-text" }, probe.error) : null,
      ),
    ),
  );
  const ran = new Set((probes || []).map((p) => p.probe));
  const skipped = PROBES.filter((name) => !ran.has(name));
  return [
    el(
      "table",
      { class: "grid probes" },
      el("thead", {}, el("tr", {}, ["Probe", "Result", "Time", "Target", "Phases / error"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows),
    ),
    skipped.length ? el("p", { class: "muted" }, `not run: ${skipped.join(", ")}`) : null,
  ];
}

function endpointBlock(report) {
  const endpoint = report.endpoint || {};
  return el(
    "section",
    { class: "endpoint" },
    el("h4", {}, `${endpoint.url || "?"} `, el("span", { class: "muted" }, endpoint.role || ""), " ", badge(report.success ? "ok" : report.cause || "failed")),
    report.summary ? el("p", {}, report.summary) : null,
    el("p", { class: "muted" }, `chain ${ms(report.duration_ms)}`),
    probesTable(report.probes),
  );
}

function rawJson(value) {
  return el("details", { class: "raw" }, el("summary", {}, "Raw JSON"), el("pre", {}, JSON.stringify(value, null, 2)));
}

// --- views and polling -----------------------------------------------------------------------

const views = {};
let current = "overview";
let pollTimer = 0;
let settings = { read_only: false, pod_diagnosis: false };

function showView(name, { focus = false } = {}) {
  if (!views[name] || $(`tab-${name}`).hidden) name = "overview";
  current = name;
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.dataset.view === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = 0;
    $(`view-${tab.dataset.view}`).hidden = !on;
  }
  if (focus) $(`tab-${name}`).focus();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  schedule(0);
}

function schedule(delay) {
  clearTimeout(pollTimer);
  const view = views[current];
  if (!view || !view.refresh) return;
  pollTimer = setTimeout(async () => {
    const name = current;
    if (document.visibilityState === "visible") {
      try {
        await view.refresh();
      } catch (error) {
        view.fail(error);
      }
    }
    if (name === current && POLL_MS[name]) schedule(POLL_MS[name]);
  }, delay);
}

// --- cluster overview --------------------------------------------------------------------------

views.overview = (() => {
  let matrix = null; // the last /v1/connectivity answer
  let listed = null; // until it came: the nodes /v1/agents named, [{node, pending, readiness}]
  let pendingWord = PROBING;
  let selected = null; // [node, column url]
  const table = $("matrix");
  const pager = new Pager(table.tBodies[0], "ov-pager", renderRow, { columns: 2 });
  pager.empty = "no node matches";

  const rowsNow = () => (matrix ? matrix.rows : listed || []);
  const columnsNow = () => (matrix ? matrix.columns : []);

  function causesOf(row) {
    if (row.pending) return [pendingWord];
    if (!row.reachable) return [row.cause];
    const found = matrix.columns.map((c) => row.cells[c.url]).filter((cell) => cell && !cell.success);
    return found.length ? found.map((cell) => cell.cause || "unknown") : ["ok"];
  }

  function renderHead() {
    const head = el(
      "tr",
      {},
      el("th", { scope: "col" }, "Node"),
      matrix
        ? matrix.columns.map((column) =>
            el("th", { scope: "col", title: column.url }, el("span", { class: "col-registry" }, column.registry), el("span", { class: "col-url" }, column.url), el("span", { class: "muted" }, column.role)),
          )
        : el("th", { scope: "col" }, "Registry endpoints ", el("span", { class: "muted" }, "(each node is being asked)")),
    );
    put(table.tHead, head);
    pager.columns = Math.max(1, columnsNow().length) + 1;
  }

  function renderRow(row) {
    const tr = el("tr", { dataset: { node: row.node } }, el("th", { scope: "row" }, row.node));
    const span = Math.max(1, columnsNow().length);
    if (row.pending) {
      const seen = row.readiness && row.readiness !== "ready" ? `; its agent was ${row.readiness} at the last readiness check` : "";
      const title = pendingWord === PROBING ? `asking ${row.node} for its probes${seen}` : `the matrix did not arrive${seen}`;
      tr.append(el("td", { colspan: span, class: "pending" }, el("span", { class: `cell ${verdictClass(pendingWord)}`, title, dataset: { node: row.node } }, pendingWord)));
      return tr;
    }
    if (!row.reachable) {
      tr.append(
        el(
          "td",
          { colspan: span, class: "unreachable" },
          el("button", { type: "button", class: "cell", dataset: { node: row.node, column: "" }, onclick: () => select(row.node, "") }, badge(row.cause), " did not answer: ", row.summary),
        ),
      );
      return tr;
    }
    for (const column of matrix.columns) {
      const cell = row.cells[column.url];
      const word = cell ? (cell.success ? "ok" : cell.cause || "unknown") : "not probed";
      const pressed = selected && selected[0] === row.node && selected[1] === column.url;
      tr.append(
        el(
          "td",
          {},
          el(
            "button",
            {
              type: "button",
              class: `cell ${verdictClass(word)}`,
              title: cell ? cell.summary : "this node did not probe this endpoint",
              "aria-pressed": String(Boolean(pressed)),
              "aria-label": `${row.node} to ${column.url}: ${word}`,
              dataset: { node: row.node, column: column.url },
              onclick: () => select(row.node, column.url),
            },
            word,
          ),
        ),
      );
    }
    return tr;
  }

  function visibleRows() {
    const cause = $("ov-cause").value;
    const text = $("ov-node").value.trim().toLowerCase();
    let rows = rowsNow().filter((row) => (!text || row.node.toLowerCase().includes(text)) && (!cause || causesOf(row).includes(cause)));
    const sort = $("ov-sort").value;
    const failing = (row) => (row.pending ? 0 : row.reachable ? causesOf(row).filter((c) => c !== "ok").length : 1000);
    if (sort === "failing") rows = [...rows].sort((a, b) => failing(b) - failing(a) || a.node.localeCompare(b.node));
    else if (sort === "cause") rows = [...rows].sort((a, b) => causesOf(a)[0].localeCompare(causesOf(b)[0]) || a.node.localeCompare(b.node));
    return rows;
  }

  function renderFilters() {
    const select = $("ov-cause");
    const chosen = select.value;
    const counts = new Map();
    for (const row of rowsNow()) for (const cause of new Set(causesOf(row))) counts.set(cause, (counts.get(cause) || 0) + 1);
    const options = [...counts.keys()].sort().map((cause) => el("option", { value: cause, selected: cause === chosen }, `${cause} (${counts.get(cause)})`));
    put(select, el("option", { value: "" }, `all nodes (${rowsNow().length})`), ...options);
    if (chosen && !counts.has(chosen)) select.value = "";
  }

  function renderSummary() {
    if (!matrix) {
      const notReady = listed.filter((row) => row.readiness !== "ready" && row.readiness !== "unknown").length;
      const doing = pendingWord === PROBING ? "asking each for its view of the registries…" : "their view of the registries is not known";
      setText("ov-summary", `${listed.length} nodes · ${doing} · ${notReady} not ready at the last readiness check`);
      return;
    }
    const s = matrix.summary;
    const failing = Object.keys(s.failing || {}).length;
    setText("ov-summary", `${s.nodes} nodes · ${s.unreachable.length} did not answer · ${matrix.columns.length} endpoints · ${failing} failing on some node`);
  }

  async function select(node, column) {
    selected = [node, column];
    pager.render();
    const box = $("ov-detail");
    const row = matrix.rows.find((r) => r.node === node);
    if (row && !row.reachable) {
      put(
        box,
        el("h3", {}, node),
        el("p", {}, badge(row.cause), " the node's agent did not answer"),
        fields(["Summary", row.summary], ["Remedy", row.remedy], ["HTTP status", row.status ?? ""]),
      );
      return;
    }
    put(box, el("h3", {}, `${node} → ${column}`), el("p", { class: "muted" }, "asking the node for its probes…"));
    try {
      const entry = await getJson(`/ui/api/nodes/${encodeURIComponent(node)}/connectivity`);
      if (!selected || selected[0] !== node || selected[1] !== column) return;
      if (!entry.registries) {
        put(box, el("h3", {}, node), el("p", {}, badge(entry.cause), " no probes from this node"), fields(["Summary", entry.summary], ["Remedy", entry.remedy]));
        return;
      }
      for (const report of entry.registries) {
        const found = (report.endpoints || []).find((e) => e.endpoint && e.endpoint.url === column);
        if (!found) continue;
        put(
          box,
          el("h3", {}, `${node} → ${column}`),
          el("p", {}, badge(found.success ? "ok" : found.cause || "unknown"), " ", found.summary || ""),
          fields(["Registry", report.registry], ["Remedy", found.success ? "" : report.remedy], ["Probed", when(report.started_at)]),
          endpointBlock(found),
        );
        return;
      }
      put(box, el("h3", {}, `${node} → ${column}`), el("p", { class: "muted" }, "this node does not probe this endpoint (not in its registries, nor seen in its recent tests)"));
    } catch (error) {
      put(box, el("h3", {}, node), el("p", { class: "error" }, String(error.message || error)));
    }
  }

  function draw() {
    renderHead();
    renderFilters();
    renderSummary();
    pager.set(visibleRows());
  }

  /** The node list from /v1/agents (cached by the aggregator: no fan-out), every cell "probing…",
   * unless the matrix came first. A failure here is left to the matrix's own answer. */
  async function drawList(arrived) {
    let list;
    try {
      list = await getJson("/v1/agents");
    } catch {
      return;
    }
    if (matrix || arrived()) return;
    listed = list.agents.map((agent) => ({ node: agent.node, pending: true, readiness: agent.state }));
    pendingWord = PROBING;
    draw();
    performance.mark("pullcheck:nodes-drawn", { detail: { nodes: listed.length } }); // read by bench/bench_ui_1000.py
    $("view-overview").dataset.state = "listed";
  }

  let loading = null; // the refresh under way: a second one (a poll, a click) joins it

  function refresh() {
    loading ||= load().finally(() => {
      loading = null;
    });
    return loading;
  }

  async function load() {
    const section = $("view-overview");
    section.dataset.state = "loading";
    const started = performance.now();
    let done = false;
    if (!matrix && listed && pendingWord !== PROBING) {
      pendingWord = PROBING; // asked again: the list's cells are being probed again
      draw();
    }
    if (!matrix) drawList(() => done); // asked first: the aggregator answers it before its fan-out
    const asked = getJson("/v1/connectivity").finally(() => {
      done = true;
    });
    matrix = await asked;
    listed = null;
    draw();
    setText("ov-error", "");
    performance.mark("pullcheck:matrix-drawn"); // read by bench/bench_ui_1000.py
    setText("ov-updated", `updated ${new Date().toLocaleTimeString()} (${ms(performance.now() - started)})`);
    section.dataset.state = "ready";
  }

  const redraw = () => (matrix || listed) && pager.set(visibleRows(), { keepPage: false });
  for (const id of ["ov-cause", "ov-sort"]) $(id).addEventListener("change", redraw);
  $("ov-node").addEventListener("input", redraw);
  $("ov-refresh").addEventListener("click", () => schedule(0));
  return {
    refresh,
    fail(error) {
      $("view-overview").dataset.state = "error";
      setText("ov-error", `Could not read the matrix: ${error.message || error}`);
      if (!matrix && listed) {
        pendingWord = NOT_KNOWN; // the list stays; its cells no longer claim a probe is running
        draw();
      }
    },
  };
})();

// --- run a test ---------------------------------------------------------------------------

/** What a node resolved the image to (as the aggregator's summary counts it). */
function digestOf(entry) {
  const info = entry.image_info;
  if (info && info.repo_digest && info.repo_digest.includes("@")) return info.repo_digest.split("@").pop();
  for (const report of entry.endpoints || []) {
    if (!report.success) continue;
    for (const probe of [...(report.probes || [])].reverse()) {
      if (probe.evidence && probe.evidence.kind === "manifest" && probe.evidence.digest) return probe.evidence.digest;
    }
  }
  return "";
}

views.test = (() => {
  let entries = [];
  let abort = null;
  let majority = "";
  let causeFilter = "";
  const pager = new Pager($("test-results").tBodies[0], "test-pager", renderRow, { columns: 6 });
  pager.empty = "no result yet";

  function renderRow(entry) {
    const word = verdict(entry);
    const digest = entry.success !== undefined && entry.pullcheck_version ? digestOf(entry) : "";
    const drifted = Boolean(majority && digest && digest !== majority);
    return el(
      "tr",
      { class: drifted ? "drift" : "", dataset: { node: entry.node } },
      el("th", { scope: "row" }, entry.node),
      el("td", {}, badge(word)),
      el("td", {}, entry.summary || ""),
      el("td", { class: "mono", title: digest }, shortDigest(digest), drifted ? el("span", { class: "drift-mark" }, " drift") : null),
      el("td", { class: "num" }, ms(entry.duration_ms)),
      el("td", {}, el("button", { type: "button", class: "open", "aria-label": `evidence of ${entry.node}`, onclick: () => open(entry) }, "Evidence")),
    );
  }

  function shown() {
    return causeFilter ? entries.filter((e) => verdict(e) === causeFilter) : entries;
  }

  function liveSummary(summary) {
    const box = $("test-summary");
    const byCause = summary ? summary.by_cause : groupByCause();
    const ok = summary ? summary.ok : entries.filter((e) => e.success).length;
    const digests = summary ? summary.digests : digestsSeen();
    const drift = Object.keys(digests).length > 1;
    majority = drift ? Object.entries(digests).sort((a, b) => b[1].length - a[1].length)[0][0] : "";
    const chips = Object.entries(byCause).map(([cause, nodes]) =>
      el("button", { type: "button", class: `chip ${verdictClass(cause)}`, "aria-pressed": String(causeFilter === cause), onclick: () => filter(cause) }, `${cause}: ${nodes.length}`),
    );
    put(
      box,
      el("p", {}, `${entries.length} nodes answered · ${ok} ok · ${entries.length - ok} failed`, summary ? ` · ${ms(summary.duration_ms)}` : " · running…"),
      chips.length ? el("div", { class: "chips" }, el("span", {}, "By cause: "), chips, causeFilter ? el("button", { type: "button", class: "chip", onclick: () => filter("") }, "show all") : null) : null,
      drift
        ? el(
            "div",
            { class: "drift-banner", role: "alert" },
            el("strong", {}, "Digest drift: "),
            "the tag resolved to more than one digest.",
            el("ul", {}, Object.entries(digests).map(([digest, nodes]) => el("li", { class: "mono" }, `${digest} — ${nodes.length} node(s): ${nodes.slice(0, 20).join(", ")}${nodes.length > 20 ? ", …" : ""}`))),
          )
        : null,
    );
  }

  function groupByCause() {
    const found = {};
    for (const entry of entries) if (!entry.success) (found[verdict(entry)] ||= []).push(entry.node);
    return Object.fromEntries(Object.entries(found).sort());
  }

  function digestsSeen() {
    const found = {};
    for (const entry of entries) {
      const digest = entry.pullcheck_version ? digestOf(entry) : "";
      if (digest) (found[digest] ||= []).push(entry.node);
    }
    return found;
  }

  function filter(cause) {
    causeFilter = causeFilter === cause ? "" : cause;
    liveSummary(lastSummary);
    pager.set(shown(), { keepPage: false });
  }

  function open(entry) {
    const box = $("test-detail");
    const word = verdict(entry);
    const parts = [el("h3", {}, entry.node), el("p", {}, badge(word), " ", entry.summary || "")];
    if (!entry.pullcheck_version) {
      parts.push(fields(["Remedy", entry.remedy], ["Agent", entry.agent], ["HTTP status", entry.status ?? ""], ["Error", entry.error ?? ""]));
    } else {
      const digest = digestOf(entry);
      parts.push(
        fields(
          ["Image", entry.image],
          ["Reference", entry.reference],
          ["Mode", entry.mode],
          ["Remedy", entry.remedy],
          ["Runtime error", entry.runtime_error],
          ["Decided by", entry.deciding_fragment],
          ["Via", entry.via],
          ["Digest", digest],
          ["Image id", entry.image_info ? entry.image_info.image_id : ""],
          ["Runtime", entry.runtime ? `${entry.runtime.runtime_name} ${entry.runtime.runtime_version} (${entry.runtime.api_version})` : ""],
          ["Started", when(entry.started_at)],
          ["Took", ms(entry.duration_ms)],
        ),
      );
      if ((entry.warnings || []).length) parts.push(el("h4", {}, "Warnings"), el("ul", {}, entry.warnings.map((w) => el("li", {}, w))));
      if ((entry.findings || []).length) {
        parts.push(el("h4", {}, "Also found"), el("ul", {}, entry.findings.map((f) => el("li", {}, badge(f.cause || "unknown"), ` ${f.endpoint || ""} ${f.summary || ""} (${f.source})`))));
      }
      if ((entry.credentials || []).length) {
        parts.push(el("h4", {}, "Credentials tried"), el("ul", {}, entry.credentials.map((c) => el("li", {}, `${c.source}: `, badge(c.ok ? "ok" : c.cause || "failed"), c.error ? ` ${c.error}` : ""))));
      }
      if ((entry.phases || []).length) {
        parts.push(
          el("h4", {}, "Phases"),
          el(
            "table",
            { class: "grid" },
            el("tbody", {}, entry.phases.map((p) => el("tr", {}, el("th", { scope: "row" }, p.name), el("td", {}, badge(p.ok ? "ok" : "failed")), el("td", { class: "num" }, ms(p.duration_ms)), el("td", {}, p.detail || "")))),
          ),
        );
      }
      if ((entry.endpoints || []).length) parts.push(el("h4", {}, "Endpoints"), entry.endpoints.map(endpointBlock));
    }
    parts.push(rawJson(entry));
    put(box, ...parts);
    box.focus({ preventScroll: true });
  }

  let lastSummary = null;
  let drawQueued = false;
  function redraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      liveSummary(lastSummary);
      pager.set(shown());
    });
  }

  async function run(event) {
    event.preventDefault();
    if (settings.read_only) return;
    const section = $("view-test");
    const image = $("test-image").value.trim();
    const params = new URLSearchParams({ image, stream: "ndjson" });
    const mode = $("test-mode").value;
    if (mode) params.set("mode", mode);
    const nodes = $("test-nodes").value.trim();
    if (nodes) params.set("nodes", nodes);
    const timeout = $("test-timeout").value.trim();
    if (timeout) params.set("timeout", timeout);
    entries = [];
    lastSummary = null;
    majority = "";
    causeFilter = "";
    setText("test-error", "");
    put($("test-summary"), el("p", {}, `Testing ${image} …`));
    pager.set([], { keepPage: false });
    abort = new AbortController();
    $("test-run").disabled = true;
    $("test-stop").disabled = false;
    section.dataset.state = "running";
    try {
      const response = await api(`/v1/pulltest?${params}`, { signal: abort.signal });
      if (!response.ok) throw await failureOf(response);
      await readLines(response, (line) => {
        if (line.summary && line.node === undefined) lastSummary = line.summary;
        else entries.push(line);
        redraw();
      });
      section.dataset.state = lastSummary ? "done" : "error";
      if (!lastSummary) setText("test-error", "The stream ended before the summary: some nodes may be missing.");
    } catch (error) {
      section.dataset.state = "error";
      if (error.name === "AbortError") setText("test-error", "Stopped: the nodes still running their test finish on their own.");
      else setText("test-error", `The test was refused: ${error.message || error}`);
      redraw();
    } finally {
      $("test-run").disabled = false;
      $("test-stop").disabled = true;
      abort = null;
    }
  }

  $("test-form").addEventListener("submit", run);
  $("test-stop").addEventListener("click", () => abort && abort.abort());
  return { refresh: null, fail() {} };
})();

/** Call ``each`` with every JSON line of an NDJSON response, as the lines arrive. */
async function readLines(response, each) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (line) each(JSON.parse(line));
    }
    if (buffer.length > MAX_LINE) throw new Error("a line of the answer is too long");
    if (done) break;
  }
  if (buffer.trim()) each(JSON.parse(buffer));
}

// --- pre-pull jobs -----------------------------------------------------------------------------

views.jobs = (() => {
  let openName = "";
  const pager = new Pager($("job-nodes").tBodies[0], "job-pager", renderNode, { columns: 7 });

  function renderNode(item) {
    return el(
      "tr",
      { dataset: { node: item.node, phase: item.phase } },
      el("th", { scope: "row" }, item.node),
      el("td", {}, item.image),
      el("td", {}, badge(item.phase)),
      el("td", { class: "num" }, String(item.attempts)),
      el("td", {}, item.cause ? badge(item.cause) : ""),
      el("td", {}, item.summary || "", item.remedy && item.phase === "failed" ? el("div", { class: "muted" }, item.remedy) : null),
      el("td", { class: "num" }, item.duration_ms ? ms(item.duration_ms) : ""),
    );
  }

  function wave(job) {
    const w = job.wave || {};
    const parts = ["pulling", "done", "failed", "pending"].filter((k) => w[k] !== undefined).map((k) => `${w[k]} ${k}`);
    if (w.parallel_nodes !== undefined) parts.push(`≤ ${w.parallel_nodes} node(s) at once`);
    const paused = Object.entries(job.paused_registries || {}).map(([registry, until]) => `${registry} paused until ${when(until)}`);
    return [...parts, ...paused].join(" · ");
  }

  function progress(job) {
    return el(
      "span",
      { class: "progress" },
      el("progress", { max: Math.max(1, job.images_total), value: job.images_ready, "aria-label": `${job.name} progress` }),
      ` ${job.images_ready}/${job.images_total} ready`,
    );
  }

  async function runNow(name) {
    const response = await api(`/v1/prepull/jobs/${encodeURIComponent(name)}/run`, { method: "POST" });
    if (response.status === 202) setText("status", `job ${name} started`);
    else setText("jobs-error", `Run ${name}: ${(await failureOf(response)).message}`);
    openName = name;
    schedule(300);
  }

  async function refresh() {
    const section = $("view-jobs");
    const list = await getJson("/v1/prepull/jobs");
    setText("jobs-meta", `jobs file ${list.jobs_file} (version ${list.version}) · answered by ${list.leader}${list.forwarded_by ? ` via ${list.forwarded_by}` : ""}`);
    setText("jobs-error", list.error ? `The job file was rejected (the previous jobs run): ${list.error}` : "");
    const rows = list.jobs.map((job) =>
      el(
        "tr",
        { dataset: { job: job.name } },
        el("th", { scope: "row" }, job.name),
        el("td", {}, job.schedule ? `${job.schedule} (${job.timezone})` : "on demand", job.on_new_node ? " · new nodes" : ""),
        el("td", {}, badge(job.running ? "running" : "idle")),
        el("td", {}, progress(job)),
        el("td", {}, wave(job)),
        el("td", {}, when(job.next_run)),
        el(
          "td",
          { class: "actions" },
          el("button", { type: "button", "aria-label": `open ${job.name}`, onclick: () => { openName = job.name; schedule(0); } }, "Open"),
          settings.read_only ? null : el("button", { type: "button", class: "run-now", "aria-label": `run ${job.name} now`, disabled: job.running, onclick: () => runNow(job.name) }, "Run now"),
        ),
      ),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no jobs (the job file lists none)")));
    put($("jobs").tBodies[0], rows);
    if (!openName && list.jobs.length) openName = list.jobs[0].name;
    if (openName && list.jobs.some((j) => j.name === openName)) await refreshJob(openName);
    else $("job-detail").hidden = true;
    section.dataset.state = "ready";
  }

  async function refreshJob(name) {
    const job = await getJson(`/v1/prepull/jobs/${encodeURIComponent(name)}`);
    $("job-detail").hidden = false;
    $("job-detail").dataset.job = name;
    setText("job-title", `${job.name}${job.running ? " — running" : ""}`);
    setText("job-progress-text", `${job.images_ready} of ${job.images_total} node × image pairs ready · ${wave(job)}${job.last_finished ? ` · last finished ${when(job.last_finished)}` : ""}`);
    $("job-progress").max = Math.max(1, job.images_total);
    $("job-progress").value = job.images_ready;
    pager.set(job.nodes);
  }

  return {
    refresh,
    fail(error) {
      $("view-jobs").dataset.state = "error";
      setText("jobs-error", error.status === 503 ? `No replica leads the scheduled work yet: ${error.message}` : `Could not read the jobs: ${error.message || error}`);
    },
  };
})();

// --- pods --------------------------------------------------------------------------------------

views.pods = (() => {
  const pager = new Pager($("pods").tBodies[0], "pods-pager", renderRow, { columns: 9 });
  pager.empty = "no container is waiting on an image pull";

  function renderRow(item) {
    return el(
      "tr",
      {},
      el("th", { scope: "row" }, `${item.namespace}/${item.pod}`),
      el("td", {}, item.container),
      el("td", {}, item.image),
      el("td", {}, item.node),
      el("td", {}, item.reason),
      el("td", {}, badge(item.cause)),
      el("td", {}, item.summary),
      el("td", {}, item.remedy),
      el("td", {}, when(item.last_seen)),
    );
  }

  async function refresh() {
    const answer = await getJson("/v1/pods");
    setText("pods-meta", answer.leading ? `${answer.pods.length} container(s) failing to pull` : "This replica does not lead: the leading replica watches the pods.");
    setText("pods-error", "");
    pager.set(answer.pods);
    $("view-pods").dataset.state = "ready";
  }

  return {
    refresh,
    fail(error) {
      setText("pods-error", `Could not read the pod diagnoses: ${error.message || error}`);
    },
  };
})();

// --- start ---------------------------------------------------------------------------------

async function loadSettings() {
  for (;;) {
    const response = await api("/ui/api/settings");
    if (response.ok) return response.json();
    setText("status", `the aggregator answered ${(await failureOf(response)).message}`);
    await new Promise((resolve) => setTimeout(resolve, 5000));
  }
}

function applySettings() {
  document.body.classList.toggle("read-only", settings.read_only);
  $("mode-badge").hidden = !settings.read_only;
  $("test-form").hidden = settings.read_only;
  $("test-readonly").hidden = !settings.read_only;
}

async function podsAnswer() {
  if (!settings.pod_diagnosis) return false;
  try {
    const response = await api("/v1/pods");
    return response.ok && (await response.json()).enabled === true;
  } catch {
    return false;
  }
}

async function start() {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
    tab.addEventListener("keydown", (event) => {
      const tabs = [...document.querySelectorAll('[role="tab"]:not([hidden])')];
      const at = tabs.indexOf(tab);
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        event.preventDefault();
        const next = tabs[(at + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
        showView(next.dataset.view, { focus: true });
      }
    });
  }
  $("token-dialog").addEventListener("cancel", (event) => event.preventDefault()); // Escape: the page needs a token
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  document.addEventListener("visibilitychange", () => document.visibilityState === "visible" && schedule(0));
  settings = await loadSettings();
  applySettings();
  $("tab-pods").hidden = !(await podsAnswer());
  setText("status", `aggregator ${settings.version}`);
  document.body.dataset.state = "ready";
  showView((location.hash || "#overview").slice(1));
}

start();
