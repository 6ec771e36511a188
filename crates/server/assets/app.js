// restic-manager UI behaviour: actions through the JSON API (same origin,
// session cookie + CSRF header), live regions refreshed on server events,
// the job page's live log and progress, sortable and filterable tables.
"use strict";

// Times as the server renders them: `2026-11-28 12:35 UTC`.
const utc = (iso) => new Date(iso).toISOString().slice(0, 16).replace("T", " ") + " UTC";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

// A URLSearchParams body goes as a plain form (the host page's job forms,
// which the server turns into params); anything else as JSON.
async function api(method, path, body) {
  const form = body instanceof URLSearchParams;
  const response = await fetch(path, {
    method,
    headers: {
      "content-type": form ? "application/x-www-form-urlencoded" : "application/json",
      "x-csrf-token": csrf(),
    },
    body: body === undefined ? undefined : form ? body : JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    // The form field the server says the error is about, if any.
    error.field = data && data.error ? data.error.field : undefined;
    throw error;
  }
  return data;
}

function showError(near, message) {
  const scope = near.closest("section, form") || document;
  const box = scope.querySelector(".form-error");
  if (box) { box.textContent = message; box.hidden = !message; } else if (message) { alert(message); }
}

// Collects a form into the JSON the API expects. A name with a dot
// (`copy_to.url`) goes into an object (`copy_to`), left out when none of
// its fields was filled in; a checked `data-clears` box sends its name as
// `null` (remove it).
function formBody(form) {
  const body = {};
  const cleared = [];
  for (const field of form.elements) {
    if (!field.name || field.type === "fieldset") continue;
    if (field.hasAttribute("data-clears")) {
      if (field.checked) cleared.push(field.name);
      continue;
    }
    const dot = field.name.indexOf(".");
    if (dot > 0) {
      const outer = field.name.slice(0, dot);
      const inner = formBody({ elements: [{ ...fieldLike(field), name: field.name.slice(dot + 1) }] });
      if (Object.keys(inner).length) body[outer] = Object.assign(body[outer] || {}, inner);
      continue;
    }
    // Passwords are taken exactly as typed; everything else is trimmed.
    const value = field.type === "password" ? field.value : field.value.trim();
    if (field.hasAttribute("data-env")) {
      const env = {};
      for (const line of value.split("\n").map((l) => l.trim()).filter(Boolean)) {
        const at = line.indexOf("=");
        if (at > 0) env[line.slice(0, at).trim()] = line.slice(at + 1);
      }
      // Left empty, the variables already set are kept.
      if (Object.keys(env).length) body[field.name] = env;
    } else if (field.hasAttribute("data-labels")) {
      // `key=value,…` as an object; left empty: null (a user's scope: none).
      const labels = {};
      for (const pair of value.split(",").map((p) => p.trim()).filter(Boolean)) {
        const at = pair.indexOf("=");
        if (at > 0) labels[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
        else labels[pair] = "";
      }
      body[field.name] = Object.keys(labels).length ? labels : null;
    } else if (field.hasAttribute("data-number")) {
      if (value !== "") body[field.name] = Number(value);
    } else if (value !== "" || field.required) {
      body[field.name] = value;
    }
  }
  for (const name of cleared) body[name] = null;
  return body;
}

// What formBody reads of a field, to read it again under another name.
function fieldLike(field) {
  return {
    type: field.type,
    value: field.value,
    required: false,
    hasAttribute: (name) => field.hasAttribute(name),
  };
}

// A bulk action's outcome: the jobs started (linked, by host name where
// the page lists the host) and the hosts skipped, with why.
function showBulk(result) {
  const name = (id) => document.querySelector(`tr[data-host="${id}"] td a`)?.textContent || id;
  const item = (text, href) => {
    const li = document.createElement("li");
    if (href) { const a = document.createElement("a"); a.href = href; a.textContent = text; li.append(a); } else { li.textContent = text; }
    return li;
  };
  const jobs = result.jobs || [];
  const sent = result.sent || [];
  const skipped = result.skipped || [];
  const hosts = `${skipped.length} host${skipped.length === 1 ? "" : "s"} skipped.`;
  document.getElementById("bulk-summary").textContent = result.sent
    ? `${sent.length} agent${sent.length === 1 ? "" : "s"} sent the upgrade to ${result.version}, ${hosts}`
    : `${jobs.length} job${jobs.length === 1 ? "" : "s"} started, ${hosts}`;
  document.getElementById("bulk-started").replaceChildren(
    ...jobs.map((j) => item(`${j.kind} on ${name(j.host_id)}`, `/jobs/${j.id}`)),
    ...sent.map((s) => item(`${s.name}: ${s.from} → ${result.version}`, `/hosts/${s.host_id}`)));
  document.getElementById("bulk-skipped").replaceChildren(...skipped.map((s) => item(`${s.name}: ${s.reason}`)));
  document.getElementById("bulk-skipped-title").hidden = skipped.length === 0;
  document.getElementById("bulk-result").hidden = false;
}

// A form's confirmation, `{n}` being the hosts the dashboard's filter
// matches now (from the live count).
function confirmed(form) {
  const message = form.dataset.confirm;
  if (!message) return true;
  const count = Number(document.getElementById("count-total")?.textContent || 0);
  const filter = document.getElementById("fleet-filter")?.textContent || "";
  const hosts = `${filter ? "the" : "all"} ${count} host${count === 1 ? "" : "s"}${filter ? " with " + filter : ""}`;
  return confirm(message.replaceAll("{n}", hosts));
}

// A channel test's answer, in the channel's row: what the receiver said.
function showChannelTest(box, result) {
  if (!box || !result) return;
  const status = result.status === null || result.status === undefined ? "no answer" : `status ${result.status}`;
  box.replaceChildren();
  const verdict = document.createElement("span");
  verdict.className = `badge ${result.ok ? "ok" : "bad"} test-verdict`;
  verdict.textContent = result.ok ? "ok" : "failed";
  const said = document.createElement("span");
  said.className = "test-said";
  said.textContent = ` ${status}${result.response ? ": " + result.response : ""}`;
  box.append(verdict, said);
  box.hidden = false;
}

function after(then, result, source) {
  if (then === "channel-test") { showChannelTest(document.querySelector(source?.dataset.result || "#none"), result); return; }
  if (then === "job" && result && result.id) { location.href = `/jobs/${result.id}`; return; }
  if (then === "bulk" && result) { showBulk(result); return; }
  if (then === "show-command" && result && result.command) {
    document.getElementById("enroll-command").textContent = result.command;
    document.getElementById("enroll-only-command").textContent = result.enroll_command;
    document.getElementById("enroll-expires").textContent = utc(result.expires_at);
    document.getElementById("enroll-result").hidden = false;
    return;
  }
  if (then && then.startsWith("/")) { location.href = then; return; }
  location.reload();
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-post], [data-put], [data-delete], [data-copy]");
  if (!button) return;
  if (button.dataset.copy) {
    const text = document.querySelector(button.dataset.copy).textContent;
    try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; }
    catch (_) { window.getSelection().selectAllChildren(document.querySelector(button.dataset.copy)); button.textContent = "Press Ctrl+C"; }
    return;
  }
  if (button.dataset.confirm && !confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    let result;
    if (button.dataset.delete) {
      result = await api("DELETE", button.dataset.delete);
    } else if (button.dataset.put) {
      result = await api("PUT", button.dataset.put, JSON.parse(button.dataset.body || "{}"));
    } else {
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
      result = await api("POST", button.dataset.post, body);
    }
    showError(button, "");
    after(button.dataset.then, result, button);
  } catch (error) {
    showError(button, error.message);
  } finally {
    button.disabled = false;
  }
});

