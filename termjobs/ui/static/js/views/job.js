// One job: its definition (readable and as JSON), its runs, and the actions Trigger,
// Pause/Resume, Edit and Delete. Follows the job's events live.

import { ApiError, seg } from "../api.js";
import { cell, h, fill, props } from "../dom.js";
import { ACTIVE, enabledBadge, jobZone, runDuration, statusBadge, tickRelative, timeEl, triggerEl } from "../format.js";
import { EventStream, liveIndicator } from "../stream.js";

const RUNS_PAGE = 20;

export async function jobView(ctx, ref) {
  let job = await ctx.api.get(`/v2/jobs/${seg(ref)}`, undefined, { signal: ctx.signal });
  ctx.title(job.name);
  const live = liveIndicator();
  const head = h("div", { class: "page-head" });
  const problem = h("p", { class: "form-error", role: "alert", hidden: true });
  const definition = h("section", { "aria-labelledby": "definition-title" });
  const runsBody = h("tbody");
  const runsPager = h("div", { class: "pager" });
  const runsSummary = h("p", { class: "muted" });
  let runsPage = 1;
  const dialog = h("dialog", { "aria-labelledby": "delete-title" });

  fill(
    ctx.main,
    head,
    problem,
    definition,
    h(
      "section",
      { "aria-labelledby": "runs-title" },
      h("h2", { id: "runs-title" }, "Runs"),
      runsSummary,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "cards" },
          h(
            "thead",
            {},
            h("tr", {}, ["Run", "Status", "Trigger", "Attempt", "Started", "Duration", "Exit code"].map((t) => h("th", { scope: "col" }, t))),
          ),
          runsBody,
        ),
      ),
      runsPager,
    ),
    dialog,
  );

  function showProblem(error) {
    if (error.name === "AbortError") return;
    problem.hidden = false;
    problem.textContent = error.message;
  }

  async function act(button, action) {
    problem.hidden = true;
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      showProblem(error);
    } finally {
      button.disabled = false;
    }
  }

  const shown = { enabled: null, name: null, toggle: null };
  function renderHead() {
    shown.enabled = job.enabled;
    shown.name = job.name;
    const trigger = h("button", { type: "button", class: "primary" }, "Trigger");
    trigger.addEventListener("click", () =>
      act(trigger, async () => {
        const run = await ctx.api.post(`/v2/jobs/${seg(job.id)}/trigger`, undefined, { signal: ctx.signal });
        ctx.navigate(`#/runs/${seg(run.id)}`);
      }),
    );
    const toggle = h("button", { type: "button" }, job.enabled ? "Pause" : "Resume");
    toggle.addEventListener("click", () =>
      act(toggle, async () => {
        job = await ctx.api.post(`/v2/jobs/${seg(job.id)}/${job.enabled ? "pause" : "resume"}`, undefined, { signal: ctx.signal });
        renderHead();
        renderDefinition();
        shown.toggle.focus();
      }),
    );
    shown.toggle = toggle;
    const remove = h("button", { type: "button", class: "danger" }, "Delete");
    remove.addEventListener("click", () => act(remove, () => confirmDelete()));
    fill(
      head,
      h(
        "div",
        {},
        h("h1", {}, job.name),
        h("p", { class: "lede" }, enabledBadge(job.enabled), " · ", triggerEl(job), " · ", live.el),
      ),
      h("div", { class: "actions" }, trigger, toggle, h("a", { class: "button", href: `#/jobs/${seg(job.id)}/edit` }, "Edit"), remove),
    );
  }

  function renderDefinition() {
    const config = job.runner_config ?? {};
    const retry = job.retry_policy;
    fill(
      definition,
      h("h2", { id: "definition-title" }, "Definition"),
      props([
        ["Id", h("code", {}, job.id)],
        ["Trigger", triggerEl(job)],
        ["Time zone", job.trigger_type === "manual" ? "" : jobZone(job)],
        ["Next run", job.next_run_at ? timeEl(job.next_run_at, { zone: jobZone(job) }) : job.enabled ? "none scheduled" : "none (paused)"],
        ["Runner", job.runner_type],
        ["Command", job.runner_type === "program" ? h("code", {}, [config.command, ...(config.args ?? [])].join(" ")) : ""],
        ["Shell", config.shell ? "yes (/bin/sh -c)" : ""],
        ["Working directory", config.cwd ? h("code", {}, config.cwd) : ""],
        ["Agent", job.runner_type === "llm" ? config.agent_name : ""],
        ["Timeout", `${job.timeout_seconds} s`],
        ["Retries", retry ? `up to ${retry.max_attempts ?? 1} attempts, ${retry.backoff ?? "fixed"} backoff from ${retry.initial_delay ?? "10s"}` : "none"],
        ["Concurrency", `${job.concurrency_policy}${job.concurrency_policy === "forbid" ? "" : `, at most ${job.max_concurrent_runs}`}`],
        ["Misfires", `${job.misfire_policy} after ${job.misfire_grace_seconds} s`],
        ["Labels", job.labels ? Object.entries(job.labels).map(([k, v]) => `${k}=${v}`).join(", ") : ""],
        ["Created", timeEl(job.created_at, { withRelative: false })],
        ["Updated", timeEl(job.updated_at, { withRelative: false })],
      ]),
      h(
        "details",
        { class: "json" },
        h("summary", {}, "Definition as JSON"),
        h("pre", { class: "json", tabindex: "0" }, JSON.stringify(withoutState(job), null, 2)),
      ),
    );
  }

  async function loadRuns() {
    const list = await ctx.api.get(
      "/v2/runs",
      { job_id: job.id, summary: "1", limit: String(RUNS_PAGE), offset: String((runsPage - 1) * RUNS_PAGE) },
      { signal: ctx.signal },
    );
    fill(
      runsBody,
      list.data.map((run) =>
        h(
          "tr",
          { dataset: { runId: run.id } },
          cell("Run", h("a", { href: `#/runs/${seg(run.id)}`, class: "mono" }, run.id)),
          cell("Status", statusBadge(run.status)),
          cell("Trigger", run.trigger),
          cell("Attempt", String(run.attempt)),
          cell("Started", timeEl(run.started_at)),
          cell("Duration", runDuration(run) || "—"),
          cell("Exit code", run.exit_code ?? "—"),
        ),
      ),
    );
    if (!list.data.length) runsBody.append(h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No runs yet.")));
    runsSummary.textContent = `${list.total.toLocaleString()} run${list.total === 1 ? "" : "s"}, newest first`;
    const pages = Math.max(1, Math.ceil(list.total / RUNS_PAGE));
    const go = (page) => {
      runsPage = page;
      loadRuns().catch(ctx.report);
    };
    fill(
      runsPager,
      h("button", { type: "button", disabled: runsPage <= 1, onclick: () => go(runsPage - 1) }, "‹ Newer runs"),
      h("span", { class: "muted" }, `Page ${runsPage} of ${pages}`),
      h("button", { type: "button", disabled: runsPage >= pages, onclick: () => go(runsPage + 1) }, "Older runs ›"),
    );
  }

  async function confirmDelete() {
    const active = await ctx.api.get("/v2/runs", { job_id: job.id, status: ACTIVE.join(","), summary: "1", limit: "1" }, { signal: ctx.signal });
    const cancelActive = h("input", { type: "checkbox", id: "delete-cancel-active" });
    const dialogProblem = h("p", { class: "form-error", role: "alert", hidden: true });
    const confirm = h("button", { type: "button", class: "danger solid" }, "Delete");
    const keep = h("button", { type: "button" }, "Keep job");
    fill(
      dialog,
      h("h2", { id: "delete-title" }, `Delete job “${job.name}”?`),
      h("p", {}, "The job, all its runs and their output are deleted. This cannot be undone."),
      active.total
        ? h(
            "div",
            { class: "check" },
            cancelActive,
            h("label", { for: "delete-cancel-active" }, `Cancel its ${active.total} active run${active.total === 1 ? "" : "s"} first`),
          )
        : null,
      dialogProblem,
      h("div", { class: "actions" }, confirm, keep),
    );
    keep.addEventListener("click", () => dialog.close());
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      try {
        await ctx.api.delete(`/v2/jobs/${seg(job.id)}`, cancelActive.checked ? { cancel_active: "true" } : undefined, { signal: ctx.signal });
        dialog.close();
        ctx.navigate("#/", `Deleted job “${job.name}”.`);
      } catch (error) {
        dialogProblem.hidden = false;
        dialogProblem.textContent = error.message;
        confirm.disabled = false;
      }
    });
    dialog.showModal();
    keep.focus();
  }

  renderHead();
  renderDefinition();
  await loadRuns();

  // Live: any event of this job's runs refreshes the runs and the job (last, next run).
  let pending = null;
  const refresh = () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      try {
        job = await ctx.api.get(`/v2/jobs/${seg(job.id)}`, undefined, { signal: ctx.signal });
        if (!dialog.open && (job.enabled !== shown.enabled || job.name !== shown.name)) renderHead();
        renderDefinition();
        await loadRuns();
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) ctx.report(error);
      }
    }, 150);
  };
  const stream = new EventStream({
    path: "/v2/events/stream",
    params: { job_id: job.id },
    token: ctx.session.token,
    resume: false,
    onEvent: (event) => {
      if (event.event_type !== "output") refresh();
    },
    onState: (state) => live.set(state),
    onUnauthorized: ctx.expired,
  });
  stream.open();
  const ticker = setInterval(() => tickRelative(ctx.main), 15000);
  ctx.onLeave(() => {
    stream.close();
    clearTimeout(pending);
    clearInterval(ticker);
    if (dialog.open) dialog.close();
  });
}

/** The definition without the server's schedule state. */
function withoutState(job) {
  const { id, created_at, updated_at, next_run_at, last_run, ...definition } = job;
  return definition;
}
