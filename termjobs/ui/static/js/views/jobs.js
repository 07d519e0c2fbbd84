// Every job: trigger in words, enabled, last and next run; search, filters, pages; rows
// follow the firehose, so a run starting or finishing shows without a reload.

import { ApiError, seg } from "../api.js";
import { cell, h, fill, uid } from "../dom.js";
import { enabledBadge, runDuration, statusBadge, tickRelative, timeEl, triggerEl } from "../format.js";
import { EventStream, liveIndicator } from "../stream.js";

const PAGE = 50;
/** Run events that change a job's row (its last run or next run). */
const ROW_EVENTS = new Set(["queued", "running", "cancel_requested", "succeeded", "failed", "timed_out", "cancelled", "skipped"]);

export async function jobsView(ctx) {
  ctx.title("Jobs");
  const state = {
    name: ctx.query.get("name") ?? "",
    enabled: ctx.query.get("enabled") ?? "",
    trigger_type: ctx.query.get("trigger_type") ?? "",
    label: ctx.query.get("label") ?? "",
    page: Math.max(1, Number.parseInt(ctx.query.get("page") ?? "1", 10) || 1),
  };
  const live = liveIndicator();
  const body = h("tbody");
  const summary = h("p", { class: "muted", role: "status" });
  const pager = h("div", { class: "pager" });
  const labelError = h("p", { class: "field-error", id: uid("label-error") });
  const filters = filterForm(state, labelError, () => {
    state.page = 1;
    refresh();
  });
  const table = h(
    "table",
    { class: "cards" },
    h(
      "thead",
      {},
      h("tr", {}, ["Name", "Trigger", "State", "Last run", "Next run"].map((title) => h("th", { scope: "col" }, title))),
    ),
    body,
  );
  fill(
    ctx.main,
    h(
      "div",
      { class: "page-head" },
      h("div", {}, h("h1", {}, "Jobs"), live.el),
      h("div", { class: "actions" }, h("a", { class: "button primary", href: "#/jobs/new" }, "New job")),
    ),
    filters,
    summary,
    h("div", { class: "table-wrap" }, table),
    pager,
  );

  const rows = new Map(); // job id -> <tr>
  let loading = null;

  const refresh = () => reload().catch((error) => ctx.report(error));

  async function reload() {
    const query = { limit: String(PAGE), offset: String((state.page - 1) * PAGE) };
    for (const key of ["name", "enabled", "trigger_type", "label"]) if (state[key]) query[key] = state[key];
    const address = new URLSearchParams(hashQuery(state)).toString();
    history.replaceState(null, "", address ? `#/jobs?${address}` : "#/");
    const request = ctx.api.get("/v2/jobs", query, { signal: ctx.signal });
    loading = request;
    let list;
    try {
      list = await request;
      labelError.textContent = "";
      filters.label.removeAttribute("aria-invalid");
    } catch (error) {
      if (error instanceof ApiError && error.status === 400 && /^label\b/.test(error.message)) {
        labelError.textContent = error.message;
        filters.label.setAttribute("aria-invalid", "true");
        return;
      }
      throw error;
    }
    if (loading !== request) return; // a newer reload is under way
    rows.clear();
    fill(body, list.data.map((job) => row(job)));
    if (!list.data.length) {
      body.append(h("tr", {}, h("td", { colspan: "5", class: "muted" }, list.total ? "No jobs on this page." : "No jobs match.")));
    }
    const first = list.total ? list.offset + 1 : 0;
    const last = list.offset + list.data.length;
    summary.textContent = `${first}–${last} of ${list.total.toLocaleString()} job${list.total === 1 ? "" : "s"}`;
    renderPager(list);
  }

  function row(job) {
    const last = job.last_run;
    const tr = h(
      "tr",
      { dataset: { jobId: job.id } },
      cell("Name", h("a", { href: `#/jobs/${seg(job.id)}` }, job.name), "name"),
      cell("Trigger", triggerEl(job)),
      cell("State", enabledBadge(job.enabled)),
      cell(
        "Last run",
        last
          ? [
              h("a", { href: `#/runs/${seg(last.id)}`, "aria-label": `last run: ${last.status}` }, statusBadge(last.status)),
              h("span", { class: "sub" }, timeEl(last.started_at ?? last.created_at), runDuration(last) ? ` · ${last.finished_at ? "took" : "for"} ${runDuration(last)}` : ""),
            ]
          : h("span", { class: "muted" }, "never"),
        "last-run",
      ),
      cell("Next run", job.next_run_at ? timeEl(job.next_run_at) : h("span", { class: "muted" }, "—"), "next-run"),
    );
    rows.set(job.id, tr);
    return tr;
  }

  function renderPager(list) {
    const pages = Math.max(1, Math.ceil(list.total / PAGE));
    const go = (page) => {
      state.page = page;
      refresh();
    };
    fill(
      pager,
      h("button", { type: "button", disabled: state.page <= 1, onclick: () => go(state.page - 1) }, "‹ Previous page"),
      h("span", { class: "muted" }, `Page ${state.page} of ${pages}`),
      h("button", { type: "button", disabled: state.page >= pages, onclick: () => go(state.page + 1) }, "Next page ›"),
    );
  }

  // One refresh per job at a time; events arriving meanwhile ask for one more.
  const refreshing = new Map();
  async function refreshRow(jobId) {
    if (refreshing.has(jobId)) {
      refreshing.set(jobId, true);
      return;
    }
    refreshing.set(jobId, false);
    try {
      const job = await ctx.api.get(`/v2/jobs/${seg(jobId)}`, undefined, { signal: ctx.signal });
      rows.get(jobId)?.replaceWith(row(job));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) rows.get(jobId)?.remove();
    } finally {
      const again = refreshing.get(jobId);
      refreshing.delete(jobId);
      if (again && !ctx.signal.aborted) refreshRow(jobId);
    }
  }

  const stream = new EventStream({
    path: "/v2/events/stream",
    token: ctx.session.token,
    resume: false,
    onEvent: (event) => {
      if (ROW_EVENTS.has(event.event_type) && rows.has(event.job_id)) refreshRow(event.job_id);
    },
    onState: (value) => {
      live.set(value);
      if (value === "live" && opened) refresh(); // back after a drop: catch up
      if (value === "live") opened = true;
    },
    onUnauthorized: ctx.expired,
  });
  let opened = false;
  ctx.onLeave(() => stream.close());
  const ticker = setInterval(() => tickRelative(body), 15000);
  ctx.onLeave(() => clearInterval(ticker));

  await reload();
  stream.open();
}