// A plain HTML form that asks first (deleting a policy); the script-posted
// forms ask in their own handlers.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]:not([data-ui-form]):not([data-api-form])");
  if (form && !confirm(form.dataset.confirm)) event.preventDefault();
});

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-api-form]");
  if (!form) return;
  event.preventDefault();
  try {
    const result = await api(form.dataset.method || "POST", form.dataset.apiForm, formBody(form));
    showError(form, "");
    after(form.dataset.then, result);
  } catch (error) {
    showError(form, error.message);
  }
});

// The host page's job forms: posted as they are; the server makes the
// params and names the field an error is about, shown next to it. What
// was typed stays.
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-ui-form]");
  if (!form) return;
  event.preventDefault();
  if (!confirmed(form)) return;
  for (const box of form.querySelectorAll(".field-error")) { box.textContent = ""; box.hidden = true; }
  for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
  const button = form.querySelector('[type="submit"]');
  button.disabled = true;
  try {
    const result = await api("POST", form.dataset.uiForm, new URLSearchParams(new FormData(form)));
    showError(form, "");
    after(form.dataset.then, result);
  } catch (error) {
    const box = error.field && [...form.querySelectorAll("[data-error-for]")]
      .find((b) => b.dataset.errorFor === error.field && !b.closest("fieldset:disabled"));
    if (box) {
      box.textContent = error.message;
      box.hidden = false;
      const details = box.closest("details");
      if (details) details.open = true;
      const input = [...form.elements].find((f) => f.name === error.field && !f.disabled);
      if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
      showError(form, "");
    } else {
      showError(form, error.message);
    }
  } finally {
    button.disabled = false;
  }
});

// A job form's fields follow its kind: only the chosen kind's fieldsets
// show, and hidden ones are disabled so they are not sent. A form with
// several schedule rows (the policy form) scopes each row with
// data-kind-scope.
function showKindFields(select) {
  const scope = select.closest("[data-kind-scope]") || select.form;
  for (const set of scope.querySelectorAll("fieldset[data-kinds]")) {
    const shown = set.dataset.kinds.split(" ").includes(select.value);
    set.hidden = !shown;
    set.disabled = !shown;
  }
}
document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-kind-select]")) showKindFields(event.target);
});
const initKindFields = () => document.querySelectorAll("select[data-kind-select]").forEach(showKindFields);

// Tables: click a header to sort, type to filter.
document.addEventListener("click", (event) => {
  const th = event.target.closest("th[data-sort]");
  if (!th) return;
  const table = th.closest("table");
  const index = [...th.parentNode.children].indexOf(th);
  const numeric = th.dataset.sort === "number";
  const ascending = th.dataset.dir !== "asc";
  th.dataset.dir = ascending ? "asc" : "desc";
  const rows = [...table.tBodies[0].rows];
  const key = (row) => row.cells[index].dataset.value ?? row.cells[index].textContent;
  rows.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
    return ascending ? order : -order;
  });
  rows.forEach((row) => table.tBodies[0].appendChild(row));
});

// Sortable headers are reachable by keyboard too.
document.addEventListener("keydown", (event) => {
  const th = event.target.closest("th[data-sort]");
  if (th && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    th.click();
  }
});

document.addEventListener("input", (event) => {
  const input = event.target.closest("input[data-filter]");
  if (!input) return;
  const needle = input.value.toLowerCase();
  for (const row of document.querySelectorAll(`${input.dataset.filter} tbody tr`)) {
    row.hidden = needle !== "" && !row.textContent.toLowerCase().includes(needle);
  }
});

// Live regions: when the server says something changed, fetch this page
// again and swap the regions marked data-live (at most once a second).
function followFleet() {
  const config = document.getElementById("live-config");
  if (!config || !window.EventSource) return;
  const { events } = JSON.parse(config.textContent);
  let pending = null;
  const refresh = async () => {
    pending = null;
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const next = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const region of document.querySelectorAll("[data-live]")) {
      const fresh = next.querySelector(`[data-live="${region.dataset.live}"]`);
      const filter = document.getElementById("host-filter");
      const typed = filter ? filter.value : "";
      // Job forms keep what the operator is typing across refreshes.
      if (fresh) {
        for (const form of region.querySelectorAll("form[data-ui-form][id]")) {
          fresh.querySelector(`#${form.id}`)?.replaceWith(form);
        }
        region.replaceWith(fresh);
      }
      const newFilter = document.getElementById("host-filter");
      if (newFilter && typed) { newFilter.value = typed; newFilter.dispatchEvent(new Event("input", { bubbles: true })); }
    }
  };
  const source = new EventSource(events);
  source.addEventListener("changed", () => { if (!pending) pending = setTimeout(refresh, 1000); });
}

// A job's statistics as a readable list (sizes in MiB/GiB).
function showStats(stats) {
  if (!stats || typeof stats !== "object" || Array.isArray(stats)) return;
  const list = document.getElementById("job-stats");
  list.replaceChildren();
  const size = (n) => n >= 1073741824 ? (n / 1073741824).toFixed(1) + " GiB" : n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B";
  for (const [key, value] of Object.entries(stats)) {
    const dt = document.createElement("dt");
    dt.textContent = key.replaceAll("_", " ");
    const dd = document.createElement("dd");
    const sized = typeof value === "number" && /bytes|size|^data_added/.test(key);
    const seconds = typeof value === "number" && /duration/.test(key);
    const rate = typeof value === "number" && /_per_second$/.test(key);
    // A drill's evidence is a table on the host page, not a JSON blob here.
    const evidence = key === "evidence" && Array.isArray(value);
    dd.textContent = rate ? size(Math.round(value)) + "/s" : sized ? size(value)
      : seconds ? value.toFixed(1) + " s"
      : evidence ? value.length + " files (listed with their checksums on the host page)"
      : typeof value === "object" ? JSON.stringify(value) : String(value);
    list.append(dt, dd);
  }
  document.getElementById("job-result").hidden = list.children.length === 0;
}