function hashQuery(state) {
  const query = {};
  for (const key of ["name", "enabled", "trigger_type", "label"]) if (state[key]) query[key] = state[key];
  if (state.page > 1) query.page = String(state.page);
  return query;
}

function filterForm(state, labelError, changed) {
  const ids = { name: uid("f-name"), enabled: uid("f-enabled"), trigger: uid("f-trigger"), label: uid("f-label") };
  const name = h("input", { id: ids.name, type: "search", value: state.name, placeholder: "name contains…", autocomplete: "off" });
  const enabled = h(
    "select",
    { id: ids.enabled },
    h("option", { value: "" }, "any"),
    h("option", { value: "true" }, "enabled"),
    h("option", { value: "false" }, "paused"),
  );
  enabled.value = state.enabled;
  const trigger = h(
    "select",
    { id: ids.trigger },
    ["", "cron", "once", "manual"].map((value) => h("option", { value }, value || "any")),
  );
  trigger.value = state.trigger_type;
  const label = h("input", {
    id: ids.label,
    type: "text",
    value: state.label,
    placeholder: "key=value",
    autocomplete: "off",
    "aria-describedby": labelError.id,
  });
  let timer = null;
  const update = (delay) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.name = name.value.trim();
      state.enabled = enabled.value;
      state.trigger_type = trigger.value;
      state.label = label.value.trim();
      changed();
    }, delay);
  };
  name.addEventListener("input", () => update(250));
  label.addEventListener("input", () => update(400));
  enabled.addEventListener("change", () => update(0));
  trigger.addEventListener("change", () => update(0));
  const form = h(
    "form",
    { class: "filters", role: "search", onsubmit: (event) => event.preventDefault() },
    h("div", { class: "field" }, h("label", { for: ids.name }, "Search by name"), name),
    h("div", { class: "field" }, h("label", { for: ids.enabled }, "Enabled"), enabled),
    h("div", { class: "field" }, h("label", { for: ids.trigger }, "Trigger type"), trigger),
    h("div", { class: "field" }, h("label", { for: ids.label }, "Label"), label, labelError),
  );
  form.label = label;
  return form;
}