// The job page: status, progress and the log as they happen.
function followJob() {
  const job = document.getElementById("job");
  if (!job || !window.EventSource) return;
  const log = document.getElementById("log");
  const follow = document.getElementById("log-follow");
  let stick = true;
  log.addEventListener("scroll", () => {
    stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    follow.textContent = stick ? "following" : "paused (scroll to the end to follow)";
  });
  const setStatus = (view) => {
    const badge = document.getElementById("job-status");
    badge.textContent = view.status;
    badge.className = "badge " + ({ succeeded: "ok", failed: "bad", partial: "warn", cancelled: "warn", skipped: "warn" }[view.status] || "busy");
    if (view.started_at) document.getElementById("job-started").textContent = utc(view.started_at);
  };
  const source = new EventSource(`/api/v1/jobs/${job.dataset.job}/events`);
  source.addEventListener("status", (e) => setStatus(JSON.parse(e.data)));
  source.addEventListener("log", (e) => {
    const line = JSON.parse(e.data);
    const span = document.createElement("span");
    span.className = line.stream;
    span.textContent = line.text + "\n";
    log.appendChild(span);
    if (stick) log.scrollTop = log.scrollHeight;
  });
  let last = null;
  source.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    document.getElementById("progress").hidden = false;
    document.getElementById("progress-fill").style.width = `${Math.min(100, p.percent).toFixed(1)}%`;
    const now = Date.now();
    const rate = last ? ((p.bytes_done - last.bytes) / ((now - last.at) / 1000)) : 0;
    last = { bytes: p.bytes_done, at: now };
    const mib = (n) => (n / 1048576).toFixed(1) + " MiB";
    const eta = p.eta_seconds != null ? `, ${Math.round(p.eta_seconds)} s left` : "";
    document.getElementById("progress-text").textContent =
      `${p.percent.toFixed(1)}% · ${p.files_done}/${p.files_total} files · ${mib(p.bytes_done)}/${mib(p.bytes_total)}` +
      (rate > 0 ? ` · ${mib(rate)}/s` : "") + eta + (p.current_files.length ? ` · ${p.current_files[0]}` : "");
  });
  source.addEventListener("finished", (e) => {
    const view = JSON.parse(e.data);
    setStatus(view);
    source.close();
    // A viewer's page has no cancel button.
    const cancel = document.getElementById("job-cancel");
    if (cancel) cancel.hidden = true;
    document.getElementById("progress").hidden = true;
    if (view.finished_at) document.getElementById("job-finished").textContent = utc(view.finished_at);
    if (view.exit_code != null) document.getElementById("job-exit").textContent = view.exit_code;
    if (view.error) { const box = document.getElementById("job-error"); box.textContent = view.error; box.hidden = false; }
    showStats(view.stats);
  });
}

// The restore wizard: a lazily loaded tree (one folder per request), ticks,
// a target, a review, and the restore job.
function initRestore() {
  const wizard = document.getElementById("restore");
  if (!wizard) return;
  const { host, hostName, snapshot } = wizard.dataset;
  // Downloads need the operator role (they return file contents).
  const mayDownload = wizard.dataset.download === "1";
  const tree = document.getElementById("restore-tree");
  const size = (n) => n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B";

  async function load(path, list) {
    list.setAttribute("aria-busy", "true");
    try {
      const entries = await api("GET", `/api/v1/hosts/${host}/snapshots/${snapshot}/tree?path=${encodeURIComponent(path)}`);
      entries.sort((a, b) => (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) || a.name.localeCompare(b.name));
      list.replaceChildren(...entries.map(item));
      if (entries.length === 0) {
        const empty = document.createElement("li");
        empty.className = "muted small";
        empty.textContent = "(empty)";
        list.append(empty);
      }
      showError(tree, "");
    } catch (error) {
      showError(tree, `Could not list ${path}: ${error.message}`);
    } finally {
      list.removeAttribute("aria-busy");
    }
  }

  function item(entry) {
    const li = document.createElement("li");
    li.setAttribute("role", "treeitem");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = entry.path;
    box.id = "pick-" + btoa(unescape(encodeURIComponent(entry.path))).replace(/[^A-Za-z0-9]/g, "");
    const label = document.createElement("label");
    label.htmlFor = box.id;
    label.textContent = entry.name + (entry.type === "dir" ? "/" : "");
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = [entry.size != null && entry.type === "file" ? size(entry.size) : "", entry.mtime ? entry.mtime.slice(0, 16).replace("T", " ") : ""].filter(Boolean).join(" · ");
    // Straight to this browser, streamed from the agent (restic dump); a
    // folder comes as a .tar. The server names the file.
    const download = document.createElement("a");
    download.className = "download small";
    download.href = `/api/v1/hosts/${host}/snapshots/${snapshot}/download?path=${encodeURIComponent(entry.path)}`;
    download.setAttribute("download", "");
    download.setAttribute("aria-label", `Download ${entry.name}${entry.type === "dir" ? " as .tar" : ""}`);
    download.textContent = entry.type === "dir" ? "download .tar" : "download";
    if (entry.type === "dir") {
      const toggle = document.createElement("button");
      toggle.type = "button";
      toggle.className = "toggle";
      toggle.dataset.path = entry.path;
      toggle.setAttribute("aria-expanded", "false");
      toggle.setAttribute("aria-label", `Open ${entry.name}`);
      toggle.textContent = "▸";
      const children = document.createElement("ul");
      children.setAttribute("role", "group");
      children.hidden = true;
      toggle.addEventListener("click", async () => {
        const open = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", String(open));
        toggle.textContent = open ? "▾" : "▸";
        children.hidden = !open;
        if (open && !children.dataset.loaded) {
          children.dataset.loaded = "1";
          await load(entry.path, children);
        }
      });
      li.append(toggle, box, label, meta, ...(mayDownload ? [download] : []), children);
    } else {
      const spacer = document.createElement("span");
      spacer.className = "toggle";
      spacer.style.display = "inline-block";
      li.append(spacer, box, label, meta, ...(mayDownload && entry.type === "file" ? [download] : []));
    }
    return li;
  }

  const kind = () => document.querySelector('input[name="target-kind"]:checked').value;
  const picked = () => [...tree.querySelectorAll('input[type="checkbox"]:checked')].map((b) => b.value);
  function review() {
    const paths = picked();
    document.getElementById("review-paths").textContent = paths.length ? paths.join(", ") : "nothing ticked: the whole snapshot";
    const other = kind() === "host";
    document.getElementById("target-host-label").hidden = !other;
    document.getElementById("target-path-label").hidden = kind() === "original";
    const targetHost = document.getElementById("target-host");
    document.getElementById("review-host").textContent = other ? (targetHost.selectedOptions[0]?.textContent || "—") : hostName;
    document.getElementById("review-target").textContent = kind() === "original" ? "/ (the original location; existing files are overwritten)" : document.getElementById("target-path").value;
  }
  wizard.addEventListener("change", review);
  wizard.addEventListener("input", review);

  document.getElementById("restore-run").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    const other = kind() === "host";
    const target = kind() === "original" ? "/" : document.getElementById("target-path").value.trim();
    const runOn = other ? document.getElementById("target-host").value : host;
    const params = { snapshot_id: snapshot, include: picked(), target };
    if (other) params.source_host_id = host;
    button.disabled = true;
    try {
      const job = await api("POST", `/api/v1/hosts/${runOn}/jobs`, { kind: "restore", params });
      location.href = `/jobs/${job.id}`;
    } catch (error) {
      showError(button, error.message);
      button.disabled = false;
    }
  });
  review();
  load("/", tree);
}

// The number of firing alerts on the navigation's "Alerts" link (one
// aggregate query on the server; nothing shown when none fire).
async function showFiring() {
  const badge = document.getElementById("nav-alerts-count");
  if (!badge) return;
  try {
    const response = await fetch("/alerts/firing", { credentials: "same-origin" });
    if (!response.ok) return;
    const { firing } = await response.json();
    badge.textContent = String(firing);
    badge.hidden = !(firing > 0);
  } catch (_) { /* the badge is a convenience: the alerts page has the truth */ }
}

document.addEventListener("DOMContentLoaded", () => { showFiring(); followFleet(); followJob(); initRestore(); initKindFields(); });
